"""Speed and memory of dedup signatures and LSH against datasketch's own ways, in one run.

    .venv/bin/python bench/dedup.py                 # 50,000 documents of ~500 characters, 1M for RSS
    .venv/bin/python bench/dedup.py --docs 10000 --rss-docs 0   # quick

Contenders for signatures (all hash shingles with xxh32, so all must give the same signatures):
(a) the naive datasketch loop, `MinHash()` + `update()` per shingle; (b) `MinHash.bulk`; (b') `MinHash.bulk`
with its default SHA-1 hash (other signatures: decisions compared, not required equal); (c) ours.
Each contender's time includes normalising and shingling the texts. Then every signature matrix goes
through the same decision code (LSH, verification, union-find) and the keep/drop decisions are compared.
The LSH stage is also timed against datasketch's `MinHashLSH` (insert + query), with equal candidates.
Peak RSS of 1M documents' signatures + LSH index is measured in a child process of its own.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xxhash

ROOT = Path(__file__).resolve().parent.parent

from assay.curation.dedup_index import Sketches, SketchStore  # noqa: E402
from assay.curation.duplicates import Sketcher, cluster_duplicates  # noqa: E402
from assay.curation.minhash import (  # noqa: E402
    band_keys,
    candidate_pairs,
    lsh_bands,
    normalise_text,
    shingles,
)
from assay.schemas.dedup import DedupConfig  # noqa: E402

BATCH = 512


def make_documents(n: int, seed: int = 0, duplicate_share: float = 0.1) -> list[str]:
    """~500-character documents over a Zipf-like vocabulary; a share of them are lightly edited copies."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(30000)]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    originals = int(n * (1 - duplicate_share))
    docs = []
    for _ in range(originals):
        words = rng.choices(vocab, weights=weights, k=90)
        docs.append(" ".join(words)[:520].rsplit(" ", 1)[0] + ".")
    for _ in range(n - originals):
        words = rng.choice(docs[:originals]).split()
        for _ in range(rng.randint(0, 2)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        docs.append(" ".join(words))
    rng.shuffle(docs)
    return docs


def reference_shingles(docs: list[str], config: DedupConfig) -> list[list[bytes]]:
    return [shingles(normalise_text(d), config.shingle, config.ngram) for d in docs]


def naive_signatures(docs: list[str], config: DedupConfig) -> np.ndarray:
    from datasketch import MinHash

    out = np.empty((len(docs), config.num_perm), dtype=np.uint32)
    for i, doc_shingles in enumerate(reference_shingles(docs, config)):
        m = MinHash(num_perm=config.num_perm, seed=config.seed, hashfunc=xxhash.xxh32_intdigest)
        for shingle in doc_shingles:
            m.update(shingle)
        out[i] = m.hashvalues
    return out


def bulk_signatures(docs: list[str], config: DedupConfig, hashfunc: Callable | None = xxhash.xxh32_intdigest
                    ) -> np.ndarray:
    from datasketch import MinHash

    kwargs = {"hashfunc": hashfunc} if hashfunc is not None else {}
    out = np.empty((len(docs), config.num_perm), dtype=np.uint32)
    for start in range(0, len(docs), BATCH):
        part = reference_shingles(docs[start:start + BATCH], config)
        for i, m in enumerate(MinHash.bulk(part, num_perm=config.num_perm, seed=config.seed, **kwargs)):
            out[start + i] = m.hashvalues
    return out


def our_signatures(docs: list[str], config: DedupConfig) -> np.ndarray:
    sketcher = Sketcher(config)
    return np.concatenate([sketcher.sketch(docs[s:s + BATCH])[1] for s in range(0, len(docs), BATCH)])


def sketches_with(docs: list[str], signatures: np.ndarray, config: DedupConfig, folder: Path) -> Sketches:
    """The run's sketches, with the signatures of one contender (shingle sets are shared by all)."""
    sketcher = Sketcher(config)
    store = SketchStore(folder, "bench", config.num_perm)
    for start in range(0, len(docs), BATCH):
        part = docs[start:start + BATCH]
        exact, _, sets = sketcher.sketch(part)
        store.add([str(i) for i in range(start, start + len(part))], exact, signatures[start:start + len(part)],
                  sets)
    return store.finish()


def decisions(sketches: Sketches, config: DedupConfig) -> tuple[np.ndarray, float, dict[str, float]]:
    n = len(sketches)
    started = time.perf_counter()
    result = cluster_duplicates(sketches, np.zeros(n, np.int64), np.zeros(n), config)
    stats = {"candidates": result.candidate_pairs, "verified": result.verified_pairs,
             "false_positives": result.false_positive_pairs, "lsh_s": result.seconds_lsh,
             "verify_s": result.seconds_verification}
    return result.status.copy(), time.perf_counter() - started, stats


def datasketch_lsh(signatures: np.ndarray, bands: int, rows: int, seed: int) -> tuple[set[tuple[int, int]], float]:
    from datasketch import LeanMinHash, MinHashLSH

    started = time.perf_counter()
    lsh = MinHashLSH(num_perm=signatures.shape[1], params=(bands, rows))
    minhashes = [LeanMinHash(seed=seed, hashvalues=s, scheme="affine32") for s in signatures]
    with lsh.insertion_session() as session:
        for i, m in enumerate(minhashes):
            session.insert(i, m, check_duplication=False)
    pairs = {(min(i, j), max(i, j)) for i, m in enumerate(minhashes) for j in lsh.query(m) if i != j}
    return pairs, time.perf_counter() - started


# ---------------------------------------------------------------- peak RSS in a child process


def rss_child(n: int, kind: str) -> None:
    """Build signatures + LSH candidates for n generated documents, never holding their texts; print RSS."""
    config = DedupConfig()
    rng = random.Random(1)
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(30000)]
    bands, rows = lsh_bands(config.threshold, config.num_perm, recall_weight=config.recall_weight)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sketcher = Sketcher(config)
        store = SketchStore(Path(tmp), "rss", config.num_perm)
        lsh = None
        if kind == "datasketch":
            from datasketch import LeanMinHash, MinHashLSH

            lsh = MinHashLSH(num_perm=config.num_perm, params=(bands, rows))
        for start in range(0, n, BATCH):
            count = min(BATCH, n - start)
            docs = [" ".join(rng.choices(vocab, k=90))[:520] for _ in range(count)]
            exact, signatures, sets = sketcher.sketch(docs)
            if lsh is None:
                store.add([str(start + i) for i in range(count)], exact, signatures, sets)
            else:
                with lsh.insertion_session() as session:
                    for i in range(count):
                        session.insert(str(start + i), LeanMinHash(seed=config.seed, hashvalues=signatures[i],
                                                                   scheme="affine32"), check_duplication=False)
        if lsh is None:
            sketches = store.finish()
            keys = band_keys(sketches.signatures, bands, rows)
            pairs = candidate_pairs(keys, np.arange(n), config.bucket_pair_limit)
            extra = {"candidate_pairs": len(pairs)}
        else:
            extra = {}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"docs": n, "kind": kind, "peak_rss_mb": round(peak_mb), "seconds": round(
        time.perf_counter() - started, 1), **extra}))


def measure_rss(n: int, kind: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--rss-kind", kind],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_rss() -> dict:
    """RSS of a child that only imports what the measured children import (the floor)."""
    out = subprocess.run([sys.executable, __file__, "--rss-child", "0", "--rss-kind", "ours"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="dedup speed and memory")
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--rss-docs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the fast contenders (best time kept)")
    parser.add_argument("--datasketch-rss-docs", type=int, default=100_000)
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss-kind", default="ours", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child is not None:
        rss_child(args.rss_child, args.rss_kind)
        return

    # memory first, in fresh children, while this process is small: a child inherits the parent's peak
    # RSS at fork on Linux, so measuring later would report this process's size instead
    memory_lines = []
    if args.rss_docs:
        floor = baseline_rss()
        ours = measure_rss(args.rss_docs, "ours")
        memory_lines.append(
            f"\nPeak RSS, {ours['docs']:,} documents' signatures + LSH index (ours, texts never held): "
            f"{ours['peak_rss_mb']} MB (a child that only imports: {floor['peak_rss_mb']} MB; "
            f"{ours['seconds']} s, {ours['candidate_pairs']} candidate pairs).")
    if args.datasketch_rss_docs:
        theirs = measure_rss(args.datasketch_rss_docs, "datasketch")
        memory_lines.append(
            f"For comparison, datasketch MinHashLSH (LeanMinHash, in-memory storage) over "
            f"{theirs['docs']:,} documents: peak RSS {theirs['peak_rss_mb']} MB.")

    config = DedupConfig()
    docs = make_documents(args.docs)
    print(f"{len(docs)} documents, mean {np.mean([len(d) for d in docs]):.0f} characters; word "
          f"{config.ngram}-grams, num_perm {config.num_perm}, threshold {config.threshold}\n")
    Sketcher(config).sketch(docs[:10])  # build the word-character table and import datasketch first

    contenders: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("(a) naive: MinHash() + update() per shingle, xxh32", lambda: naive_signatures(docs, config)),
        ("(b) MinHash.bulk, xxh32", lambda: bulk_signatures(docs, config)),
        ("(b') MinHash.bulk, default SHA-1", lambda: bulk_signatures(docs, config, None)),
        ("(c) ours: vectorised numpy, xxh32", lambda: our_signatures(docs, config)),
    ]
    timings: dict[str, float] = {}
    signatures: dict[str, np.ndarray] = {}
    # the machine is shared: the fast contenders run `--repeat` times, interleaved, and keep their best time
    for round_ in range(args.repeat):
        for label, run in contenders:
            if round_ and label.startswith("(a)"):
                continue
            started = time.perf_counter()
            signatures[label] = run()
            timings[label] = min(timings.get(label, float("inf")), time.perf_counter() - started)
    ours_label = contenders[-1][0]

    with tempfile.TemporaryDirectory() as tmp:
        outcome = {label: decisions(sketches_with(docs, sig, config, Path(tmp)), config)
                   for label, sig in signatures.items()}
        unverified = decisions(sketches_with(docs, signatures[ours_label], config.model_copy(
            update={"verify": False}), Path(tmp)), config.model_copy(update={"verify": False}))

    ours_status = outcome[ours_label][0]
    print("| signatures | docs/s | ours is x faster | same signatures as ours | same keep/drop decisions | dropped |")
    print("|---|---:|---:|---|---|---:|")
    for label, _ in contenders:
        rate = len(docs) / timings[label]
        same_sig = np.array_equal(signatures[label], signatures[ours_label])
        status = outcome[label][0]
        same = np.array_equal(status, ours_status)
        agree = "yes" if same else f"no ({int(np.count_nonzero(status != ours_status))} differ)"
        print(f"| {label} | {rate:,.0f} | {timings[label] / timings[ours_label]:.1f} | "
              f"{'yes' if same_sig else 'no'} | {agree} | {int(np.count_nonzero(status))} |")

    stats = outcome[ours_label][2]
    print(f"\nDecision stage (ours, verification on): {outcome[ours_label][1]:.2f} s; LSH {stats['lsh_s']:.2f} s, "
          f"{stats['candidates']} candidate pairs, verification {stats['verify_s']:.2f} s "
          f"({stats['verified']} verified, {stats['false_positives']} false positives discarded).")
    ustats = unverified[2]
    print(f"Verification off: {unverified[1]:.2f} s, {int(np.count_nonzero(unverified[0]))} dropped "
          f"(bands/rows {lsh_bands(0.8, 128, recall_weight=0.5)} instead of "
          f"{lsh_bands(0.8, 128, recall_weight=0.9)}; {ustats['candidates']} candidate pairs).")

    bands, rows = lsh_bands(config.threshold, config.num_perm, recall_weight=config.recall_weight)
    sig = signatures[ours_label]
    started = time.perf_counter()
    ours_pairs = {tuple(p) for p in candidate_pairs(band_keys(sig, bands, rows), np.arange(len(sig)),
                                                    pair_limit=10**9).tolist()}
    ours_lsh_s = time.perf_counter() - started
    theirs_pairs, theirs_lsh_s = datasketch_lsh(sig, bands, rows, config.seed)
    print(f"\nLSH candidates ({bands} bands x {rows} rows): numpy band keys {ours_lsh_s:.2f} s vs datasketch "
          f"MinHashLSH insert+query {theirs_lsh_s:.2f} s ({theirs_lsh_s / ours_lsh_s:.1f}x); "
          f"same candidate pairs: {'yes' if ours_pairs == theirs_pairs else 'no'} ({len(ours_pairs)}).")
    print("\n".join(memory_lines))



if __name__ == "__main__":
    main()
