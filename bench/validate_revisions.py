"""Validation speed of this working tree against an earlier revision, for refactors that must not slow it.

    .venv/bin/python bench/validate_revisions.py --base main --rounds 7

The base revision is extracted with `git archive` into a temporary folder. Each case runs in its own
process per tree (imports before the clock), rounds interleave the two trees, and the best time of each
counts. The ratio uses CPU seconds (the process's own), which a busy machine disturbs far less than
wall-clock seconds; both are printed. Both trees must report the same valid and rejected counts. Cases: chat JSONL counted (`assay
validate`, the typed fast path) and kept (the pipeline's path), instruction JSONL (no fast path), and a
chat .json array.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the model learns from clean diverse examples while duplicates and noise hurt small models more "
         "than large ones so curation pays off quickly in accuracy cost and latency").split()

RUN = """
import sys, time
from assay.curation.validate import Validator, validate_file
path, mode = sys.argv[1], sys.argv[2]
started, cpu = time.perf_counter(), time.process_time()
if mode == "count":
    summary = validate_file(path)
else:
    validator = Validator(path)
    for _ in validator.batches(512):
        pass
    summary = validator.summary
print(time.perf_counter() - started, time.process_time() - cpu, summary.valid, summary.rejected)
"""


def make_files(folder: Path, records: int, seed: int = 0) -> dict[str, tuple[Path, str]]:
    rng = random.Random(seed)
    chat, instruction = [], []
    for i in range(records):
        turns = [{"role": "system", "content": "You are a helpful assistant."}]
        for _ in range(rng.randint(1, 3)):
            turns.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(8, 40)))})
            turns.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(20, 120)))})
        chat.append({"id": f"r{i}", "messages": turns, "category": rng.choice("abc")})
        instruction.append({"id": i, "instruction": " ".join(rng.choices(WORDS, k=30)), "input": "",
                            "output": " ".join(rng.choices(WORDS, k=rng.randint(20, 150)))})
    paths = {"chat.jsonl": chat, "instruction.jsonl": instruction}
    for name, rows in paths.items():
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "chat.json").write_text(json.dumps(chat[: records // 2]))
    return {
        "chat JSONL, counted (assay validate)": (folder / "chat.jsonl", "count"),
        "chat JSONL, kept (pipeline)": (folder / "chat.jsonl", "keep"),
        "instruction JSONL, counted": (folder / "instruction.jsonl", "count"),
        "chat .json array, counted": (folder / "chat.json", "count"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--records", type=int, default=30_000, help="records per generated file")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="assay-bench-rev-") as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        archive = subprocess.run(["git", "archive", args.base], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        cases = make_files(Path(tmp), args.records)
        trees = {"base": base, "this tree": ROOT}
        best: dict[tuple[str, str], float] = {}
        best_cpu: dict[tuple[str, str], float] = {}
        counts: dict[tuple[str, str], str] = {}
        for round_no in range(args.rounds):
            for case, (path, mode) in cases.items():
                for tree, root in trees.items():
                    env = dict(os.environ, PYTHONPATH=str(root))
                    out = subprocess.run([sys.executable, "-c", RUN, str(path), mode], env=env, cwd=root, check=True,
                                         capture_output=True, text=True).stdout.split()
                    best[(case, tree)] = min(best.get((case, tree), float("inf")), float(out[0]))
                    best_cpu[(case, tree)] = min(best_cpu.get((case, tree), float("inf")), float(out[1]))
                    counts[(case, tree)] = " ".join(out[2:])
            print(f"  round {round_no + 1} done", file=sys.stderr)
        print(f"base: {args.base}; {args.records:,} records per file; best of {args.rounds} interleaved rounds\n")
        print("| case | base CPU s | this tree CPU s | this tree / base (CPU) | base wall s | this tree wall s |")
        print("|---|---:|---:|---:|---:|---:|")
        for case in cases:
            assert counts[(case, "base")] == counts[(case, "this tree")], (case, counts)
            b, a = best_cpu[(case, "base")], best_cpu[(case, "this tree")]
            print(f"| {case} | {b:.3f} | {a:.3f} | {a / b:.2f}x | {best[(case, 'base')]:.3f} | "
                  f"{best[(case, 'this tree')]:.3f} |")


if __name__ == "__main__":
    main()
