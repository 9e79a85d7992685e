"""Benchmark one retrain-and-evaluate cycle by stage on SmolLM2-135M-Instruct.

    .venv/bin/python bench/cycle.py --records 200 --steps 20 --eval-items 50

Two runs of one cycle in a fresh data folder: the first against the base model (the cycle has no champion
yet), the second with a new batch of the same size, evaluated against the first run's champion (three models
scored: base, champion, challenger). Data: Alpaca records from ../shared/data (the first `--records` for run 1,
the next for run 2), a fixed held-out set of `--eval-items` other records as the `ppl` task. Curation:
validate + dedup (against the corpus index, decontaminated against the task). Prints each stage's wall time
per run as a Markdown table, and the total.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ASSAY_EXTERNAL_DATA", ROOT.parent / "shared" / "data"))
ALPACA = DATA / "instructions" / "llamafactory_alpaca_en_demo.json"


def _chat(record: dict, i: int) -> dict:
    user = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
    return {"id": f"heldout-{i}", "messages": [{"role": "user", "content": user},
                                               {"role": "assistant", "content": record["output"]}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--records", type=int, default=200, help="New records per run.")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-items", type=int, default=50)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from assay.api.cycle_store import CycleStore
    from assay.api.cycles.config import parse_config
    from assay.api.cycles.engine import run_cycle
    from assay.api.store import Store

    records = json.loads(ALPACA.read_text(encoding="utf-8"))
    heldout = records[-args.eval_items:]
    with tempfile.TemporaryDirectory(prefix="assay-bench-cycle-") as tmp:
        root = Path(tmp)
        (root / "incoming").mkdir()
        (root / "heldout.jsonl").write_text("".join(json.dumps(_chat(r, i)) + "\n" for i, r in enumerate(heldout)))
        config = parse_config({
            "name": "bench", "data": {"path": "incoming/"},
            "curation": {"steps": ["validate", "dedup"]},
            "training": {"mode": "from_base", "spec": {
                "model": args.model, "max_steps": args.steps, "batch_size": 4, "max_seq_len": 256,
                "learning_rate": 4e-4, "val_split": 0.1, "device": args.device}},
            "evaluation": {"tasks": ["ppl:heldout.jsonl"], "limit": args.eval_items, "batch_size": 8,
                           "device": args.device},
            "gate": {"metrics": [{"task": "ppl", "metric": "loss", "direction": "lower"}]},
            "triggers": {"min_new_records": 1}}, root)
        store = Store(f"sqlite:///{root / 'assay.db'}")
        store.create_schema()
        cycles = CycleStore(store)
        cycles.upsert_cycle(config.name, config.model_dump(mode="json"))
        runs = []
        for number in (1, 2):
            batch = records[(number - 1) * args.records: number * args.records]
            (root / "incoming" / f"batch-{number}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in batch))
            started = time.perf_counter()
            run = run_cycle(cycles, config, root / "data")
            run["wall_s"] = time.perf_counter() - started
            if run["status"] != "succeeded":
                raise SystemExit(f"run {number} {run['status']}: {run['reason']}")
            runs.append(run)

    stages = list(runs[0]["stages"])
    print(f"model {args.model}, {args.records} new records per run, {args.steps} steps, "
          f"{args.eval_items} ppl items\n")
    print("| stage | run 1 (vs base) s | run 2 (vs champion) s |")
    print("|---|---:|---:|")
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{r['stages'][stage]['seconds']:.2f}" for r in runs) + " |")
    print("| **whole run (wall)** | " + " | ".join(f"**{r['wall_s']:.2f}**" for r in runs) + " |")
    for run in runs:
        data, gate = run["summary"]["data"], run["summary"]["gate"]
        loss = next(m for m in run["summary"]["metrics"] if m["metric"] == "loss")
        print(f"\nrun {run['number']}: {data['new_records']} new, {data['added']} added, removed {data['removed']}, "
              f"corpus {data['corpus_records']}; loss {loss['champion']:.4f} -> {loss['challenger']:.4f} "
              f"[{loss['ci_low']:+.4f}, {loss['ci_high']:+.4f}]; {run['decision']}: {gate['reason']}")


if __name__ == "__main__":
    main()
