"""Benchmark `assay finetune`: tokens/s against a plain transformers Trainer + peft script, and learning
on SmolLM2-135M-Instruct.

    .venv/bin/python bench/finetune.py speed --model smollm2-135m-instruct --steps 6 --rounds 1
    .venv/bin/python bench/finetune.py learn --train 200 --test 40 --epochs 2

speed: the same examples (short Alpaca records from ../shared/data, one pass), the same LoRA settings
(r=16, alpha=32, dropout 0.05, all linear projections), batch size, learning-rate schedule, fp32 and
assistant-only labels, in three arms, each in its own process (so peak RSS is its own), interleaved
over rounds: (1) a plain `Trainer` + peft with `DataCollatorForSeq2Seq` padding, (2) Assay without
packing, (3) Assay with packing. Tokens/s counts real (non-padding) tokens over the training loop only.

learn: a key=value -> JSON format conversion SmolLM2 cannot do out of the box; exact match of greedy
answers on held-out items before and after a LoRA fine-tune, and the training time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ASSAY_EXTERNAL_DATA", ROOT.parent / "shared" / "data"))
ALPACA = DATA / "instructions" / "llamafactory_alpaca_en_demo.json"
SETTINGS = {"learning_rate": 2e-4, "lr_scheduler": "cosine", "warmup_ratio": 0.03, "seed": 0,
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}}


# --- speed ------------------------------------------------------------------------------------------

def short_records(model: str, count: int, max_tokens: int, seed: int) -> list[dict]:
    """Alpaca records whose rendered conversation fits in max_tokens, shuffled with a seed."""
    from transformers import AutoTokenizer

    from assay.training.data import load_records
    from assay.training.models import local_model_path

    tokenizer = AutoTokenizer.from_pretrained(local_model_path(model))
    records = load_records(ALPACA).records
    random.Random(seed).shuffle(records)
    chosen = []
    for record in records:
        text = tokenizer.apply_chat_template(record["messages"], tokenize=False)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens:
            chosen.append(record)
        if len(chosen) == count:
            return chosen
    raise SystemExit(f"only {len(chosen)} records of at most {max_tokens} tokens in {ALPACA}")


def arm_trainer(model: str, data: Path, batch: int, steps: int, max_len: int) -> dict:
    """The baseline a user would write: Trainer + peft, padding collator, the same labels."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from assay.training.data import IGNORE, encode_records, load_records
    from assay.training.models import local_model_path

    path = local_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoded = encode_records(load_records(data).records, tokenizer, max_len).examples
    # Unshift our targets into the labels convention the Trainer's models expect.
    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e),
             "labels": [IGNORE] + [t if t != IGNORE else IGNORE for t in e.targets[:-1]]} for e in encoded]
    torch.manual_seed(0)
    lora = SETTINGS["lora"]
    net = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                         LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                    target_modules=lora["target_modules"], task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=SETTINGS["learning_rate"], lr_scheduler_type="cosine",
                             warmup_steps=math.ceil(SETTINGS["warmup_ratio"] * steps), logging_steps=1, save_strategy="no",
                             report_to=[], use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=net, args=args, train_dataset=rows,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE))
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    tokens = sum(len(r["input_ids"]) for r in rows[:steps * batch])
    return {"seconds": seconds, "tokens": tokens, "loss": result.training_loss}


def arm_assay(model: str, data: Path, batch: int, steps: int, max_len: int, packing: bool) -> dict:
    from assay.schemas.training import FineTuneSpec
    from assay.training import finetune

    spec = FineTuneSpec.model_validate(dict(SETTINGS, model=model, batch_size=batch, max_steps=steps,
                                            max_seq_len=max_len, packing=packing, val_split=0.0,
                                            eval_before_training=False, save_every=steps + 1))
    report = finetune(spec, data, Path(tempfile.mkdtemp()) / "out")
    mean_loss = statistics.fmean(p.value for p in report.train_loss)
    return {"seconds": report.seconds, "tokens": report.tokens_trained, "loss": mean_loss}


def run_arm(args: argparse.Namespace) -> None:
    if args.arm == "trainer":
        result = arm_trainer(args.model, Path(args.data), args.batch_size, args.steps, args.max_len)
    else:
        result = arm_assay(args.model, Path(args.data), args.batch_size, args.steps, args.max_len,
                           packing=args.arm == "assay-packed")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def speed(args: argparse.Namespace) -> None:
    records = short_records(args.model, args.steps * args.batch_size, args.max_len, seed=1)
    folder = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    data = folder / "short.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    lengths = [len(json.dumps(r)) for r in records]
    print(f"{len(records)} Alpaca records (<= {args.max_len} tokens, mean {statistics.fmean(lengths):.0f} chars), "
          f"model {args.model}, batch {args.batch_size}, {args.steps} steps, torch threads "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}, load average {os.getloadavg()[0]:.1f}")
    arms = ["trainer", "assay", "assay-packed"]
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    for round_ in range(args.rounds):
        for arm in arms:
            command = [sys.executable, __file__, "arm", "--arm", arm, "--model", args.model, "--data", str(data),
                       "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--max-len", str(args.max_len)]
            output = subprocess.run(command, capture_output=True, text=True, check=False)
            line = next((x for x in output.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{arm} failed:\n{output.stderr[-2000:]}")
            result = json.loads(line[7:])
            results[arm].append(result)
            print(f"round {round_ + 1} {arm:13s} {result['tokens'] / result['seconds']:8.1f} tokens/s "
                  f"({result['seconds']:.1f} s, mean loss {result['loss']:.4f}, peak RSS {result['peak_rss_mb']:.0f} MB)",
                  flush=True)
    base = statistics.median(r["tokens"] / r["seconds"] for r in results["trainer"])
    print("\n| arm | tokens/s (median) | ratio vs Trainer | seconds | peak RSS MB |\n|---|---|---|---|---|")
    for arm in arms:
        rate = statistics.median(r["tokens"] / r["seconds"] for r in results[arm])
        secs = statistics.median(r["seconds"] for r in results[arm])
        rss = max(r["peak_rss_mb"] for r in results[arm])
        print(f"| {arm} | {rate:.1f} | {rate / base:.2f} | {secs:.1f} | {rss:.0f} |")


# --- learning -----------------------------------------------------------------------------------------

NAMES = ["Ada", "Bram", "Chen", "Dara", "Elif", "Femi", "Goran", "Hana", "Ivo", "Juno", "Kofi", "Lena", "Mika",
         "Nour", "Omar", "Pia", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Vik", "Wen", "Yara", "Zeno"]
CITIES = ["Paris", "Lagos", "Lima", "Oslo", "Pune", "Quito", "Rome", "Seoul", "Tunis", "Vienna", "Kyoto", "Accra"]


def conversion_records(count: int, seed: int) -> list[dict]:
    """'name=Ada; age=36; city=Lima' -> '{"name": "Ada", "age": 36, "city": "Lima"}' in the given key order."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        fields = [("name", rng.choice(NAMES)), ("age", rng.randint(18, 90)), ("city", rng.choice(CITIES))]
        rng.shuffle(fields)
        source = "; ".join(f"{k}={v}" for k, v in fields)
        target = json.dumps(dict(fields))
        records.append({"messages": [
            {"role": "user", "content": f"Convert to a JSON object: {source}"},
            {"role": "assistant", "content": target}]})
    return records


def exact_match(model: str, adapter: Path | None, records: list[dict]) -> tuple[float, list[str]]:
    from assay.training.generate import generate, load_for_inference

    loaded = load_for_inference(model, adapter)
    answers: list[str] = []
    for start in range(0, len(records), 20):
        chunk = records[start:start + 20]
        answers += generate(loaded, [r["messages"][0]["content"] for r in chunk], max_new_tokens=32)
    hits = sum(a == r["messages"][1]["content"] for a, r in zip(answers, records, strict=True))
    return hits / len(records), answers


def learn(args: argparse.Namespace) -> None:
    from assay.schemas.training import FineTuneSpec
    from assay.training import finetune

    folder = Path(tempfile.mkdtemp(prefix="bench-learn-"))
    train, test = conversion_records(args.train, seed=1), conversion_records(args.test, seed=2)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    print(f"load average {os.getloadavg()[0]:.1f}; {args.train} training and {args.test} held-out items", flush=True)
    started = time.perf_counter()
    before, answers = exact_match(args.model, None, test)
    print(f"base exact match {before:.3f} ({time.perf_counter() - started:.0f} s); e.g. {answers[0]!r}", flush=True)
    spec = FineTuneSpec(model=args.model, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                        max_seq_len=128, packing=True, val_split=0.0, eval_before_training=False, seed=0)
    report = finetune(spec, folder / "train.jsonl", folder / "out")
    print(f"trained {report.steps} steps in {report.seconds:.0f} s ({report.tokens_per_s:.0f} tokens/s), "
          f"loss {report.train_loss[0].value:.3f} -> {report.train_loss[-1].value:.3f}", flush=True)
    after, answers = exact_match(args.model, folder / "out" / "adapter", test)
    print(f"tuned exact match {after:.3f}; e.g. {answers[0]!r}")
    print(f"\n| model | items | exact match before | after | training steps | training time | tokens/s |\n"
          f"|---|---|---|---|---|---|---|\n| {args.model} | {args.test} held out | {before:.3f} | {after:.3f} | "
          f"{report.steps} ({args.epochs} epochs x {args.train}) | {report.seconds:.0f} s | {report.tokens_per_s:.0f} |")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--model", default="smollm2-135m-instruct")
    s.add_argument("--steps", type=int, default=6)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--max-len", type=int, default=256)
    s.add_argument("--rounds", type=int, default=1)
    a = sub.add_parser("arm")
    a.add_argument("--arm", choices=["trainer", "assay", "assay-packed"], required=True)
    a.add_argument("--model", required=True)
    a.add_argument("--data", required=True)
    a.add_argument("--batch-size", type=int, required=True)
    a.add_argument("--steps", type=int, required=True)
    a.add_argument("--max-len", type=int, required=True)
    learn_parser = sub.add_parser("learn")
    learn_parser.add_argument("--model", default="smollm2-135m-instruct")
    learn_parser.add_argument("--train", type=int, default=200)
    learn_parser.add_argument("--test", type=int, default=40)
    learn_parser.add_argument("--epochs", type=int, default=2)
    learn_parser.add_argument("--lr", type=float, default=1e-3)
    learn_parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    {"speed": speed, "arm": run_arm, "learn": learn}[args.command](args)


if __name__ == "__main__":
    main()
