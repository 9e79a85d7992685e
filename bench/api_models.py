"""Fine-tuning and chat through the service (`bench/api.py models` runs this).

1. The overhead of a small fine-tune through the API against `assay finetune` on the same data and settings,
   both measured in this run: wall time from upload (API) or command start (CLI) to a usable adapter.
2. Chat completions per second on the base model through the service (`/v1/chat/completions`, the service's
   inference engine, `concurrency` clients), and on the fine-tuned model just made.

    PYTHONPATH=. .venv/bin/python bench/api_models.py [--model smollm2-135m-instruct] [--records 200]
        [--max-steps 20] [--requests 32] [--concurrency 8] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from assay.api.testing import ServerProcess, upload, wait_for_job

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ASSAY_EXTERNAL_DATA", ROOT.parent / "shared" / "data"))


def _training_data(path: Path, records: int) -> Path:
    source = DATA / "instructions" / "llamafactory_alpaca_en_demo.json"
    if not source.is_file():
        sys.exit(f"needs {source} (set ASSAY_EXTERNAL_DATA)")
    rows = json.loads(source.read_text(encoding="utf-8"))[:records]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"max_steps": args.max_steps, "batch_size": 4, "max_seq_len": 256, "val_split": 0.1,
            "eval_before_training": False, "seed": 1}


def _cli_finetune(args: argparse.Namespace, data: Path, out: Path) -> float:
    settings = _settings(args)
    command = [sys.executable, "-m", "assay", "finetune", str(data), "--out", str(out), "--model", args.model,
               "--max-steps", str(settings["max_steps"]), "--batch-size", "4", "--max-seq-len", "256",
               "--val-split", "0.1", "--seed", "1", "--set", "eval_before_training=false", "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - started


def _api_finetune(args: argparse.Namespace, client: httpx.Client, data: Path) -> tuple[float, str]:
    started = time.perf_counter()
    file_id = upload(client, data, purpose="fine-tune")["id"]
    job = client.post("/v1/fine_tuning/jobs", json={"model": args.model, "training_file": file_id, "seed": 1,
                                                    "settings": {k: v for k, v in _settings(args).items()
                                                                 if k != "seed"}}).json()
    done = wait_for_job(client, job["id"], ("succeeded", "failed"), jobs_path="/v1/fine_tuning/jobs", timeout=7200)
    if done["status"] != "succeeded":
        sys.exit(f"fine-tuning job failed: {done['error']}")
    return time.perf_counter() - started, str(done["fine_tuned_model"])


async def _chat_rate(url: str, model: str, requests: int, concurrency: int, max_tokens: int) -> tuple[float, float]:
    """(completions/s, generated tokens/s) with `concurrency` clients sending `requests` chats in all."""
    done = 0
    tokens = 0
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await client.post("/v1/chat/completions", json={"model": model, "max_tokens": 2, "messages": [
            {"role": "user", "content": "warm up"}]})  # loads the model (and adapter) outside the timing
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)

        async def worker() -> None:
            nonlocal done, tokens
            while not queue.empty():
                i = queue.get_nowait()
                reply = await client.post("/v1/chat/completions", json={
                    "model": model, "max_tokens": max_tokens, "temperature": 0,
                    "messages": [{"role": "user", "content": f"Give me tip number {i} for writing clear code."}]})
                reply.raise_for_status()
                tokens += reply.json()["usage"]["completion_tokens"]
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return done / elapsed, tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = _training_data(root / "train.jsonl", args.records)
        cli_s = _cli_finetune(args, data, root / "cli-run")
        env = {"ASSAY_RATE_LIMIT": "0", "ASSAY_MODELS": args.model}
        with ServerProcess(root / "data", workers=1, env=env) as server, \
                httpx.Client(base_url=server.url, timeout=120) as client:
            api_s, tuned = _api_finetune(args, client, data)
            base_rate = asyncio.run(_chat_rate(server.url, args.model, args.requests, args.concurrency,
                                               args.max_tokens))
            tuned_rate = asyncio.run(_chat_rate(server.url, tuned, args.requests, args.concurrency, args.max_tokens))
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after")
    print(f"fine-tune: {args.model}, {args.records} Alpaca demo records, {args.max_steps} steps, batch 4, "
          "max_seq_len 256\n")
    print("| figure | CLI (`assay finetune`) | API (upload + job) | API / CLI |")
    print("|---|---:|---:|---:|")
    print(f"| wall time to a usable adapter (s) | {cli_s:.1f} | {api_s:.1f} | {api_s / cli_s:.2f} |")
    print(f"\nchat: {args.requests} requests, {args.concurrency} concurrent clients, max_tokens {args.max_tokens}\n")
    print("| model | completions/s | generated tokens/s | fine-tuned / base |")
    print("|---|---:|---:|---:|")
    print(f"| {args.model} | {base_rate[0]:.2f} | {base_rate[1]:.1f} | 1.00 |")
    print(f"| fine-tuned (LoRA adapter) | {tuned_rate[0]:.2f} | {tuned_rate[1]:.1f} | "
          f"{tuned_rate[0] / base_rate[0]:.2f} |")
    print(json.dumps({"cli_s": cli_s, "api_s": api_s, "base": base_rate, "tuned": tuned_rate}))


if __name__ == "__main__":
    main()
