"""PEFT's side of the adapter interop check (scripts/interop.sh): loads MODEL with transformers
and the adapter in ADAPTER_DIR with peft, computes the next-token logits after TOKENS without and
with it, and compares them with ours (the JSON `interop_logits` printed, on stdin).
Prints one line per comparison; exits 1 when any differs by more than 1e-4."""
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

model_dir, adapter_dir, tokens, what = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
ours = json.load(sys.stdin)
ids = torch.tensor([[int(t) for t in tokens.split(",")]])
base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
base.eval()
with torch.no_grad():
    base_logits = base(ids).logits[0, -1]
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    adapted_logits = model(ids).logits[0, -1]
ok = True
for name, theirs in (("base", base_logits), ("adapted", adapted_logits)):
    diff = (torch.tensor(ours[name]) - theirs).abs().max().item()
    ok &= diff <= 1e-4
    print(f"{what}: {name} logits, max |ours - peft| = {diff:.2e} ({'ok' if diff <= 1e-4 else 'FAIL'})")
shift = (adapted_logits - base_logits).abs().max().item()
print(f"{what}: the adapter moves the logits by up to {shift:.3f}")
ok &= shift > 1e-3
sys.exit(0 if ok else 1)
