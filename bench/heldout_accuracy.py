"""Accuracy with settings chosen on one part of the data and reported on another, and the whole sweeps.

    .venv/bin/python bench/heldout_accuracy.py [--only clough,bib,contamination]

bench/dedup_accuracy.py and bench/contamination.py report every setting on all the data, so their best
rows are chosen on the data they are reported on. Here each setting is chosen on a tuning part and
scored on data it never saw:

- Clough-Stevenson: leave-one-task-out cross-validation over the 5 tasks (19 answers each): the setting
  with the best F1 on 4 tasks is scored on the fifth; the five held-out folds are pooled.
- bib-dedupe: (a) chosen on one bibliography, reported on the other; (b) within each bibliography, a
  2-fold split that keeps every true cluster whole (records of a cluster never straddle the halves):
  chosen on one half, scored on the other, both directions pooled.
- Decontamination (MinHash containment settings): benchmark items and clean records are each split in
  two halves; planted items are drawn from one half and clean records come from the matching half; the
  setting is chosen on half A (best mean recall over the edited variants with at most one clean record
  flagged per 1,000), scored on half B, and the other way round.

Reads $ASSAY_EXTERNAL_DATA (default ../shared/data) through the loaders of bench/dedup_accuracy.py and
bench/contamination.py.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from assay.curation.contamination import ContainmentIndex, ContaminationIndex, Decontaminator, read_items
from assay.curation.dedup_index import CorpusLookup
from assay.curation.duplicates import Sketcher, cluster_duplicates, conflict_keys
from assay.curation.minhash import lsh_bands
from assay.schemas.dedup import DedupConfig


def _bench_module(name: str) -> ModuleType:
    """A sibling benchmark script loaded as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


accuracy = _bench_module("dedup_accuracy")
contamination = _bench_module("contamination")
DATA: Path = accuracy.DATA

Counts = tuple[int, int, int]  # true positives, false positives, false negatives


def prf(counts: Counts) -> tuple[float, float, float]:
    return accuracy.prf(*counts)  # type: ignore[no-any-return]


def add(a: Counts, b: Counts) -> Counts:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def choose(scores: dict[str, float], order: Sequence[str]) -> str:
    """The best-scoring setting; ties go to the one listed first (grids list conservative settings first)."""
    best = max(scores.values())
    return next(label for label in order if scores[label] == best)


# ---------------------------------------------------------------- Clough-Stevenson


CLOUGH_GRID = [(n, t) for n in (3, 4, 5) for t in (0.8, 0.5, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02)]


def clough(work: Path) -> list[str]:
    root = DATA / "near_dup" / "clough_stevenson_plagiarism"
    rows = list(csv.DictReader((root / "file_information.csv").open(encoding="utf-8")))
    answers = [r for r in rows if r["Category"] != "orig"]
    sources = {r["Task"]: (root / r["File"]).read_text(encoding="utf-8", errors="replace")
               for r in rows if r["Category"] == "orig"}
    tasks = sorted(sources)
    texts = [(root / r["File"]).read_text(encoding="utf-8", errors="replace") for r in answers]
    labels = [f"word {n}-grams, threshold {t}" for n, t in CLOUGH_GRID]
    found: dict[str, list[bool]] = {}
    for label, (ngram, threshold) in zip(labels, CLOUGH_GRID, strict=True):
        config = DedupConfig(ngram=ngram, threshold=threshold)
        corpus = accuracy.sketch([sources[t] for t in tasks], config, work, f"cs-{ngram}")
        bands, rows_ = lsh_bands(threshold, config.num_perm, recall_weight=config.recall_weight)
        matches = CorpusLookup(corpus, bands, rows_, threshold).match(*Sketcher(config).sketch(texts))
        found[label] = [m is not None and tasks[m.index] == a["Task"] for a, m in zip(answers, matches, strict=True)]

    def counts(label: str, task_filter: Callable[[str], bool]) -> Counts:
        tp = fp = fn = 0
        for answer, hit in zip(answers, found[label], strict=True):
            if not task_filter(answer["Task"]) or answer["Category"] == "heavy":
                continue
            positive = answer["Category"] in ("cut", "light")
            tp += positive and hit
            fn += positive and not hit
            fp += (not positive) and hit
        return tp, fp, fn

    lines = ["Whole sweep, every answer (cut + light positive, non negative, heavy not scored):", "",
             "| setting | cut found | light found | heavy found | non found | precision | recall | F1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    totals = Counter(a["Category"] for a in answers)
    for label in labels:
        got = Counter(a["Category"] for a, hit in zip(answers, found[label], strict=True) if hit)
        p, r, f = prf(counts(label, lambda _: True))
        cells = " | ".join(f"{got[g]}/{totals[g]}" for g in ("cut", "light", "heavy", "non"))
        lines.append(f"| {label} | {cells} | {p:.2f} | {r:.2f} | {f:.2f} |")
    lines += ["", "Leave-one-task-out: chosen on the other four tasks, scored on the held-out one:", "",
              "| held-out task | chosen setting | its F1 on the 4 tuning tasks | held-out TP / FP / FN | held-out F1 |",
              "|---|---|---:|---:|---:|"]
    pooled: Counts = (0, 0, 0)
    for task in tasks:
        tuning = {label: prf(counts(label, lambda t, task=task: t != task))[2] for label in labels}  # type: ignore[misc]
        chosen = choose(tuning, labels)
        held = counts(chosen, lambda t, task=task: t == task)  # type: ignore[misc]
        pooled = add(pooled, held)
        lines.append(f"| {task} | {chosen} | {tuning[chosen]:.2f} | {held[0]} / {held[1]} / {held[2]} | "
                     f"{prf(held)[2]:.2f} |")
    p, r, f = prf(pooled)
    best_label = choose({label: prf(counts(label, lambda _: True))[2] for label in labels}, labels)
    best = prf(counts(best_label, lambda _: True))
    lines += ["", f"Pooled held-out: precision {p:.2f}, recall {r:.2f}, **F1 {f:.2f}**; the best row chosen on "
              f"all answers ({best_label}) shows F1 {best[2]:.2f}."]
    return lines


# ---------------------------------------------------------------- bib-dedupe


def _bib_grid() -> list[tuple[str, str, DedupConfig]]:
    grid = [("full authors; default (word 5-grams, 0.8)", "full", DedupConfig())]
    for style, conflict, ngram, threshold in itertools.product(
            ("full", "surnames", "normalised"), (False, True), (3, 4, 5), (0.8, 0.75, 0.7, 0.65, 0.6)):
        extra: dict[str, Any] = {"conflict_fields": ["year", "volume"]} if conflict else {}
        label = (f"{'full authors' if style == 'full' else style}; char {ngram}-grams, {threshold}"
                 f"{'; conflict year, volume' if conflict else ''}")
        grid.append((label, style, accuracy._char(ngram, threshold, **extra)))
    return grid


def bib_counts(records: list[dict[str, str]], truth: set[tuple[str, str]], style: str, config: DedupConfig,
               work: Path) -> Counts:
    texts = [accuracy.bib_text(r, style) for r in records]
    ids = [r["ID"] for r in records]
    sketches = accuracy.sketch(texts, config, work, "bib")
    result = cluster_duplicates(sketches, np.array([len(t) for t in texts]),
                                np.zeros(len(ids)), config, conflict_keys(records, config))
    groups: dict[int, list[str]] = {}
    for i, c in enumerate(result.cluster.tolist()):
        if c >= 0:
            groups.setdefault(c, []).append(ids[i])
    predicted = accuracy.pairs_of(list(groups.values()))
    return len(predicted & truth), len(predicted - truth), len(truth - predicted)


def cluster_halves(records: list[dict[str, str]], clusters: list[list[str]], seed: int
                   ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Two halves of the records; every true cluster lies wholly in one (clusters and singletons shuffled)."""
    rng = random.Random(seed)
    group_of = {rid: k for k, members in enumerate(clusters) for rid in members}
    keys = sorted({group_of.get(r["ID"], -1 - i) for i, r in enumerate(records)})
    rng.shuffle(keys)
    first = set(keys[: len(keys) // 2])
    a = [r for i, r in enumerate(records) if group_of.get(r["ID"], -1 - i) in first]
    b = [r for i, r in enumerate(records) if group_of.get(r["ID"], -1 - i) not in first]
    return a, b


def bib(work: Path, seed: int = 0) -> list[str]:
    grid = _bib_grid()
    labels = [label for label, _, _ in grid]
    names = ("haematology", "stroke")
    whole: dict[str, dict[str, Counts]] = {}
    halves: dict[str, list[dict[str, Counts]]] = {}
    sizes = {}
    for name in names:
        records, clusters = accuracy.bib_records(name)
        truth = accuracy.pairs_of(clusters)
        sizes[name] = (len(records), len(truth))
        whole[name] = {label: bib_counts(records, truth, style, config, work) for label, style, config in grid}
        halves[name] = []
        for half in cluster_halves(records, clusters, seed):
            ids = {r["ID"] for r in half}
            half_truth = {p for p in truth if p[0] in ids}
            halves[name].append({label: bib_counts(half, half_truth, style, config, work)
                                 for label, style, config in grid})

    def f1(c: Counts) -> float:
        return prf(c)[2]

    lines = [f"{name}: {sizes[name][0]} records, {sizes[name][1]} true pairs" for name in names]
    lines += ["", "Whole sweep, F1 on each full bibliography (haematology / stroke); the rows list style, "
              "conflict fields and n-gram, the columns the threshold:", ""]
    thresholds = (0.8, 0.75, 0.7, 0.65, 0.6)
    lines += ["| text; char n-gram; conflict fields | " + " | ".join(f"{t}" for t in thresholds) + " |",
              "|---|" + "---:|" * len(thresholds)]
    lines.append(f"| {labels[0]} | " + " / ".join(f"{f1(whole[n][labels[0]]):.3f}" for n in names)
                 + " |" + " |" * (len(thresholds) - 1))
    for row in range(1, len(grid), len(thresholds)):
        head = grid[row][0].rsplit(", ", 1)[0] if "conflict" not in grid[row][0] else (
            grid[row][0].split(", ")[0] + ", " + grid[row][0].split("; ")[-1])
        head = head.replace(f", {thresholds[0]}", "")
        cells = [" / ".join(f"{f1(whole[n][labels[row + k]]):.3f}" for n in names) for k in range(len(thresholds))]
        lines.append(f"| {head} | " + " | ".join(cells) + " |")

    lines += ["", "(a) Chosen on one bibliography, reported on the other:", "",
              "| chosen on | chosen setting | F1 there | reported on | precision | recall | F1 |",
              "|---|---|---:|---|---:|---:|---:|"]
    for tune, test in ((names[0], names[1]), (names[1], names[0])):
        chosen = choose({label: f1(whole[tune][label]) for label in labels}, labels)
        p, r, f = prf(whole[test][chosen])
        lines.append(f"| {tune} | {chosen} | {f1(whole[tune][chosen]):.3f} | {test} | {p:.3f} | {r:.3f} | "
                     f"**{f:.3f}** |")
    lines += ["", "(b) Within each bibliography, 2-fold by whole clusters (chosen on one half, scored on the other; "
              "both directions pooled):", "",
              "| dataset | chosen on half 1 | chosen on half 2 | held-out precision | held-out recall | held-out F1 "
              "| best row on all records (F1) |",
              "|---|---|---|---:|---:|---:|---|"]
    for name in names:
        one, two = halves[name]
        chosen_one = choose({label: f1(one[label]) for label in labels}, labels)
        chosen_two = choose({label: f1(two[label]) for label in labels}, labels)
        pooled = add(two[chosen_one], one[chosen_two])
        p, r, f = prf(pooled)
        best = choose({label: f1(whole[name][label]) for label in labels}, labels)
        lines.append(f"| {name} | {chosen_one} | {chosen_two} | {p:.3f} | {r:.3f} | **{f:.3f}** | "
                     f"{best} ({f1(whole[name][best]):.3f}) |")
    return lines


# ---------------------------------------------------------------- decontamination


CONTAMINATION_GRID = [(n, t, s) for n in (2, 3, 4, 5) for t in (0.7, 0.6, 0.5, 0.4, 0.3) for s in (8, 5, 3)]
EDITED = ("1 word in 20", "1 word in 10", "1 word in 8", "1 word in 5", "sentences reordered + 1 in 10",
          "inside a long answer, 1 in 10")


def contamination_sweep(work: Path, seed: int = 7, per_file: int = 40) -> list[str]:
    del work
    paths = [DATA / p for p in contamination.BENCHMARKS]
    items = read_items(paths)
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    item_halves = [[items[i] for i in sorted(order[: len(order) // 2])],
                   [items[i] for i in sorted(order[len(order) // 2:])]]
    clean = contamination.clean_records()
    clean_order = list(range(len(clean)))
    rng.shuffle(clean_order)
    clean_halves = [[clean[i] for i in sorted(clean_order[: len(clean) // 2])],
                    [clean[i] for i in sorted(clean_order[len(clean) // 2:])]]
    planted = [contamination.planted(half, per_file, seed + k) for k, half in enumerate(item_halves)]
    counter = Counter(item.benchmark for item in items)
    ngram_index = ContaminationIndex.from_items(items)

    def index_for(setting: tuple[int, float, int], with_ngram: bool = False) -> Decontaminator:
        ngram, threshold, min_shared = setting
        return Decontaminator(counter, ngram_index if with_ngram else None,
                              ContainmentIndex.from_items(items, ngram, threshold, 64, min_shared, 5))

    # per setting and half: recall per variant, clean records flagged (the known GSM8K quote not counted)
    results: dict[tuple[int, float, int], list[tuple[dict[str, float], int]]] = {}
    for setting in CONTAMINATION_GRID:
        index = index_for(setting)
        results[setting] = []
        for (keys, variants), clean_half in zip(planted, clean_halves, strict=True):
            recalls = {v: contamination.recall(index, keys, variants[v]) for v in EDITED}
            flagged, _, _ = contamination.false_positives(index, clean_half)
            results[setting].append((recalls, flagged))

    def objective(setting: tuple[int, float, int], half: int) -> float:
        recalls, flagged = results[setting][half]
        allowed = len(clean_halves[half]) // 1000
        return float(np.mean(list(recalls.values()))) - (10.0 * flagged if flagged > allowed else 0.0)

    def label(setting: tuple[int, float, int]) -> str:
        n, t, s = setting
        default = " (default)" if setting == (3, 0.5, 5) else ""
        return f"word {n}-grams, containment {t}, min shared {s}{default}"

    lines = [f"{len(items)} benchmark items split {len(item_halves[0])} / {len(item_halves[1])}; "
             f"{len(planted[0][0])} planted per variant and half; clean records split {len(clean_halves[0])} / "
             f"{len(clean_halves[1])}. MinHash method alone (the part these settings change).", "",
             "Whole sweep (recall per edit, both halves pooled; clean records flagged of "
             f"{len(clean)}):", "",
             "| setting | " + " | ".join(EDITED) + " | mean | clean flagged |",
             "|---|" + "---:|" * (len(EDITED) + 2)]
    for setting in CONTAMINATION_GRID:
        pooled = {v: np.mean([results[setting][h][0][v] for h in (0, 1)]) for v in EDITED}
        flagged = sum(results[setting][h][1] for h in (0, 1))
        lines.append(f"| {label(setting)} | " + " | ".join(f"{pooled[v]:.2f}" for v in EDITED)
                     + f" | {np.mean(list(pooled.values())):.2f} | {flagged} |")
    lines += ["", "Chosen on one half (best mean recall with at most 1 clean record flagged per 1,000), "
              "scored on the other:", "",
              "| chosen on | chosen setting | mean recall there | held-out " + " | held-out ".join(EDITED)
              + " | held-out mean | held-out clean flagged |",
              "|---|---|---:|" + "---:|" * (len(EDITED) + 2)]
    for tune, test in ((0, 1), (1, 0)):
        scores = {label(s): objective(s, tune) for s in CONTAMINATION_GRID}
        chosen_label = choose(scores, [label(s) for s in CONTAMINATION_GRID])
        chosen = next(s for s in CONTAMINATION_GRID if label(s) == chosen_label)
        for name, setting in (("chosen", chosen), ("default", (3, 0.5, 5))):
            recalls, flagged = results[setting][test]
            there = np.mean(list(results[setting][tune][0].values()))
            lines.append(f"| half {tune + 1}{' (' + name + ')' if name == 'default' else ''} | {label(setting)} | "
                         f"{there:.2f} | " + " | ".join(f"{recalls[v]:.2f}" for v in EDITED)
                         + f" | {np.mean(list(recalls.values())):.2f} | {flagged} of {len(clean_halves[test])} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", default="clough,bib,contamination")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"external data not found at {DATA} (set ASSAY_EXTERNAL_DATA)")
    parts: dict[str, tuple[str, Callable[[Path], list[str]]]] = {
        "clough": ("Clough-Stevenson: answer against its source (CorpusLookup, as --against)", clough),
        "bib": ("bib-dedupe: pairwise precision / recall / F1", bib),
        "contamination": ("Decontamination: MinHash containment settings", contamination_sweep),
    }
    with open("/proc/loadavg") as f:
        print(f"load average before: {' '.join(f.read().split()[:3])}\n")
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.only.split(","):
            started = time.perf_counter()
            title, run = parts[key]
            print(f"### {title}\n")
            print("\n".join(run(Path(tmp))))
            print(f"\n({time.perf_counter() - started:.1f} s)\n", flush=True)
    with open("/proc/loadavg") as f:
        print(f"load average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    sys.exit(main())
