"""Topic discovery against human labels, the effect of max_share balancing, and speed on 10,000 records.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/topics.py                       # all three parts
    HF_HUB_OFFLINE=1 .venv/bin/python bench/topics.py --parts speed --records 2000   # quick

quality: the 2,383 Auto-J prompts (58 scenario labels + `default`) clustered by embeddings (opening
sentence, mean or lead pooling), TF-IDF (without and with lead weighting) and hybrid (both joined), each
without and with UMAP reduction; k chosen by silhouette and k = 59 (the number of labels); NMI, AMI and
purity against the labels, with the NMI of the same clusters against shuffled labels as the chance
baseline; then the default settings under three seeds.
ceiling: how well a supervised classifier (logistic regression, 5-fold cross-validation) recovers the
labels from the default hybrid vectors: the most any clustering of those vectors could hope for.
balance: the same prompts with `topic_field: category` and `max_share: 0.05`, before and after.
speed: N records (real prompts from the shared instruction files, cycled to reach N) through the real
pipeline (validate, balance) in field mode (the baseline: reading, validating and spilling, no
discovery), tfidf mode and embedding mode; records/s and where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assay.curation.pipeline import run_pipeline  # noqa: E402
from assay.curation.topics import (  # noqa: E402
    TopicAssignment,
    cluster_topics,
    embedding_text,
    encode_texts,
    load_encoder,
    resolve_reduction,
    term_counts,
    topic_vectors,
)
from assay.schemas.balance import BalanceConfig, BalanceReport  # noqa: E402
from assay.schemas.curation import CurationSpec  # noqa: E402


def data_dir() -> Path:
    return Path(os.environ.get("ASSAY_EXTERNAL_DATA", ROOT.parent / "shared" / "data"))


def autoj_rows() -> list[dict[str, Any]]:
    path = data_dir() / "instructions" / "autoj_scenario_traindata.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prompt(row: dict[str, Any]) -> str:
    return row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")


def purity(labels: list[str], clusters: np.ndarray) -> float:
    from sklearn.metrics.cluster import contingency_matrix

    table = contingency_matrix(labels, clusters)
    return float(table.max(axis=0).sum() / table.sum())


# --- quality --------------------------------------------------------------------------------------------

def quality() -> None:
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    rows = autoj_rows()
    texts = [prompt(r)[:BalanceConfig().max_chars] for r in rows]
    labels = [r["category"] for r in rows]
    shuffled = np.random.default_rng(0).permutation(len(labels))
    # (row name, settings); "before" rows are the settings shipped before lead pooling and UMAP.
    no_umap = {"reduce": "none"}
    before = {"pooling": "mean", "tfidf_weight": 1.0, **no_umap}
    variants: list[tuple[str, dict[str, Any]]] = [
        ("embedding, mean pooling (before)", {"mode": "embedding", **before}),
        ("embedding, lead pooling", {"mode": "embedding", **no_umap}),
        ("embedding, lead pooling, UMAP", {"mode": "embedding", "reduce": "umap"}),
        ("tfidf, no lead weight", {"mode": "tfidf", "lead_weight": 0.0, **no_umap}),
        ("tfidf, lead weight 3", {"mode": "tfidf", **no_umap}),
        ("tfidf, lead weight 3, UMAP", {"mode": "tfidf", "reduce": "umap"}),
        ("hybrid, mean pooling, TF-IDF weight 1 (before)", {"mode": "hybrid", **before}),
        ("hybrid, lead pooling, TF-IDF weight 0.75 (default)", {"mode": "hybrid"}),
        ("hybrid, lead pooling, TF-IDF weight 0.75, UMAP", {"mode": "hybrid", "reduce": "umap"}),
    ]
    embedded: dict[str, tuple[np.ndarray, float]] = {}
    print(f"\n## quality: {len(texts)} Auto-J prompts, {len(set(labels))} labels, UMAP "
          f"{'installed' if resolve_reduction(BalanceConfig(reduce='auto'), 'hybrid') == 'umap' else 'NOT installed'}, "
          "load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| mode | k | NMI | NMI vs shuffled labels | AMI | purity | vectors s | reducing s | clustering s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, settings in variants:
        base = BalanceConfig(**settings)
        embeddings, embed_seconds = embeddings_for(texts, base, embedded)
        for n_topics in (None, len(set(labels))):
            config = base.model_copy(update={"n_topics": n_topics})
            found, seconds = assign(texts, embeddings, config)
            k = f"{len(found.topics)} (silhouette)" if n_topics is None else str(n_topics)
            print(f"| {name} | {k} | {normalized_mutual_info_score(labels, found.labels):.3f} | "
                  f"{normalized_mutual_info_score(labels, found.labels[shuffled]):.3f} | "
                  f"{adjusted_mutual_info_score(labels, found.labels):.3f} | {purity(labels, found.labels):.3f} | "
                  f"{embed_seconds + seconds.get('vectorising', 0.0):.1f} | {seconds.get('reducing', 0.0):.1f} | "
                  f"{seconds['clustering']:.1f} |")
    print("\n**Default settings, three seeds** (the seed drives the k-choice sample and k-means):\n")
    print("| seed | k chosen | NMI | AMI | purity | silhouette per k tried |\n|---:|---:|---:|---:|---:|---|")
    default = BalanceConfig(mode="hybrid")
    embeddings, _ = embeddings_for(texts, default, embedded)
    for seed in (0, 1, 2):
        found, _ = assign(texts, embeddings, default.model_copy(update={"seed": seed}))
        assert found.k_selection is not None
        tried = ", ".join(f"{k}: {v:.3f}" for k, v in found.k_selection.scores.items())
        print(f"| {seed} | {len(found.topics)} | {normalized_mutual_info_score(labels, found.labels):.3f} | "
              f"{adjusted_mutual_info_score(labels, found.labels):.3f} | {purity(labels, found.labels):.3f} | "
              f"{tried} |")
        if seed == 0:
            example = found
    print(f"\nlargest default topics (seed 0, k = {len(example.topics)}): " + "; ".join(
        f"{t.name} ({t.size})" for t in example.topics[:8]))


def embeddings_for(texts: list[str], config: BalanceConfig,
                   cache: dict[str, tuple[np.ndarray, float]]) -> tuple[np.ndarray | None, float]:
    """Embeddings and the seconds they took; each text view and pooling is embedded once per run."""
    if config.mode not in ("embedding", "hybrid"):
        return None, 0.0
    key = f"{config.embed_text}/{config.pooling}"
    if key not in cache:
        started = time.perf_counter()
        vectors = encode_texts([embedding_text(t, config) for t in texts], config)
        cache[key] = (vectors, time.perf_counter() - started)
    return cache[key]


def assign(texts: list[str], embeddings: np.ndarray | None,
           config: BalanceConfig) -> tuple[TopicAssignment, dict[str, float]]:
    terms = term_counts(texts, len(texts), config.lead_weight, config.lead_words)
    seconds: dict[str, float] = {}
    vectors = topic_vectors(config.mode, embeddings, terms, config, seconds)
    return cluster_topics(vectors, terms.counts, terms.vocabulary, config, config.mode, seconds), seconds


# --- ceiling --------------------------------------------------------------------------------------------

def ceiling() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score
    from sklearn.model_selection import cross_val_predict

    rows = autoj_rows()
    config = BalanceConfig(mode="hybrid")
    texts = [prompt(r)[: config.max_chars] for r in rows]
    labels = np.array([r["category"] for r in rows])
    embeddings, _ = embeddings_for(texts, config, {})
    terms = term_counts(texts, len(texts), config.lead_weight, config.lead_words)
    print("\n## ceiling: labels predicted by logistic regression (5-fold cross-validation)\n")
    print("| vectors | accuracy | NMI | AMI |\n|---|---:|---:|---:|")
    for name, mode in (("hybrid (default)", "hybrid"), ("embedding (lead pooling)", "embedding"),
                       ("tfidf", "tfidf")):
        vectors = topic_vectors(mode, embeddings, terms, config, {})
        predicted = cross_val_predict(LogisticRegression(C=10.0, max_iter=2000), vectors, labels, cv=5)
        print(f"| {name} | {np.mean(predicted == labels):.3f} | "
              f"{normalized_mutual_info_score(labels, predicted):.3f} | "
              f"{adjusted_mutual_info_score(labels, predicted):.3f} |")


# --- balance --------------------------------------------------------------------------------------------

def balance(work: Path) -> None:
    rows = autoj_rows()
    source = work / "autoj.jsonl"
    source.write_bytes(b"".join(orjson.dumps({"id": f"autoj-{i}", "messages": [
        {"role": "user", "content": prompt(r)}], "category": r["category"]}) + b"\n" for i, r in enumerate(rows)))
    spec = CurationSpec.model_validate({"steps": ["validate", "balance"], "validate": {"require_assistant": False},
                                        "balance": {"topic_field": "category", "max_share": 0.05}})
    report = run_pipeline(spec, source, work / "balance-out")
    section = report.balance
    assert section is not None
    kept = [orjson.loads(line) for line in (work / "balance-out" / "curated.jsonl").read_bytes().splitlines()]
    largest = max(Counter(r["category"] for r in kept).values()) / len(kept)
    print(f"\n## balance: topic_field category, max_share 0.05 (cap {section.parameters['cap']} records)\n")
    print("| | before | after |\n|---|---:|---:|")
    print(f"| records | {section.records_in:,} | {section.records_out:,} |")
    print(f"| normalised entropy | {section.entropy_before:.3f} | {section.entropy_after:.3f} |")
    print(f"| Gini | {section.gini_before:.3f} | {section.gini_after:.3f} |")
    print(f"| largest share | {100 * section.largest_share_before:.1f}% | {100 * largest:.2f}% |")
    print(f"| topics under min_count {section.min_count} | "
          f"{sum(t.before < section.min_count for t in section.topics)} | {len(section.small_topics)} |")
    print("\n| category | before | share | after | share |\n|---|---:|---:|---:|---:|")
    for row in section.topics[:6]:
        print(f"| {row.name} | {row.before} | {100 * row.share_before:.1f}% | {row.after} | "
              f"{100 * row.share_after:.1f}% |")


# --- speed ----------------------------------------------------------------------------------------------

def speed_input(path: Path, n_records: int) -> None:
    """Real prompts from the shared instruction files, cycled (ids made unique) to reach n_records."""
    folder = data_dir() / "instructions"
    pool = [(prompt(r), "autoj") for r in autoj_rows()]
    pool += [(prompt(r), "alpaca") for r in json.loads((folder / "llamafactory_alpaca_en_demo.json").read_text())]
    for name in ("selfinstruct_seed_tasks.jsonl", "selfinstruct_user_oriented_instructions.jsonl"):
        pool += [(json.loads(line)["instruction"], "selfinstruct")
                 for line in (folder / name).read_text().splitlines() if line.strip()]
    with path.open("wb") as out:
        for i in range(n_records):
            text, source = pool[i % len(pool)]
            out.write(orjson.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": text}],
                                    "source": source}) + b"\n")


def speed(work: Path, n_records: int) -> None:
    source = work / "speed.jsonl"
    speed_input(source, n_records)
    runs: dict[str, tuple[float, BalanceReport]] = {}
    for mode, settings in (("field", {"topic_field": "source"}), ("tfidf", {"mode": "tfidf"}),
                           ("embedding", {"mode": "embedding"}), ("hybrid (default)", {"mode": "hybrid"}),
                           ("hybrid, UMAP", {"mode": "hybrid", "reduce": "umap"})):
        spec = CurationSpec.model_validate({"steps": ["validate", "balance"], "validate": {"require_assistant": False},
                                            "balance": {**settings, "max_share": 0.2}})
        started = time.perf_counter()
        report = run_pipeline(spec, source, work / f"speed-{len(runs)}")
        assert report.balance is not None
        runs[mode] = (time.perf_counter() - started, report.balance)
    baseline = runs["field"][0]
    print(f"\n## speed: {n_records:,} records, validate + balance, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end (model loaded before, not included)\n")
    print("| mode | topics | total s | records/s | x field-mode time | embedding s | vectorising s | "
          "reducing s | clustering s | naming s | balancing s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, (seconds, section) in runs.items():
        parts = section.seconds
        print(f"| {mode} | {len(section.topics)} | {seconds:.1f} | {n_records / seconds:,.0f} | "
              f"{seconds / baseline:.1f} | " + " | ".join(
                  f"{parts.get(key, 0.0):.1f}" for key in ("embedding", "vectorising", "reducing", "clustering",
                                                           "naming", "balancing")) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="quality,balance,speed",
                        help="Comma-separated parts to run: quality, ceiling, balance, speed.")
    parser.add_argument("--records", type=int, default=10_000, help="Records for the speed part.")
    args = parser.parse_args()
    if not (data_dir() / "instructions" / "autoj_scenario_traindata.jsonl").exists():
        sys.exit(f"shared data not found under {data_dir()} (set ASSAY_EXTERNAL_DATA)")
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    load_encoder(None, "cpu")
    print(f"embedding model loaded in {time.perf_counter() - started:.1f} s (once per process)")
    with tempfile.TemporaryDirectory() as tmp:
        if "quality" in parts:
            quality()
        if "ceiling" in parts:
            ceiling()
        if "balance" in parts:
            balance(Path(tmp))
        if "speed" in parts:
            speed(Path(tmp), args.records)


if __name__ == "__main__":
    main()
