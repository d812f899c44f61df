# Trains a marunochi adapter with TRL on this directory's data, with the hyper-parameters of
# marunochi's own trainer (written by `marunochi curate --for trl`). One GPU:
#     python train.py
# Several GPUs or machines (edit accelerate.yaml first: num_processes, num_machines, ...):
#     accelerate launch --config_file accelerate.yaml train.py
# Then bring the adapter home: marunochi adapters import adapter --language {{LANGUAGE}}
import argparse
import json
import os

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = json.loads("""{{SETTINGS}}""")

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", default=SETTINGS["base_model"], help="the base model: a Hugging Face id or directory")
parser.add_argument("--out", default=os.path.join(HERE, "adapter"), help="where the adapter is saved")
parser.add_argument("--max-steps", type=int, default=-1, help="stop each stage after this many updates")
parser.add_argument("--cpu", action="store_true", help="train on the CPU (a smoke test; slow)")
args = parser.parse_args()

bf16 = not args.cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
common = dict(
    per_device_train_batch_size=SETTINGS["batch"],
    num_train_epochs=SETTINGS["epochs"],
    max_steps=args.max_steps,
    lr_scheduler_type="cosine",
    warmup_steps=SETTINGS["warmup_ratio"],
    weight_decay=SETTINGS["weight_decay"],
    max_grad_norm=SETTINGS["max_grad_norm"],
    gradient_checkpointing=SETTINGS["gradient_checkpointing"],
    max_length=SETTINGS["max_prompt_tokens"] + SETTINGS["max_target_tokens"],
    seed=SETTINGS["seed"],
    bf16=bf16,
    use_cpu=args.cpu,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
)

tokenizer = AutoTokenizer.from_pretrained(args.model)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
load = dict(dtype=torch.bfloat16 if bf16 else torch.float32)
if SETTINGS["qlora"] and not args.cpu:
    from transformers import BitsAndBytesConfig

    load["quantization_config"] = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=load["dtype"]
    )
model = AutoModelForCausalLM.from_pretrained(args.model, **load)
lora = LoraConfig(
    r=SETTINGS["rank"],
    lora_alpha=SETTINGS["alpha"],
    lora_dropout=SETTINGS["dropout"],
    target_modules=SETTINGS["target_modules"],
    bias="none",
    task_type="CAUSAL_LM",
)


def data(name):
    path = os.path.join(HERE, name)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    return load_dataset("json", data_files=path, split="train")


# SFT on the code you kept: the loss on the completion only, as marunochi trains it.
sft = SFTTrainer(
    model=model,
    args=SFTConfig(
        output_dir=os.path.join(args.out, "sft"),
        learning_rate=SETTINGS["lr"],
        completion_only_loss=True,
        **common,
    ),
    train_dataset=data("sft.jsonl"),
    processing_class=tokenizer,
    peft_config=lora,
)
sft.train()
model = sft.model

# The preference stages marunochi runs after SFT, on the same adapter and with the same bars.
kto = data("kto.jsonl")
if SETTINGS["preference"] and kto is not None:
    labels = kto["label"]
    if sum(labels) >= 4 and len(labels) - sum(labels) >= 4:
        trainer = KTOTrainer(
            model=model,
            args=KTOConfig(
                output_dir=os.path.join(args.out, "kto"),
                learning_rate=SETTINGS["preference_lr"],
                beta=SETTINGS["beta"],
                **common,
            ),
            train_dataset=kto,
            processing_class=tokenizer,
        )
        trainer.train()
        model = trainer.model
dpo = data("dpo.jsonl")
if SETTINGS["preference"] and dpo is not None and len(dpo) >= 2:
    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(
            output_dir=os.path.join(args.out, "dpo"),
            learning_rate=SETTINGS["preference_lr"],
            beta=SETTINGS["beta"],
            **common,
        ),
        train_dataset=dpo,
        processing_class=tokenizer,
    )
    trainer.train()
    model = trainer.model

model.save_pretrained(args.out, safe_serialization=True)
print(f"adapter saved to {args.out}: marunochi adapters import {args.out} --language {SETTINGS['language']}")
