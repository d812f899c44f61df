"""A Qwen2.5-Coder-0.5B-shaped Qwen2 with random weights, as Q8_0 GGUF (the fixture generator's
code at real size), for timing the engine on the GPU machine."""
import sys
import time
from pathlib import Path

sys.path.insert(0, "fixtures")
import models  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402

models.check_gguf = lambda *args: None  # the tiny fixtures are checked in CI; here only speed matters
cfg = dict(models.QWEN2, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
           num_attention_heads=14, num_key_value_heads=2, max_window_layers=24)
start = time.time()
weights = models.random_weights(cfg, seed=5, qkv_bias=True)
models.write_gguf(Path(sys.argv[1]), "qwen2", cfg, weights, Q.Q8_0, Path(".gpu/qwen2.5-tokenizer"))
print(f"made {sys.argv[1]} in {time.time() - start:.1f}s", flush=True)
