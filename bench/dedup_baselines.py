"""Near-duplicate removal end to end against datasketch and rensa as their users would write it.

    .venv/bin/python bench/dedup_baselines.py                       # speed tables + memory trend
    .venv/bin/python bench/dedup_baselines.py --rss-sizes 0         # speed tables only

Data: generated documents of ~500 characters (Zipf-like vocabulary); a share (10%) are copies of an
earlier document with 0-3 words replaced, so their word 5-gram Jaccard with the source spreads around the
threshold (0.8). Ground truth: the exact Jaccard of every planted pair (and of copies of one source with
each other); records whose true cluster has an earlier member should go. Unplanted pairs of random
documents share almost no 5-gram, so a drop outside a planted cluster is a false positive.

Contenders, each keeping the first record of what it considers a duplicate group:
- datasketch `MinHash.update_batch` per document, or `MinHash.bulk` per batch of 512 (default SHA-1 hash,
  or xxh32, the faster hash its docs suggest), then `MinHashLSH(threshold=0.8, num_perm=128)` filled in an
  `insertion_session`, every document queried, and the candidate pairs joined into groups (connected
  components) - the usual MinHashLSH recipe; datasketch has no verification step.
- rensa 0.5 `RMinHashDeduplicator(threshold=0.8, num_perm=128, use_lsh=True)` with `add_pairs` (its
  documented dedup API; it checks each LSH candidate's estimated Jaccard against the threshold).
- Assay: the dedup step's own code (`Sketcher`, `SketchStore`, `cluster_duplicates`: exact hashes, LSH,
  verification of every candidate on its shingle sets, union-find).

Two timings per contender, both ending in keep/drop decisions: "raw text" includes each one's own
preprocessing (for the peers: lower-case, `\\w+` words, word 5-grams, as their docs do; Assay: its own
normaliser and tokeniser); "shared shingles" hands every contender the same UTF-8 word 5-grams (made once
by `assay.curation.minhash.shingles`, outside the clock), which each hashes itself. Times are CPU seconds
of this process (every thread counted; all contenders run in it), as the machine is shared; wall seconds
are shown too.

Memory: peak RSS of the whole decision run (signatures, LSH, verification, clustering) for growing
numbers of documents with 10% planted copies, each in a fresh child process; texts are generated batch by
batch and never held (the child keeps the last 20,000 originals to copy from, ~10 MB).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from assay.curation.dedup_index import SketchStore
from assay.curation.duplicates import Sketcher, cluster_duplicates
from assay.curation.minhash import MinHasher, ShingleSets, normalise_text, shingles, xxh32_ranges
from assay.schemas.dedup import DedupConfig

BATCH = 512
NGRAM = 5
THRESHOLD = 0.8
NUM_PERM = 128
_WORDS = re.compile(r"\w+")
# rensa is optional (`pip install 'assay[bench]'`); without it its rows are left out, saying so
HAVE_RENSA = importlib.util.find_spec("rensa") is not None


# ---------------------------------------------------------------- data and ground truth


def _vocabulary(seed: int) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(30000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    return vocab, weights / weights.sum()


def document_stream(n: int, seed: int = 0, copy_share: float = 0.1, recent: int = 20_000
                    ) -> Iterator[tuple[list[str], list[int]]]:
    """Batches of (texts, source index or -1): originals, and copies of a recent original with 0-3 edits."""
    vocab, p = _vocabulary(seed)
    gen = np.random.default_rng(seed)
    originals: list[tuple[int, str]] = []  # ring of recent originals to copy from
    done = 0
    while done < n:
        count = min(BATCH, n - done)
        words_of = gen.choice(len(vocab), size=(count, 90), p=p).tolist()
        is_copy = (gen.random(count) < copy_share).tolist()
        texts, sources = [], []
        for k in range(count):
            if originals and is_copy[k]:
                source, text = originals[int(gen.integers(len(originals)))]
                words = text.split()
                for _ in range(int(gen.integers(4))):
                    words[int(gen.integers(len(words)))] = vocab[int(gen.integers(len(vocab)))]
                texts.append(" ".join(words))
                sources.append(source)
            else:
                text = " ".join(map(vocab.__getitem__, words_of[k]))[:520].rsplit(" ", 1)[0] + "."
                texts.append(text)
                sources.append(-1)
                if len(originals) < recent:
                    originals.append((done + k, text))
                else:
                    originals[int(gen.integers(recent))] = (done + k, text)
        done += count
        yield texts, sources


def make_corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    texts: list[str] = []
    sources: list[int] = []
    for batch, batch_sources in document_stream(n, seed):
        texts += batch
        sources += batch_sources
    return texts, np.asarray(sources)


def _shingle_set(text: str) -> set[bytes]:
    return set(shingles(normalise_text(text), "word", NGRAM))


def should_drop(texts: list[str], sources: np.ndarray) -> np.ndarray:
    """True for records whose true near-duplicate cluster (exact Jaccard >= threshold) has an earlier member."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    groups: dict[int, list[int]] = {}
    for i, s in enumerate(sources.tolist()):
        if s >= 0:
            groups.setdefault(s, [s]).append(i)
    pairs = []
    for members in groups.values():
        sets = {i: _shingle_set(texts[i]) for i in members}
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1:]:
                if len(sets[a] & sets[b]) >= THRESHOLD * len(sets[a] | sets[b]):
                    pairs.append((a, b))
    return _drops_from_pairs(len(texts), pairs, coo_matrix, connected_components)


def _drops_from_pairs(n: int, pairs: list[tuple[int, int]] | np.ndarray, coo_matrix: Any = None,
                      connected_components: Any = None) -> np.ndarray:
    """Connected components of the pairs; every member but the first (lowest index) of each is dropped."""
    if coo_matrix is None:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
    drop = np.zeros(n, dtype=bool)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return drop
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    drop[first[labels] != np.arange(n)] = True
    return drop


# ---------------------------------------------------------------- each peer's own preprocessing


def word_ngrams(text: str) -> list[str]:
    """What a datasketch or rensa user writes: lower-case, \\w+ words, word 5-grams."""
    words = _WORDS.findall(text.lower())
    if len(words) < NGRAM:
        return [" ".join(words)] if words else []
    return [" ".join(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)]


# ---------------------------------------------------------------- datasketch


def datasketch_decisions(minhashes: list[Any]) -> np.ndarray:
    """MinHashLSH at the threshold (datasketch's own bands), every document queried, groups joined."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    with lsh.insertion_session() as session:
        for i, m in enumerate(minhashes):
            session.insert(i, m, check_duplication=False)
    pairs = [(i, j) for i, m in enumerate(minhashes) for j in lsh.query(m) if j > i]
    return _drops_from_pairs(len(minhashes), pairs)


def datasketch_update_batch(token_lists: Iterator[list[bytes]], hashfunc: Callable | None) -> np.ndarray:
    from datasketch import MinHash

    kwargs = {"hashfunc": hashfunc} if hashfunc else {}
    minhashes = []
    for tokens in token_lists:
        m = MinHash(num_perm=NUM_PERM, **kwargs)
        m.update_batch(tokens)
        minhashes.append(m)
    return datasketch_decisions(minhashes)


def datasketch_bulk(token_lists: list[list[bytes]], hashfunc: Callable | None) -> np.ndarray:
    from datasketch import MinHash

    kwargs = {"hashfunc": hashfunc} if hashfunc else {}
    minhashes = []
    for start in range(0, len(token_lists), BATCH):
        minhashes += MinHash.bulk(token_lists[start:start + BATCH], num_perm=NUM_PERM, **kwargs)
    return datasketch_decisions(minhashes)


def _encoded_ngrams(texts: list[str]) -> Iterator[list[bytes]]:
    return ([s.encode("utf-8") for s in word_ngrams(t)] for t in texts)


# ---------------------------------------------------------------- rensa


def rensa_dedup(token_lists: Iterator[list[Any]]) -> np.ndarray:
    from rensa import RMinHashDeduplicator

    dedup = RMinHashDeduplicator(threshold=THRESHOLD, num_perm=NUM_PERM, use_lsh=True)
    keep = dedup.add_pairs((str(i), tokens) for i, tokens in enumerate(token_lists))
    return ~np.asarray(keep, dtype=bool)


# ---------------------------------------------------------------- Assay


def assay_decisions(sketch_batches: Iterator[tuple[np.ndarray, np.ndarray, ShingleSets]], n: int,
                    config: DedupConfig, folder: Path, on_sketched: Callable[[], None] | None = None) -> np.ndarray:
    store = SketchStore(folder, "bench", config.num_perm)
    done = 0
    for exact, signatures, sets in sketch_batches:
        store.add([str(i) for i in range(done, done + len(exact))], exact, signatures, sets)
        done += len(exact)
    sketches = store.finish()
    if on_sketched is not None:
        on_sketched()
    result = cluster_duplicates(sketches, np.zeros(n, np.int64), np.zeros(n), config)
    return result.status != 0


def assay_from_texts(texts: list[str], config: DedupConfig, folder: Path) -> np.ndarray:
    sketcher = Sketcher(config)
    batches = (sketcher.sketch(texts[s:s + BATCH]) for s in range(0, len(texts), BATCH))
    return assay_decisions(batches, len(texts), config, folder)


def assay_sets_from_shingles(token_lists: list[list[bytes]]) -> ShingleSets:
    """Assay's unique sorted xxh32 sets from given byte shingles: one buffer, hashed at once in numpy."""
    lengths = np.fromiter((len(s) for tokens in token_lists for s in tokens), dtype=np.int64)
    buffer = np.frombuffer(b"".join(s for tokens in token_lists for s in tokens), dtype=np.uint8)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    counts = np.fromiter((len(tokens) for tokens in token_lists), dtype=np.int64, count=len(token_lists))
    docs = np.repeat(np.arange(len(token_lists), dtype=np.uint64), counts)
    keys = np.sort((docs << np.uint64(32)) | xxh32_ranges(buffer, starts, lengths).astype(np.uint64))
    if len(keys):
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    offsets = np.zeros(len(token_lists) + 1, dtype=np.int64)
    offsets[1:] = np.searchsorted(keys >> np.uint64(32), np.arange(len(token_lists), dtype=np.uint64), side="right")
    return ShingleSets((keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), offsets)


def assay_from_shingles(token_lists: list[list[bytes]], config: DedupConfig, folder: Path) -> np.ndarray:
    hasher = MinHasher(config.num_perm, config.seed)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray, ShingleSets]]:
        for start in range(0, len(token_lists), BATCH):
            part = token_lists[start:start + BATCH]
            sets = assay_sets_from_shingles(part)
            # exact-duplicate hashes from the shingles (what the texts are not given here)
            exact = np.fromiter((xxhash.xxh3_64_intdigest(b"\n".join(t)) for t in part), np.uint64, len(part))
            yield exact, hasher.signatures(sets), sets

    return assay_decisions(batches(), len(token_lists), config, folder)


# ---------------------------------------------------------------- scoring and the speed tables


def score(drop: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, float, float]:
    """(dropped, correct drops, wrong drops, precision, recall) against the true keep/drop decisions."""
    correct = int(np.count_nonzero(drop & truth))
    wrong = int(np.count_nonzero(drop & ~truth))
    dropped = correct + wrong
    return (dropped, correct, wrong, correct / dropped if dropped else 1.0,
            correct / int(np.count_nonzero(truth)) if truth.any() else 1.0)


def time_contenders(contenders: list[tuple[str, Callable[[], np.ndarray], bool]], repeat: int
                    ) -> dict[str, tuple[float, float, np.ndarray]]:
    """(CPU seconds, wall seconds, decisions): the run with the least CPU time of `repeat` interleaved runs
    (slow ones, marked False, run once). CPU time of this process counts every thread (rensa's too)."""
    out: dict[str, tuple[float, float, np.ndarray]] = {}
    for round_ in range(repeat):
        for label, run, fast in contenders:
            if round_ and not fast:
                continue
            started, cpu_started = time.perf_counter(), time.process_time()
            drop = run()
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            if label not in out or cpu < out[label][0]:
                out[label] = (cpu, seconds, drop)
            print(f"  round {round_ + 1} {label}: {seconds:.2f} s, {cpu:.2f} CPU s", file=sys.stderr)
    return out


def print_table(title: str, results: dict[str, tuple[float, float, np.ndarray]], truth: np.ndarray,
                ours: str) -> None:
    n = len(truth)
    print(f"\n{title}\n")
    print("| contender | CPU s | wall s | docs per CPU s | Assay is x faster (CPU) | dropped | wrong drops | "
          "precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, (cpu, seconds, drop) in results.items():
        dropped, _, wrong, precision, recall = score(drop, truth)
        print(f"| {label} | {cpu:.2f} | {seconds:.2f} | {n / cpu:,.0f} | {cpu / results[ours][0]:.2f} | "
              f"{dropped} | {wrong} | {precision:.3f} | {recall:.3f} |")


def speed(args: argparse.Namespace) -> None:
    config = DedupConfig()
    texts, sources = make_corpus(args.docs)
    truth = should_drop(texts, sources)
    print(f"{len(texts):,} documents (mean {np.mean([len(t) for t in texts]):.0f} characters), "
          f"{int((sources >= 0).sum()):,} planted copies, {int(truth.sum()):,} should go (true Jaccard of word "
          f"5-grams >= {THRESHOLD} with an earlier member of their cluster); num_perm {NUM_PERM}.")
    Sketcher(config).sketch(texts[:10])  # import and table set-up outside the clock
    assay_label = "Assay (dedup step: exact + LSH + verification + union-find)"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raw: list[tuple[str, Callable[[], np.ndarray], bool]] = [
            ("datasketch update_batch, SHA-1 + MinHashLSH", lambda: datasketch_update_batch(
                _encoded_ngrams(texts), None), False),
            ("datasketch MinHash.bulk, SHA-1 + MinHashLSH", lambda: datasketch_bulk(
                list(_encoded_ngrams(texts)), None), True),
            ("datasketch MinHash.bulk, xxh32 + MinHashLSH", lambda: datasketch_bulk(
                list(_encoded_ngrams(texts)), xxhash.xxh32_intdigest), True),
            ("rensa RMinHashDeduplicator.add_pairs", lambda: rensa_dedup(word_ngrams(t) for t in texts), True),
            (assay_label, lambda: assay_from_texts(texts, config, folder), True),
        ]
        if not HAVE_RENSA:
            print("rensa is not installed (pip install 'assay[bench]'): its rows are left out.")
            raw = [c for c in raw if not c[0].startswith("rensa")]
        print_table("From raw text (each contender's own preprocessing):", time_contenders(raw, args.repeat),
                    truth, assay_label)

        shared = [shingles(normalise_text(t), "word", NGRAM) for t in texts]
        on_shared: list[tuple[str, Callable[[], np.ndarray], bool]] = [
            ("datasketch update_batch, xxh32 + MinHashLSH", lambda: datasketch_update_batch(
                iter(shared), xxhash.xxh32_intdigest), False),
            ("datasketch MinHash.bulk, xxh32 + MinHashLSH", lambda: datasketch_bulk(
                shared, xxhash.xxh32_intdigest), True),
            ("rensa RMinHashDeduplicator.add_pairs", lambda: rensa_dedup(iter(shared)), True),
            (assay_label, lambda: assay_from_shingles(shared, config, folder), True),
        ]
        on_shared = [c for c in on_shared if HAVE_RENSA or not c[0].startswith("rensa")]
        print_table("From shared shingles (the same UTF-8 word 5-grams for all; each hashes them itself):",
                    time_contenders(on_shared, args.repeat), truth, assay_label)


# ---------------------------------------------------------------- memory in a child process


class _TimedStream:
    """The document stream, counting planted copies and the seconds spent generating (not measured)."""

    def __init__(self, n: int) -> None:
        self._stream = document_stream(n, seed=1)
        self.seconds = 0.0
        self.planted = 0

    def __iter__(self) -> Iterator[list[str]]:
        while True:
            started = time.perf_counter()
            try:
                texts, sources = next(self._stream)
            except StopIteration:
                return
            self.seconds += time.perf_counter() - started
            self.planted += sum(s >= 0 for s in sources)
            yield texts


def rss_child(n: int, kind: str) -> None:
    """One contender's whole decision run over n streamed documents; prints peak RSS and counts as JSON."""
    config = DedupConfig()
    stream = _TimedStream(n)
    started = time.perf_counter()
    drop = np.zeros(0, dtype=bool)
    sketched_peak: list[float] = []  # Assay: peak RSS once every document is sketched, before clustering
    # every child imports all contenders' libraries, so the imports-only child (n = 0) is a common floor
    import datasketch  # noqa: F401
    import scipy.sparse.csgraph  # noqa: F401

    if HAVE_RENSA:
        import rensa  # noqa: F401
    Sketcher(config)
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "assay" and n:
            sketcher = Sketcher(config)
            drop = assay_decisions((sketcher.sketch(texts) for texts in stream), n, config, Path(tmp),
                                   lambda: sketched_peak.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
        elif kind == "rensa" and n:
            from rensa import RMinHashDeduplicator

            dedup = RMinHashDeduplicator(threshold=THRESHOLD, num_perm=NUM_PERM, use_lsh=True)
            keeps: list[bool] = []
            for texts in stream:
                keeps += dedup.add_pairs((str(len(keeps) + i), word_ngrams(t)) for i, t in enumerate(texts))
            drop = ~np.asarray(keeps, dtype=bool)
        elif kind == "datasketch" and n:
            from datasketch import MinHash

            minhashes: list[Any] = []
            for texts in stream:
                minhashes += MinHash.bulk([[s.encode() for s in word_ngrams(t)] for t in texts], num_perm=NUM_PERM,
                                          hashfunc=xxhash.xxh32_intdigest)
            drop = datasketch_decisions(minhashes)
        elif n:
            raise SystemExit(f"unknown kind {kind}")
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"docs": n, "kind": kind, "peak_rss_mb": round(peak_mb), "planted": stream.planted,
                      "dropped": int(np.count_nonzero(drop)), "seconds": round(wall - stream.seconds, 1),
                      "generation_seconds": round(stream.seconds, 1),
                      "peak_rss_sketched_mb": round(sketched_peak[0] / 1024) if sketched_peak else None}))


def measure_rss(n: int, kind: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--rss-kind", kind],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.rss_sizes.split(",") if int(s)]
    kinds = [k for k in args.rss_kinds.split(",") if k and (HAVE_RENSA or k != "rensa")]
    limits = {"datasketch": args.datasketch_max}
    print("\nPeak RSS of the whole decision run (fresh child per row; imports-only floor in the first row):\n")
    print("| contender | documents | peak RSS MB | MB per 100k documents above the floor | MB per 100k since the "
          "previous row | planted copies | dropped | seconds in the contender | peak RSS MB before clustering |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    floor = measure_rss(0, "assay")
    print(f"| (imports only) | 0 | {floor['peak_rss_mb']} | | | | | | |")
    for kind in kinds:
        previous = (0, floor["peak_rss_mb"])
        for n in sizes:
            if n > limits.get(kind, n):
                continue
            r = measure_rss(n, kind)
            per = (r["peak_rss_mb"] - floor["peak_rss_mb"]) / (n / 100_000)
            slope = (r["peak_rss_mb"] - previous[1]) / ((n - previous[0]) / 100_000)
            previous = (n, r["peak_rss_mb"])
            print(f"| {kind} | {n:,} | {r['peak_rss_mb']} | {per:.0f} | {slope:.0f} | {r['planted']:,} | "
                  f"{r['dropped']:,} | {r['seconds']} | {r.get('peak_rss_sketched_mb') or '-'} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=2, help="interleaved runs of the fast contenders (best kept)")
    parser.add_argument("--rss-sizes", default="100000,250000,500000,1000000")
    parser.add_argument("--rss-kinds", default="assay,rensa,datasketch")
    parser.add_argument("--datasketch-max", type=int, default=100_000, help="largest datasketch memory run")
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss-kind", default="assay", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child is not None:
        rss_child(args.rss_child, args.rss_kind)
        return
    with open("/proc/loadavg") as f:
        print(f"load average before: {' '.join(f.read().split()[:3])}")
    # memory first, while this process is small: a child started later would inherit this process's
    # peak RSS (Linux keeps ru_maxrss across fork and exec)
    if args.rss_sizes.strip("0,"):
        memory(args)
    if args.docs:
        speed(args)
    with open("/proc/loadavg") as f:
        print(f"\nload average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
