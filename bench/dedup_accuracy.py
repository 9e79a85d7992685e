"""Accuracy of near-duplicate detection on public data and on a synthetic edit-rate sweep.

    .venv/bin/python bench/dedup_accuracy.py

Reads $ASSAY_EXTERNAL_DATA (default ../shared/data): the Clough-Stevenson plagiarism corpus (answers
graded cut / light / heavy / non against a source text) and the bib-dedupe bibliographies (true duplicate
clusters). Runs the dedup step's own code (Sketcher, CorpusLookup, cluster_duplicates) and prints
Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from assay.curation.dedup_index import CorpusLookup, Sketches, SketchStore  # noqa: E402
from assay.curation.duplicates import Sketcher, cluster_duplicates, conflict_keys  # noqa: E402
from assay.curation.minhash import jaccard, lsh_bands  # noqa: E402
from assay.schemas.dedup import DedupConfig  # noqa: E402

DATA = Path(os.environ.get("ASSAY_EXTERNAL_DATA", ROOT.parent / "shared" / "data"))


def sketch(texts: list[str], config: DedupConfig, folder: Path, name: str) -> Sketches:
    sketcher = Sketcher(config)
    store = SketchStore(folder, name, config.num_perm)
    for start in range(0, len(texts), 512):
        part = texts[start:start + 512]
        store.add([str(i) for i in range(start, start + len(part))], *sketcher.sketch(part))
    return store.finish()


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


# ---------------------------------------------------------------- Clough-Stevenson


def clough_stevenson(folder: Path, work: Path) -> list[str]:
    root = DATA / "near_dup" / "clough_stevenson_plagiarism"
    rows = list(csv.DictReader((root / "file_information.csv").open(encoding="utf-8")))
    answers = [r for r in rows if r["Category"] != "orig"]
    sources = {r["Task"]: (root / r["File"]).read_text(encoding="utf-8", errors="replace")
               for r in rows if r["Category"] == "orig"}
    tasks = sorted(sources)
    texts = [(root / r["File"]).read_text(encoding="utf-8", errors="replace") for r in answers]
    lines = ["| setting | cut found | light found | heavy found | non found | precision | recall | F1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    settings = [("default: word 5-grams, threshold 0.8", DedupConfig()),
                *[(f"word {n}-grams, threshold {t}", DedupConfig(ngram=n, threshold=t))
                  for n, t in itertools.product((3, 5), (0.1, 0.15, 0.2, 0.3, 0.5))]]
    best: tuple[float, str] = (-1.0, "")
    for label, config in settings:
        corpus = sketch([sources[t] for t in tasks], config, work, f"cs-src-{config.ngram}")
        bands, rows_ = lsh_bands(config.threshold, config.num_perm, recall_weight=config.recall_weight)
        lookup = CorpusLookup(corpus, bands, rows_, config.threshold)
        exact, signatures, sets = Sketcher(config).sketch(texts)
        matches = lookup.match(exact, signatures, sets)
        found: Counter[str] = Counter()
        totals: Counter[str] = Counter(r["Category"] for r in answers)
        for row, match in zip(answers, matches, strict=True):
            if match is not None and tasks[match.index] == row["Task"]:
                found[row["Category"]] += 1
        tp = found["cut"] + found["light"]
        precision, recall, f1 = prf(tp, found["non"], totals["cut"] + totals["light"] - tp)
        cells = [f"{found[g]}/{totals[g]}" for g in ("cut", "light", "heavy", "non")]
        lines.append(f"| {label} | {' | '.join(cells)} | {precision:.2f} | {recall:.2f} | {f1:.2f} |")
        best = max(best, (f1, label))
    lines.append("")
    lines.append(f"Best F1 (cut+light positive, non negative, heavy left out): {best[1]} ({best[0]:.2f}).")
    return lines


# ---------------------------------------------------------------- bib-dedupe


def _surnames(authors: str) -> str:
    return " ".join(a.split(",")[0].strip() for a in authors.split(" and "))


_JOURNAL_STOPWORDS = {"of", "the", "and", "for", "in", "on", "part", "a"}


def _journal_initials(journal: str) -> str:
    """'New England Journal of Medicine' and 'N Engl J Med' both become 'nejm'."""
    return "".join(w[0] for w in re.findall(r"\w+", journal.lower()) if w not in _JOURNAL_STOPWORDS)


def _title_without_notes(title: str) -> str:
    """Drops bracketed notes: '[Erratum appears in ...]', '[German]', '(vol 360, pg 542, 2009)'; a title
    that is itself bracketed (a translated title, '[Clinical aspects of ...]. [Japanese]') is unwrapped."""
    title = title.strip()
    if title.startswith("[") and "]" in title:
        title = title[1:].replace("]", " ", 1)
    while True:  # innermost first: notes nest ('[Erratum ... Note: Philipp, Thomas [added]]')
        stripped = re.sub(r"\[[^\[\]]*\]|\([^()]*\)", " ", title)
        if stripped == title:
            return stripped
        title = stripped


def bib_text(record: dict[str, str], style: str) -> str:
    """The compared text: title, authors, year and journal, as given or normalised field by field.

    `full`: every field as given; `surnames`: authors reduced to surnames; `normalised`: surnames, notes
    dropped from titles and journals reduced to initials (the field-wise normalisation bibliographic
    de-duplicators apply before comparing).
    """
    title, authors, journal = record.get("title") or "", record.get("author") or "", record.get("journal") or ""
    if style != "full":
        authors = _surnames(authors)
    if style == "normalised":
        title, journal = _title_without_notes(title), _journal_initials(journal)
    return " ".join([title, authors, record.get("year") or "", journal])


def bib_records(name: str) -> tuple[list[dict[str, str]], list[list[str]]]:
    """The records of one bib-dedupe dataset and its true duplicate clusters."""
    root = DATA / "near_dup" / "bib_dedupe" / name
    records = list(csv.DictReader((root / "records_pre_merged.csv").open(encoding="utf-8")))
    clusters = [row["merged_ids"].split(";")
                for row in csv.DictReader((root / "merged_record_ids.csv").open(encoding="utf-8"))]
    return records, clusters


def pairs_of(groups: list[list[str]]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for g in groups for p in itertools.combinations(g, 2)}  # type: ignore[misc]


def _char(ngram: int, threshold: float, **extra: Any) -> DedupConfig:
    return DedupConfig(shingle="char", ngram=ngram, threshold=threshold, normalize={"strip_punctuation": True},
                       **extra)


_YEAR_VOLUME = {"conflict_fields": ["year", "volume"]}
BIB_SETTINGS: list[tuple[str, str, DedupConfig]] = [
    ("full authors; default (word 5-grams, 0.8)", "full", DedupConfig()),
    ("full authors; char 4-grams, 0.6", "full", _char(4, 0.6)),
    ("full authors; char 4-grams, 0.7", "full", _char(4, 0.7)),
    ("surnames; char 4-grams, 0.7", "surnames", _char(4, 0.7)),
    ("surnames; char 5-grams, 0.8", "surnames", _char(5, 0.8)),
    ("surnames; char 5-grams, 0.65; conflict year, volume", "surnames", _char(5, 0.65, **_YEAR_VOLUME)),
    ("surnames; char 3-grams, 0.65; conflict year, volume", "surnames", _char(3, 0.65, **_YEAR_VOLUME)),
    ("normalised; char 3-grams, 0.7; conflict year, volume", "normalised", _char(3, 0.7, **_YEAR_VOLUME)),
]


def bib_scores(name: str, style: str, config: DedupConfig, work: Path) -> tuple[int, int, float, float, float]:
    """Records, true pairs, and pairwise precision, recall, F1 of one setting on one bib-dedupe dataset."""
    records, clusters = bib_records(name)
    texts = [bib_text(r, style) for r in records]
    ids = [r["ID"] for r in records]
    truth = pairs_of(clusters)
    sketches = sketch(texts, config, work, f"bib-{name}")
    result = cluster_duplicates(sketches, np.array([len(t) for t in texts]),
                                np.zeros(len(ids)), config, conflict_keys(records, config))
    groups: dict[int, list[str]] = {}
    for i, c in enumerate(result.cluster.tolist()):
        if c >= 0:
            groups.setdefault(c, []).append(ids[i])
    predicted = pairs_of(list(groups.values()))
    return (len(ids), len(truth),
            *prf(len(predicted & truth), len(predicted - truth), len(truth - predicted)))


def bib_dedupe(work: Path) -> list[str]:
    datasets = ("haematology", "stroke")
    lines = ["| dataset | records | true pairs | setting | precision | recall | F1 |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for name in datasets:
        for label, style, config in BIB_SETTINGS:
            records, pairs, precision, recall, f1 = bib_scores(name, style, config, work)
            lines.append(f"| {name} | {records} | {pairs} | {label} | {precision:.3f} | {recall:.3f} | {f1:.3f} |")
    thresholds = (0.6, 0.65, 0.7, 0.75, 0.8)
    lines += ["", "Sensitivity of the normalised setting (conflict year, volume): F1 haematology / stroke.", "",
              "| char n-gram | " + " | ".join(f"threshold {t}" for t in thresholds) + " |",
              "|---:|" + "---:|" * len(thresholds)]
    for ngram in (3, 4, 5):
        cells = [" / ".join(f"{bib_scores(name, 'normalised', _char(ngram, t, **_YEAR_VOLUME), work)[4]:.3f}"
                            for name in datasets) for t in thresholds]
        lines.append(f"| {ngram} | " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------- synthetic edit-rate sweep


def base_documents(min_words: int = 60) -> list[str]:
    alpaca = json.loads((DATA / "instructions" / "llamafactory_alpaca_en_demo.json").read_text())
    texts = [a["output"] for a in alpaca]
    texts += [json.loads(line).get("query", "") for line in
              (DATA / "instructions" / "autoj_scenario_traindata.jsonl").read_text().splitlines()]
    seen: set[str] = set()
    docs = []
    for text in texts:
        if isinstance(text, str) and len(text.split()) >= min_words and text not in seen:
            seen.add(text)
            docs.append(text)
    return docs


def edit_words(rng: random.Random, text: str, rate: float, vocab: list[str]) -> str:
    """Each word is, with probability `rate`, replaced, deleted or followed by an inserted word."""
    out: list[str] = []
    for word in text.split():
        if rng.random() >= rate:
            out.append(word)
            continue
        action = rng.randrange(3)
        if action == 0:
            out.append(rng.choice(vocab))
        elif action == 2:
            out += [word, rng.choice(vocab)]
    return " ".join(out)


def synthetic(work: Path, seed: int = 0) -> list[str]:
    lines: list[str] = []
    for label, config in (("default: word 5-grams, threshold 0.8", DedupConfig()),
                          ("word 3-grams, threshold 0.5", DedupConfig(ngram=3, threshold=0.5))):
        lines += [f"Setting: {label}.", "", *synthetic_sweep(work, config, seed), ""]
    return lines


def synthetic_sweep(work: Path, config: DedupConfig, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = base_documents()
    vocab = sorted({w for d in docs for w in d.split()})
    rates = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
    t = config.threshold
    lines = [f"{len(docs)} base documents (Alpaca outputs and Auto-J queries of 60+ words); for each edit "
             "rate, one copy of 200 random documents with that share of words replaced, deleted or "
             f"followed by an insertion. 'J >= {t}': copies whose exact Jaccard with their source (shingle "
             "sets) reaches the threshold; finding those is what LSH + verification can promise.", "",
             f"| edit rate | mean true Jaccard | planted found | recall vs planted | pairs with J >= {t} | "
             "found of those (LSH recall) | precision | F1 (planted) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    f1s = []
    for rate in rates:
        picked = rng.sample(range(len(docs)), 200)
        copies = [edit_words(rng, docs[i], rate, vocab) for i in picked]
        texts = docs + copies
        sketches = sketch(texts, config, work, "synthetic")
        result = cluster_duplicates(sketches, np.zeros(len(texts), np.int64),
                                    np.zeros(len(texts)), config)
        cluster = result.cluster
        planted = {(i, len(docs) + k) for k, i in enumerate(picked)}
        true_j = [jaccard(sketches.sets.get(i), sketches.sets.get(j)) for i, j in planted]
        linked = {(i, j) for i, j in planted if cluster[i] >= 0 and cluster[i] == cluster[j]}
        above = {p for p, j in zip(sorted(planted), [jaccard(sketches.sets.get(a), sketches.sets.get(b))
                                                     for a, b in sorted(planted)], strict=True) if j >= t}
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(cluster.tolist()):
            if c >= 0:
                groups.setdefault(c, []).append(i)
        predicted = {tuple(sorted(p)) for g in groups.values() for p in itertools.combinations(g, 2)}
        precision, recall, f1 = prf(len(predicted & planted), len(predicted - planted), len(planted - predicted))
        f1s.append(f1)
        lines.append(f"| {rate:.2f} | {np.mean(true_j):.3f} | {len(linked)}/200 | {recall:.3f} | {len(above)} | "
                     f"{len(above & linked)}/{len(above)} | {precision:.3f} | {f1:.3f} |")
    lines += ["", f"Macro-F1 over edit rates <= 0.05: {np.mean(f1s[:3]):.3f}; over all rates: {np.mean(f1s):.3f}."]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=("clough", "bib", "synthetic"), default=None)
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"external data not found at {DATA} (set ASSAY_EXTERNAL_DATA)")
    started = time.perf_counter()
    sections: list[tuple[str, Any]] = [("Clough-Stevenson plagiarism corpus (answer vs. its source text)",
                                        lambda w: clough_stevenson(DATA, w)),
                                       ("bib-dedupe: pairwise precision / recall / F1", bib_dedupe),
                                       ("Synthetic near duplicates by edit rate (default settings)", synthetic)]
    keys = ("clough", "bib", "synthetic")
    with tempfile.TemporaryDirectory() as tmp:
        for key, (title, run) in zip(keys, sections, strict=True):
            if args.only in (None, key):
                print(f"### {title}\n")
                print("\n".join(run(Path(tmp))))
                print()
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
