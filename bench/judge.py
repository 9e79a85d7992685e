"""Judge and model-server benchmarks on SmolLM2-135M-Instruct (CPU by default).

    .venv/bin/python bench/judge.py speed [--model DIR] [--judgments 16] [--requests 8] [--max-tokens 64]
    .venv/bin/python bench/judge.py threads [--model DIR]
    .venv/bin/python bench/judge.py agreement [--model DIR] [--items 100] [--concurrency 8] [--feedback]
    .venv/bin/python bench/judge.py stored

speed:     `assay serve-model` on loopback; judgments/s with `assay judge`'s engine at concurrency 1 and 8 (cache
           off), and generated tokens/s for N concurrent requests with batching off (--max-batch-size 1) and on (8).
threads:   decode tokens/s in process with 1 and 2 intra-op threads (the default of 1 is measured, not assumed).
agreement: SmolLM2 as a pairwise judge on LLMBar Natural and on PandaLM's first N pairs (human labels), with the
           stored GPT-3.5 and PandaLM-7B verdicts on the same PandaLM pairs beside it.
stored:    PandaLM's published figures recomputed from its stored verdicts (no model).

--model defaults to the registry's smollm2-135m-instruct folder ($ASSAY_HOME/models/smollm2-135m-instruct).
Every figure is measured in the same run as its baseline; the tables are Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from assay.api.model_server_process import ModelServerProcess


def default_model() -> Path:
    home = Path(os.environ.get("ASSAY_HOME") or Path.home() / ".cache" / "assay")
    return home / "models" / "smollm2-135m-instruct"


ANSWERS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Give two prime numbers.", "2 and 3 are prime numbers."),
    ("Translate 'good morning' into Spanish.", "Buenos días."),
    ("Name a colour of the sky.", "The sky is usually blue."),
    ("What is 7 times 6?", "7 times 6 is 42."),
    ("Name a mammal that can fly.", "The bat is a mammal that can fly."),
    ("What language is spoken in Brazil?", "Portuguese is spoken in Brazil."),
    ("Write a one-word greeting.", "Hello!"),
]


def _items(count: int) -> list[Any]:
    from assay.schemas.judge import AbsoluteItem

    return [AbsoluteItem(id=f"q{i}", prompt=ANSWERS[i % len(ANSWERS)][0],
                         response=ANSWERS[i % len(ANSWERS)][1] + " " * (i // len(ANSWERS)))
            for i in range(count)]


async def _judge_rate(base_url: str, items: list[Any], concurrency: int, max_tokens: int) -> tuple[float, Any]:
    from assay.evaluation.judge.backends import OpenAIHTTPBackend
    from assay.evaluation.judge.engine import JudgeRun, JudgeSettings
    from assay.evaluation.judge.rubrics import load_rubric

    rubric = load_rubric("helpfulness").model_copy(update={"criteria": load_rubric("helpfulness").criteria[:1],
                                                           "parse_retries": 0})
    backend = OpenAIHTTPBackend(base_url, "smollm2", timeout_s=600)
    try:
        started = time.perf_counter()
        report, _ = await JudgeRun(rubric, backend, JudgeSettings(concurrency=concurrency, max_tokens=max_tokens)
                                   ).run(items)
        return time.perf_counter() - started, report
    finally:
        await backend.aclose()


async def _token_rate(base_url: str, requests: int, max_tokens: int) -> tuple[int, float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=900) as client:

        async def one(i: int) -> int:
            response = await client.post("/completions", json={
                "model": "smollm2", "prompt": f"Story {i}: Once upon a time", "max_tokens": max_tokens,
                "temperature": 0.8, "seed": i})
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])

        started = time.perf_counter()
        tokens = await asyncio.gather(*(one(i) for i in range(requests)))
        return sum(tokens), time.perf_counter() - started


def speed(args: argparse.Namespace) -> None:
    items = _items(args.judgments)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (1, 8):
            with ModelServerProcess(args.model, args=["--served-name", "smollm2", "--max-batch-size", str(batch)],
                                    log_path=Path(tmp) / f"server-{batch}.log") as server:
                tokens, seconds = asyncio.run(_token_rate(server.base_url, args.requests, args.max_tokens))
                rows.append(("tokens", batch, tokens, seconds))
                for concurrency in ((1, 8) if batch == 8 else (8,)):
                    elapsed, report = asyncio.run(_judge_rate(server.base_url, items, concurrency, args.judge_tokens))
                    rows.append(("judge", batch, concurrency, elapsed, report.calls.judgments,
                                 report.calls.parse_failure_rate))
    print(f"\nSmolLM2-135M-Instruct, CPU, ASSAY_TORCH_THREADS={os.environ.get('ASSAY_TORCH_THREADS', '1')}\n")
    token_rows = [r for r in rows if r[0] == "tokens"]
    base = token_rows[0][2] / token_rows[0][3]
    print(f"| serve-model, {args.requests} concurrent completions x {args.max_tokens} tokens | tokens | seconds | "
          "tokens/s | ratio |\n|---|---|---|---|---|")
    for _, batch, tokens, seconds in token_rows:
        print(f"| max batch {batch} | {tokens} | {seconds:.1f} | {tokens / seconds:.1f} | "
              f"{tokens / seconds / base:.2f} |")
    judge_rows = [r for r in rows if r[0] == "judge"]
    first = next(r for r in judge_rows if r[1] == 8 and r[2] == 1)
    base_rate = first[4] / first[3]
    print(f"\n| assay judge, {args.judgments} absolute judgments (<= {args.judge_tokens} tokens) | server batch | "
          "seconds | judgments/s | ratio vs concurrency 1 | parse failures |\n|---|---|---|---|---|---|")
    for _, batch, concurrency, elapsed, judgments, failures in sorted(judge_rows, key=lambda r: (r[2], r[1])):
        print(f"| concurrency {concurrency} | {batch} | {elapsed:.1f} | {judgments / elapsed:.2f} | "
              f"{judgments / elapsed / base_rate:.2f} | {failures:.0%} |")


def threads(args: argparse.Namespace) -> None:
    from assay.evaluation.inference import InferenceEngine, SamplingParams

    rows = []
    for count in (1, 2):
        engine = InferenceEngine.load(args.model, threads=count, batch_wait_s=0)
        prompt = engine.chat_prompt_ids([{"role": "user", "content": "Tell me a story about the sea."}])
        params = SamplingParams(max_tokens=32, temperature=0.8, seed=0)
        engine.generate(prompt, SamplingParams(max_tokens=2))
        started = time.perf_counter()
        done = sum(c.completion_tokens for c in engine.generate(prompt, params, n=4))
        rows.append((count, done, time.perf_counter() - started))
        engine.close()
    print("| intra-op threads | tokens | seconds | tokens/s | ratio vs 1 |\n|---|---|---|---|---|")
    for count, done, seconds in rows:
        print(f"| {count} | {done} | {seconds:.1f} | {done / seconds:.1f} | "
              f"{(done / seconds) / (rows[0][1] / rows[0][2]):.2f} |")


# A verdict without feedback: a 135M model rarely reaches a verdict after writing feedback, and decoding
# feedback for 400 calls costs most of an hour on a busy 2-core CPU.
VERDICT_ONLY = """\
Which response follows the instruction better? Judge helpfulness and correctness, not length or order.

Instruction:
{{ prompt }}

Response A:
{{ response_a }}

Response B:
{{ response_b }}

Reply with exactly one line: [RESULT] A, [RESULT] B or [RESULT] TIE."""


def agreement(args: argparse.Namespace) -> None:
    from assay.evaluation.judge.backends import OpenAIHTTPBackend
    from assay.evaluation.judge.datasets import calibration_items, reproduce_pandalm
    from assay.evaluation.judge.engine import JudgeRun, JudgeSettings
    from assay.evaluation.judge.rubrics import load_rubric

    update: dict[str, Any] = {"parse_retries": 1, "max_tokens": args.max_tokens}
    if not args.feedback:
        update["template"] = VERDICT_ONLY
    rubric = load_rubric("pairwise").model_copy(update=update)
    results = {}
    with tempfile.TemporaryDirectory() as tmp, \
            ModelServerProcess(args.model, args=["--served-name", "smollm2", "--max-batch-size", "8"],
                               log_path=Path(tmp) / "server.log") as server:
        for name in ("llmbar", "pandalm"):
            items = calibration_items(name, args.items)

            async def run(items: list[Any] = items) -> Any:
                backend = OpenAIHTTPBackend(server.base_url, "smollm2", timeout_s=1800)
                try:
                    settings = JudgeSettings(concurrency=args.concurrency, label_field="label")
                    return (await JudgeRun(rubric, backend, settings).run(items))[0]
                finally:
                    await backend.aclose()

            started = time.perf_counter()
            report = asyncio.run(run())
            results[name] = (report, time.perf_counter() - started, items)
    prompt = "built-in pairwise prompt (feedback, then verdict)" if args.feedback else "verdict-only prompt"
    print(f"\nSmolLM2-135M-Instruct as a pairwise judge ({prompt}, both orders, greedy, <= {args.max_tokens} "
          f"tokens, 1 parse retry at temperature 0.7)\n")
    print("| set | judge | pairs | agreement | without ties (n) | Cohen's kappa | macro F1 | position consistency | "
          "parse failures | first-position rate | minutes |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (report, seconds, items) in results.items():
        labels, pairwise = report.labels, report.pairwise
        print(f"| {name} | SmolLM2-135M | {labels.n} | {_f(labels.agreement)} | {_f(labels.agreement_without_ties)} "
              f"({labels.n_without_ties}) | {_f(labels.cohen_kappa)} | {_f(labels.macro_f1)} | "
              f"{_f(pairwise.position_consistency)} | {_f(report.calls.parse_failure_rate)} | "
              f"{_f(pairwise.first_position_rate)} | {seconds / 60:.1f} |")
        if name == "pandalm":
            stored = reproduce_pandalm({item.id for item in items})
            for judge in stored.judges:
                a = judge.agreement
                print(f"| {name} | {judge.judge} (stored) | {a.n} | {_f(a.agreement)} | {_f(a.agreement_without_ties)} "
                      f"({a.n_without_ties}) | {_f(a.cohen_kappa)} | {_f(a.macro_f1)} | - | - | - | - |")


def stored(_args: argparse.Namespace) -> None:
    from assay.evaluation.judge.datasets import reproduce_pandalm

    result = reproduce_pandalm()
    print(f"PandaLM test set: {result.items} pairs; majority labels {result.label_counts} "
          f"(published {result.published['label_counts']})")
    print("annotator kappa: " + ", ".join(f"{k} {v:.3f} (published {result.published['annotator_kappa'][k]})"
                                          for k, v in result.annotator_kappa.items()))
    print("\n| stored judge | accuracy | published | macro precision | published | macro recall | published | "
          "macro F1 | published | Cohen's kappa | agreement without ties |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for judge in result.judges:
        a, p = judge.agreement, judge.published
        print(f"| {judge.judge} | {_f(a.agreement, 4)} | {p['accuracy']:.4f} | {_f(a.macro_precision, 4)} | "
              f"{p['macro_precision']:.4f} | {_f(a.macro_recall, 4)} | {p['macro_recall']:.4f} | {_f(a.macro_f1, 4)} | "
              f"{p['macro_f1']:.4f} | {_f(a.cohen_kappa)} | {_f(a.agreement_without_ties)} ({a.n_without_ties}) |")


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("speed", "threads", "agreement", "stored"):
        p = sub.add_parser(name)
        p.add_argument("--model", type=Path, default=default_model())
    sub.choices["speed"].add_argument("--judgments", type=int, default=16)
    sub.choices["speed"].add_argument("--judge-tokens", type=int, default=48)
    sub.choices["speed"].add_argument("--requests", type=int, default=8)
    sub.choices["speed"].add_argument("--max-tokens", type=int, default=64)
    sub.choices["agreement"].add_argument("--items", type=int, default=100)
    sub.choices["agreement"].add_argument("--concurrency", type=int, default=8)
    sub.choices["agreement"].add_argument("--max-tokens", type=int, default=16)
    sub.choices["agreement"].add_argument("--feedback", action="store_true",
                                          help="Use the built-in prompt (feedback first); raise --max-tokens too.")
    args = parser.parse_args()
    if args.command != "stored" and not (args.model / "config.json").is_file():
        raise SystemExit(f"no model folder at {args.model}: convert SmolLM2 first (see docs/judge.md) or pass --model")
    {"speed": speed, "threads": threads, "agreement": agreement, "stored": stored}[args.command](args)


if __name__ == "__main__":
    main()
