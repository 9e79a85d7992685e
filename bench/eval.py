"""Evaluation speed per output type (cold and cached) and SmolLM2-135M-Instruct's scores on the shared copies.

    PYTHONPATH=. .venv/bin/python bench/eval.py speed  [--model smollm2-135m-instruct] [--items 40]
    PYTHONPATH=. .venv/bin/python bench/eval.py scores [--model smollm2-135m-instruct] [--limit 100]

speed: for each output type, one task scored by `assay.evaluation.evaluate` with an empty request cache
(cold), then again on the same items (cached), and the same items through a bare `lm_eval.simple_evaluate`
with lm-eval's own task config (the baseline, measured in the same run): items/s of each and the ratios.
Times are the scoring call (model loading excluded on both sides) after an untimed warm-up evaluation.
  multiple choice: ARC-Easy (loglikelihood of every choice)
  generation:      GSM8K, 5-shot, greedy until "Question:" (at most --gen-tokens new tokens)
  perplexity:      `ppl:` on Alpaca demo records (loglikelihood of each assistant turn)
scores: ARC-Easy, AGIEval logiqa-en / sat-math / aqua-rat (0-shot) and GSM8K (5-shot) with a seeded
sample of --limit items each (GSM8K: --gsm8k-limit), next to the published SmolLM2 figures.
Reads $ASSAY_EXTERNAL_DATA (default ../shared/data); the model by registry name or folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ASSAY_EXTERNAL_DATA", ROOT.parent / "shared" / "data"))
BENCH = DATA / "benchmarks"
SEED = 1  # speed: the item sample and the few-shot examples, the same for Assay and the bare lm-eval run

# SmolLM2 model cards (lighteval, zero-shot unless stated; "ARC (Average)" is the mean of ARC-Easy and
# ARC-Challenge). Nothing is published for AGIEval at this size; chance is 1 / number of options.
PUBLISHED = {
    "arc_easy": "ARC (Average) 43.9 (135M), 37.3 (135M-Instruct)",
    "gsm8k": "GSM8K 5-shot 1.4 (135M and 135M-Instruct)",
    "logiqa-en": "not published; chance 25.0",
    "sat-math": "not published; chance 25.0",
    "aqua-rat": "not published; chance 20.0",
}


def quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    for name in ("lm_eval", "datasets", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def alpaca_chats(path: Path, count: int) -> Path:
    records = json.loads((DATA / "instructions/llamafactory_alpaca_en_demo.json").read_text())[:count]
    path.write_text("".join(json.dumps({"instruction": r["instruction"], "input": r["input"],
                                        "output": r["output"]}) + "\n" for r in records))
    return path


def direct_lm_eval(model: Path, config: dict[str, Any], indices: list[int] | None, batch_size: int,
                   seed: int) -> float:
    """Seconds a bare lm-eval run takes on the same items: the simple_evaluate call, model loading excluded.
    The seeds are Assay's (`EvalSpec.seed`), so GSM8K shows the same few-shot examples and generates the same
    text: lm-eval's own default few-shot seed (1234) would give other prompts and other generation lengths."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from assay.evaluation.harness import quiet_lm_eval

    lm = HFLM(pretrained=str(model), device="cpu", dtype="float32", batch_size=batch_size)
    started = time.perf_counter()
    with quiet_lm_eval():
        simple_evaluate(model=lm, tasks=[config], task_manager=TaskManager(include_defaults=False),
                        samples={config["task"]: indices} if indices is not None else None, bootstrap_iters=100,
                        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    return time.perf_counter() - started


def speed(args: argparse.Namespace) -> None:
    import yaml

    from assay.evaluation import evaluate
    from assay.evaluation.models import resolve_model
    from assay.evaluation.tasks import sample_indices
    from assay.schemas.evaluation import EvalSpec

    model = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="assay-bench-eval-"))
    ppl_file = alpaca_chats(work / "alpaca.jsonl", args.items)
    lm_eval_tasks = Path(__import__("lm_eval").__file__).parent / "tasks"
    cases = [
        ("multiple choice", f"arc_easy:{BENCH / 'arc_easy/validation.json'}", "arc/arc_easy.yaml",
         BENCH / "arc_easy/validation.json", 570, args.items),
        ("generation", f"gsm8k:{BENCH / 'gsm8k/test.jsonl'}", "gsm8k/gsm8k.yaml", BENCH / "gsm8k/test.jsonl",
         1319, args.gen_items),
        ("perplexity", f"ppl:{ppl_file}", None, None, args.items, args.items),
    ]
    # Untimed warm-up: the first evaluation in a process pays for imports, lm-eval's task index and torch's
    # first kernels (20 s for four ARC items with the tiny model), which would otherwise land on the first
    # cold run and not on the bare lm-eval runs that follow it.
    evaluate(EvalSpec(model=str(model), tasks=[cases[0][1]], limit=2, seed=SEED, cache=False), work / "warm-up")
    rows = []
    for kind, task, lm_eval_yaml, data_file, total, items in cases:
        spec = EvalSpec(model=str(model), tasks=[task], limit=items, seed=SEED, batch_size=args.batch_size,
                        max_gen_toks=args.gen_tokens, cache_dir=str(work / "cache"))
        timings = []
        for run in ("cold", "cached"):
            # Scoring time is the task's simple_evaluate call (the task_done event), as for the bare lm-eval
            # run; ModelRun.seconds also counts loading the model (about a second), shown apart.
            done: list[float] = []
            report = evaluate(spec, work / f"out-{kind}-{run}",
                              on_event=lambda e, done=done: done.append(e["seconds"]) if e["event"] == "task_done" else None)
            timings.append((sum(done), report.models[0].computed, report.tasks[0].items_evaluated,
                            report.models[0].seconds))
        direct = None
        if lm_eval_yaml is not None and data_file is not None:
            config = yaml.safe_load((lm_eval_tasks / lm_eval_yaml).read_text())
            for key in ("tag", "dataset_name", "training_split", "validation_split"):
                config.pop(key, None)
            config.update(task="direct", dataset_path="json", test_split="test",
                          dataset_kwargs={"data_files": {"test": str(data_file)}})
            if config.get("num_fewshot"):
                config["fewshot_split"] = "test"
            if "generation_kwargs" in config:
                config["generation_kwargs"]["max_gen_toks"] = args.gen_tokens
            direct = direct_lm_eval(model, config, sample_indices(total, items, SEED), args.batch_size, SEED)
        (cold, computed, n, cold_run), (cached, computed_again, _, cached_run) = timings
        rows.append((kind, task.split(":")[0], n, computed, cold, cached, computed_again, direct, cold_run,
                     cached_run))
        print(f"{kind}: {n} items, cold {cold:.1f} s, cached {cached:.1f} s, direct lm-eval "
              f"{direct if direct is None else round(direct, 1)} s", file=sys.stderr, flush=True)
    print(f"\nmodel {model}, batch size {args.batch_size}, generation up to {args.gen_tokens} tokens\n")
    print("| output type | task | items | requests | cold s | cold items/s | cached s | cached items/s "
          "| cached speed-up | bare lm-eval s | bare lm-eval items/s | Assay cold speed / bare | "
          "whole call cold / cached s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, task, n, computed, cold, cached, computed_again, direct, cold_run, cached_run in rows:
        direct_s = f"{direct:.1f}" if direct else "-"
        direct_rate = f"{n / direct:.2f}" if direct else "-"
        ratio = f"{direct / cold:.2f}" if direct else "-"
        print(f"| {kind} | {task} | {n} | {computed} | {cold:.1f} | {n / cold:.2f} | {cached:.2f} | "
              f"{n / cached:.0f} | {cold / cached:.0f}x ({computed_again} computed) | {direct_s} | {direct_rate} | "
              f"{ratio} | {cold_run:.1f} / {cached_run:.1f} |")


def scores(args: argparse.Namespace) -> None:
    from assay.evaluation import evaluate
    from assay.schemas.evaluation import EvalSpec

    tasks = [f"arc_easy:{BENCH / 'arc_easy/validation.json'}",
             *[f"{name}:{BENCH / 'agieval' / (name + '.jsonl')}" for name in ("logiqa-en", "sat-math", "aqua-rat")]]
    rows = []
    for task_list, limit in ((tasks, args.limit), ([f"gsm8k:{BENCH / 'gsm8k/test.jsonl'}"], args.gsm8k_limit)):
        spec = EvalSpec(model=args.model, tasks=task_list, limit=limit, seed=1234, batch_size=args.batch_size,
                        chat_template=args.chat_template)
        started = time.perf_counter()
        report = evaluate(spec, Path(tempfile.mkdtemp(prefix="assay-bench-scores-")),
                          on_event=lambda e: print(e, file=sys.stderr, flush=True) if e["event"] == "task_done" else None)
        print(f"scored {[t.name for t in report.tasks]} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for task in report.tasks:
            for key in ("acc", "acc_norm", "exact_match,strict-match", "exact_match,flexible-extract"):
                value = task.score("base", key)
                if value is not None:
                    rows.append((task.name, task.items_evaluated, task.items_total, task.num_fewshot, key,
                                 value.value, value.stderr or 0.0))
    print(f"\nmodel {args.model}, seed 1234, chat template {'on' if args.chat_template else 'off'}\n")
    print("| task | items | shots | metric | SmolLM2-135M-Instruct (here) | published |")
    print("|---|---|---|---|---|---|")
    for name, n, total, shots, key, value, stderr in rows:
        print(f"| {name} | {n} of {total} | {shots} | {key} | {100 * value:.1f} ± {100 * stderr:.1f} | "
              f"{PUBLISHED.get(name, '')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_speed = sub.add_parser("speed", help="items/s per output type, cold and cached, vs bare lm-eval")
    run_speed.add_argument("--model", default="smollm2-135m-instruct")
    run_speed.add_argument("--items", type=int, default=40, help="items for multiple choice and perplexity")
    run_speed.add_argument("--gen-items", type=int, default=8, help="GSM8K items (generation is slow on CPU)")
    run_speed.add_argument("--gen-tokens", type=int, default=128, help="most new tokens per generation")
    run_speed.add_argument("--batch-size", type=int, default=8)
    run_scores = sub.add_parser("scores", help="SmolLM2 scores on the shared benchmark copies")
    run_scores.add_argument("--model", default="smollm2-135m-instruct")
    run_scores.add_argument("--limit", type=int, default=100)
    run_scores.add_argument("--gsm8k-limit", type=int, default=50)
    run_scores.add_argument("--batch-size", type=int, default=8)
    run_scores.add_argument("--chat-template", action="store_true")
    args = parser.parse_args()
    if not BENCH.is_dir():
        sys.exit(f"shared benchmark copies not found under {BENCH} (set ASSAY_EXTERNAL_DATA)")
    quiet()
    speed(args) if args.command == "speed" else scores(args)


if __name__ == "__main__":
    main()
