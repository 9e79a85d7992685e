"""Decontamination methods compared in one run: recall on planted benchmark items, false positives, speed.

    .venv/bin/python bench/contamination.py                # the table in docs/benchmarks.md
    .venv/bin/python bench/contamination.py --sweep        # also containment thresholds x shingle sizes

Planted: the prompts (question, passage; see curation.contamination.prompt_text) of items sampled from the
shared benchmark copies (GSM8K test, ARC-Easy validation, AGIEval aqua-rat / logiqa-en / sat-math), edited
by replacing one word every N words at a random place in each stretch, upper-cased, commas changed, and
put in a chat record ("Answer this: ..." / "Let me think step by step."). Variants: sentences reordered
(plus an edit every 10 words), and the item (an edit every 10 words) inside a long Alpaca answer.
Clean: every Alpaca demo record and every Auto-J scenario training record (one of which quotes GSM8K's
first test question: real contamination, listed, not counted as a false positive).
Speed: records/s of each method's `match` over the clean records, the n-gram method as baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from assay.curation.contamination import BenchmarkItem, Decontaminator, Method, read_items  # noqa: E402

DATA = Path(os.environ.get("ASSAY_EXTERNAL_DATA", ROOT.parent / "shared" / "data"))
BENCHMARKS = ("benchmarks/gsm8k/test.jsonl", "benchmarks/arc_easy/validation.json", "benchmarks/agieval")
FILLERS = ("the", "some", "this", "very", "a", "each", "that", "big", "new", "one")
KNOWN_CONTAMINATION = "Janet"  # Auto-J's record quoting GSM8K line 1


def edit_every(rng: random.Random, text: str, every: int) -> str:
    """One word replaced in every stretch of `every` words, then upper case and commas changed."""
    words = text.split()
    for start in range(0, len(words), every):
        words[rng.randrange(start, min(start + every, len(words)))] = rng.choice(FILLERS)
    return " ".join(words).upper().replace(",", " ;")


def reorder(rng: random.Random, text: str) -> str:
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", text) if s]
    rng.shuffle(sentences)
    return edit_every(rng, " ".join(sentences), 10)


def chat_text(user: str, assistant: str) -> str:
    return f"{user}\n\n{assistant}"  # what the dedup step compares: all turns, blank lines between


def clean_records() -> list[str]:
    alpaca = json.loads((DATA / "instructions/llamafactory_alpaca_en_demo.json").read_text())
    texts = [chat_text(a["instruction"] + "\n" + a["input"], a["output"]) for a in alpaca]
    lines = (DATA / "instructions/autoj_scenario_traindata.jsonl").read_text().splitlines()
    texts += [" ".join(str(v) for v in json.loads(line).values()) for line in lines if line.strip()]
    return texts


def planted(items: list[BenchmarkItem], per_file: int, seed: int) -> tuple[list[str], dict[str, list[str]]]:
    """The sampled items, and per variant the planted training texts (same order)."""
    rng = random.Random(seed)
    by_file: dict[str, list[BenchmarkItem]] = {}
    for item in items:
        by_file.setdefault(item.benchmark, []).append(item)
    sample = [it for name in sorted(by_file) for it in rng.sample(by_file[name], min(per_file, len(by_file[name])))]
    alpaca = json.loads((DATA / "instructions/llamafactory_alpaca_en_demo.json").read_text())
    long_answers = [a["output"] for a in alpaca if len(a["output"].split()) >= 150]
    variants: dict[str, Callable[[str], str]] = {
        "verbatim (case and commas only)": lambda t: t.upper().replace(",", " ;"),
        "1 word in 20": lambda t: edit_every(rng, t, 20),
        "1 word in 10": lambda t: edit_every(rng, t, 10),
        "1 word in 8": lambda t: edit_every(rng, t, 8),
        "1 word in 5": lambda t: edit_every(rng, t, 5),
        "sentences reordered + 1 in 10": lambda t: reorder(rng, t),
    }
    out = {name: [chat_text("Answer this:\n" + edit(it.prompt), "Let me think step by step.") for it in sample]
           for name, edit in variants.items()}
    out["inside a long answer, 1 in 10"] = [
        chat_text("Write about it.", f"{rng.choice(long_answers)}\n\n{edit_every(rng, it.prompt, 10)}\n\n"
                  f"{rng.choice(long_answers)}") for it in sample]
    return [it.item + "@" + it.benchmark for it in sample], out


def recall(index: Decontaminator, keys: list[str], texts: list[str]) -> float:
    hits = index.match(texts)
    # the right file, not necessarily the right item: logiqa items share passages, ARC repeats questions
    right = sum(1 for key, hit in zip(keys, hits, strict=True)
                if hit is not None and key.endswith("@" + hit.benchmark))
    return right / len(keys)


def false_positives(index: Decontaminator, clean: list[str]) -> tuple[int, int, float]:
    """(flagged records that are not the known contamination, known ones flagged, records/s)."""
    started = time.perf_counter()
    hits = []
    for start in range(0, len(clean), 1000):  # the step's batch size
        hits += index.match(clean[start:start + 1000])
    rate = len(clean) / (time.perf_counter() - started)
    flagged = [(text, hit) for text, hit in zip(clean, hits, strict=True) if hit is not None]
    known = sum(1 for text, _ in flagged if KNOWN_CONTAMINATION in text)
    return len(flagged) - known, known, rate


def build(method: Method, args: argparse.Namespace, threshold: float | None = None,
          ngram: int | None = None, min_shared: int | None = None) -> tuple[Decontaminator, float]:
    started = time.perf_counter()
    index = Decontaminator.build([DATA / p for p in BENCHMARKS], method,
                                 minhash_ngram=ngram or args.minhash_ngram,
                                 minhash_threshold=threshold or args.threshold, sketch_size=args.sketch,
                                 min_shared=min_shared or args.min_shared)
    return index, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-file", type=int, default=40, help="items planted per benchmark file")
    parser.add_argument("--threshold", type=float, default=0.5, help="MinHash containment threshold")
    parser.add_argument("--minhash-ngram", type=int, default=3, help="words per MinHash shingle")
    parser.add_argument("--sketch", type=int, default=64, help="bottom-k sketch size")
    parser.add_argument("--min-shared", type=int, default=5, help="MinHash: fewest shingles shared")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sweep", action="store_true", help="also sweep thresholds and shingle sizes")
    args = parser.parse_args()
    if not (DATA / "benchmarks").is_dir():
        sys.exit(f"shared data not found at {DATA} (set ASSAY_EXTERNAL_DATA)")

    items = read_items([DATA / p for p in BENCHMARKS])
    keys, variants = planted(items, args.per_file, args.seed)
    clean = clean_records()
    methods: tuple[Method, ...] = ("ngram", "minhash", "both")
    indexes = {m: build(m, args) for m in methods}

    print(f"{len(items)} benchmark items in {len({i.benchmark for i in items})} files; {len(keys)} planted per "
          f"variant; {len(clean)} clean records. MinHash: word {args.minhash_ngram}-grams, containment >= "
          f"{args.threshold} and >= {args.min_shared} shared, bottom-{args.sketch} sketches.\n")
    print("| planted items, edited | " + " | ".join(f"recall {m}" for m in methods) + " |")
    print("|---|" + "---|" * len(methods))
    for name, texts in variants.items():
        print(f"| {name} | " + " | ".join(f"{recall(indexes[m][0], keys, texts):.2f}" for m in methods) + " |")

    print("\n| method | clean records flagged (of " + str(len(clean)) + ") | GSM8K quote in Auto-J found "
          "| records/s | vs ngram | index build s |")
    print("|---|---|---|---|---|---|")
    base = None
    for m in methods:
        wrong, known, rate = false_positives(indexes[m][0], clean)
        base = base or rate
        print(f"| {m} | {wrong} | {'yes' if known else 'no'} | {rate:,.0f} | {rate / base:.2f}x "
              f"| {indexes[m][1]:.2f} |")

    if args.sweep:
        print("\n| MinHash shingle | containment | min shared | recall 1 in 10 | recall 1 in 8 | recall 1 in 5 "
              "| recall inside long answer | clean flagged |")
        print("|---|---|---|---|---|---|---|---|")
        for ngram in (2, 3, 5):
            for threshold in (0.4, 0.5, 0.6):
                for min_shared in (3, 5, 6):
                    index, _ = build("minhash", args, threshold, ngram, min_shared)
                    cells = [f"{recall(index, keys, variants[v]):.2f}" for v in
                             ("1 word in 10", "1 word in 8", "1 word in 5", "inside a long answer, 1 in 10")]
                    wrong, _, _ = false_positives(index, clean)
                    print(f"| {ngram} | {threshold} | {min_shared} | " + " | ".join(cells) + f" | {wrong} |")


if __name__ == "__main__":
    main()
