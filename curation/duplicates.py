"""Exact and near duplicates among one run's records: the text compared, its sketches (exact hash,
MinHash signature, shingle set), the clusters (union-find over exact groups and verified LSH pairs,
kept apart by conflict fields) and one record kept per cluster.

The only part of the dedup step that needs the whole dataset before deciding: `RunDuplicates` parks
the records on disk and keeps their sketches, then clusters and hands the records back.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

from assay.curation.dedup_index import Sketches, SketchStore
from assay.curation.minhash import (
    KeyedUnionFind,
    MinHasher,
    ShingleSets,
    UnionFind,
    band_keys,
    candidate_pairs,
    estimated_jaccard,
    jaccard,
    lsh_bands,
    normalise_text,
    shingle_sets,
)
from assay.curation.steps import Batch, Record, StepContext, record_text, strip_placeholders
from assay.schemas.dedup import ClusterExample, ClusterMember, DedupConfig, DedupReport

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
PREVIEW_CHARS = 160
REMOVED_PER_EXAMPLE = 3

KEEP, EXACT, NEAR = range(3)
REASONS = {EXACT: EXACT_DUPLICATE, NEAR: NEAR_DUPLICATE}

Drop = Callable[..., None]
"""`drop(record, reason, message, **details)`: the step's drop."""


# ---------------------------------------------------------------- text and sketches of records


def dedup_text(record: Record, config: DedupConfig) -> str:
    """The text compared for duplicates: the chosen turns, then any extra string fields."""
    text = record_text(record, tuple(config.roles) if config.roles is not None else None)
    extra = [record[f] for f in config.fields if isinstance(record.get(f), str)]
    return "\n\n".join([text, *extra]) if extra else text


def conflict_keys(records: Sequence[Record], config: DedupConfig) -> np.ndarray:
    """Per record, a hash of each `conflict_fields` value after normalisation; 0 where it is missing."""
    keys = np.zeros((len(records), len(config.conflict_fields)), dtype=np.uint64)
    n = config.normalize
    for row, record in enumerate(records):
        for col, name in enumerate(config.conflict_fields):
            value = record.get(name)
            if value is None or isinstance(value, (dict, list)):
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # 2020.0 (a column read by pandas) is the year 2020
            text = normalise_text(str(value), n.nfkc, n.casefold, True, n.strip_punctuation).strip()
            if text:
                keys[row, col] = xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogatepass")) or 1
    return keys


def preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


class Sketcher:
    """Turns texts into exact hashes, shingle sets and signatures with one config's settings."""

    def __init__(self, config: DedupConfig) -> None:
        self.config = config
        self.with_signatures = config.near or bool(config.against) or config.save_index is not None
        self.hasher = MinHasher(config.num_perm, config.seed) if self.with_signatures else None

    def settings(self) -> dict[str, Any]:
        """What a saved index must share with a run to be comparable (not the threshold: bands are re-cut)."""
        c = self.config
        return {"hash": "xxh32", "scheme": "affine32", "shingle": c.shingle, "ngram": c.ngram,
                "num_perm": c.num_perm, "seed": c.seed, "normalize": c.normalize.model_dump(),
                "roles": c.roles, "fields": c.fields}

    def _exact_texts(self, texts: Sequence[str]) -> list[str]:
        n = self.config.normalize
        return [normalise_text(t, n.nfkc, n.casefold, n.collapse_whitespace, n.strip_punctuation) for t in texts]

    @staticmethod
    def _exact(normalised: list[str]) -> np.ndarray:
        # EMPTY_TEXT_HASH (below) is this hash of an empty text: keep the two in step.
        return np.fromiter((xxhash.xxh3_64_intdigest(t.encode("utf-8", "surrogatepass")) for t in normalised),
                           dtype=np.uint64, count=len(normalised))

    def sketch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, ShingleSets]:
        normalised = self._exact_texts(texts)
        exact = self._exact(normalised)
        if self.hasher is None:
            empty = ShingleSets(np.empty(0, np.uint32), np.zeros(len(texts) + 1, np.int64))
            return exact, np.empty((len(texts), 0), np.uint32), empty
        n = self.config.normalize
        if any("<" in t for t in texts):  # PII placeholders are not shared content
            texts = [strip_placeholders(t) for t in texts]
            normalised = self._exact_texts(texts)
        if not n.collapse_whitespace and self.config.shingle == "char":  # char shingles see collapsed spaces
            normalised = [normalise_text(t, n.nfkc, n.casefold, True, n.strip_punctuation) for t in texts]
        sets = shingle_sets(normalised, self.config.shingle, self.config.ngram)
        return exact, self.hasher.signatures(sets), sets


EMPTY_TEXT_HASH = np.uint64(xxhash.xxh3_64_intdigest(b""))
"""The exact hash of an empty normalised text (never an exact duplicate of anything)."""


# ---------------------------------------------------------------- clustering


@dataclass
class Clusters:
    """Per record: its status, the record it duplicates, the similarity to it, and its cluster."""

    status: np.ndarray  # int8
    duplicate_of: np.ndarray  # int64, -1 when kept
    similarity: np.ndarray  # float32
    cluster: np.ndarray  # int64, -1 outside clusters of two or more
    candidate_pairs: int = 0
    verified_pairs: int = 0
    false_positive_pairs: int = 0
    conflicting_pairs: int = 0
    seconds_lsh: float = 0.0
    seconds_verification: float = 0.0


def _ranking_scores(lengths: np.ndarray, scores: np.ndarray, config: DedupConfig) -> np.ndarray:
    """Higher is kept first; 'first' ranks everyone equal so the earliest record wins."""
    if config.keep == "longest":
        return lengths.astype(np.float64)
    if config.keep == "field":
        return scores
    return np.zeros(len(lengths))


def cluster_duplicates(sketches: Sketches, lengths: np.ndarray, scores: np.ndarray, config: DedupConfig,
                       keys: np.ndarray | None = None) -> Clusters:
    """Exact groups and verified near-duplicate pairs, joined by union-find; one record kept per cluster.

    `keys` (see conflict_keys) keeps records with different conflict-field values out of one cluster.
    """
    n = len(sketches)
    result = Clusters(np.zeros(n, np.int8), np.full(n, -1, np.int64), np.zeros(n, np.float32),
                      np.full(n, -1, np.int64))
    union = KeyedUnionFind(keys) if keys is not None and keys.shape[1] else UnionFind(n)
    # An empty compared text (no turn of the chosen roles, or only punctuation when that is stripped)
    # says nothing about duplication.
    members = np.flatnonzero(sketches.exact != EMPTY_TEXT_HASH)
    if config.exact and len(members):
        order = members[np.argsort(sketches.exact[members], kind="stable")]
        new_group = np.concatenate(([True], sketches.exact[order[1:]] != sketches.exact[order[:-1]]))
        firsts = order[new_group]  # the earliest record of each exact group (the sort is stable)
        repeats = ~new_group
        # Each copy joins the group's first record; with conflict fields, a copy that cannot join it
        # tries the group's other representatives (one per conflict value seen so far) or becomes one.
        apart: dict[int, list[int]] = {}  # group's first record -> representatives besides it
        for i, j in zip(firsts[np.cumsum(new_group) - 1][repeats].tolist(), order[repeats].tolist(), strict=True):
            if union.union(i, j):
                continue
            result.conflicting_pairs += 1
            others = apart.setdefault(i, [])
            if not any(union.union(r, j) for r in others):
                others.append(j)
        # one record per exact group (per conflict value) goes on to the near search
        extra = np.asarray([r for others in apart.values() for r in others], dtype=firsts.dtype)
        members = np.sort(np.concatenate([firsts, extra]))
    if config.near and len(members):
        _link_near_duplicates(sketches, members[sketches.sets.sizes()[members] > 0], config, union, result)
    _choose_representatives(sketches, union.roots(), _ranking_scores(lengths, scores, config), config, result)
    return result


def _link_near_duplicates(sketches: Sketches, members: np.ndarray, config: DedupConfig, union: UnionFind,
                          result: Clusters) -> None:
    exact_done = config.exact  # exact copies were joined (or kept apart, and counted) already
    started = time.perf_counter()
    bands, rows = lsh_bands(config.threshold, config.num_perm, config.bands, config.rows,
                            config.recall_weight)
    keys = band_keys(np.asarray(sketches.signatures[members]), bands, rows)
    pairs = candidate_pairs(keys, members, config.bucket_pair_limit)
    result.candidate_pairs = len(pairs)
    checked = time.perf_counter()
    result.seconds_lsh = checked - started
    for i, j in pairs.tolist():
        if config.verify and jaccard(sketches.sets.get(i), sketches.sets.get(j)) < config.threshold:
            result.false_positive_pairs += 1
            continue
        result.verified_pairs += 1
        if not union.union(i, j) and not (exact_done and sketches.exact[i] == sketches.exact[j]):
            result.conflicting_pairs += 1
    result.seconds_verification = time.perf_counter() - checked if config.verify else 0.0


def _choose_representatives(sketches: Sketches, roots: np.ndarray, rank: np.ndarray, config: DedupConfig,
                            result: Clusters) -> None:
    sizes = np.bincount(roots, minlength=len(roots))
    clustered = np.flatnonzero(sizes[roots] > 1)
    if not len(clustered):
        return
    # within each cluster: highest rank first, then input order
    order = clustered[np.lexsort((clustered, -rank[clustered], roots[clustered]))]
    starts = np.concatenate(([True], roots[order[1:]] != roots[order[:-1]]))
    keeper_of_root = dict(zip(roots[order[starts]].tolist(), order[starts].tolist(), strict=True))
    cluster_of_root = {root: k for k, root in enumerate(sorted(keeper_of_root, key=lambda root: keeper_of_root[root]))}
    for i in clustered.tolist():
        root = int(roots[i])
        keeper = keeper_of_root[root]
        result.cluster[i] = cluster_of_root[root]
        if i == keeper:
            continue
        result.duplicate_of[i] = keeper
        if config.exact and sketches.exact[i] == sketches.exact[keeper]:
            result.status[i], result.similarity[i] = EXACT, 1.0
        else:
            result.status[i] = NEAR
            result.similarity[i] = (jaccard(sketches.sets.get(i), sketches.sets.get(keeper)) if config.verify
                                    else estimated_jaccard(sketches.signatures, i, keeper))


def _score(record: Record, name: str | None) -> float:
    value = record.get(name) if name else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return -math.inf  # records without a usable score lose to any that have one
    return float(value)


class RunDuplicates:
    """Collects the run's records and sketches batch by batch, then clusters them and emits the kept ones."""

    def __init__(self, config: DedupConfig, ctx: StepContext) -> None:
        self.config = config
        self._spill = ctx.spill("dedup")
        self._store = SketchStore(ctx.work_dir, "dedup-run", config.num_perm)
        self._lengths: list[int] = []
        self._scores: list[float] = []
        self._keys: list[np.ndarray] = []
        self.sketches: Sketches | None = None
        self.clusters: Clusters | None = None

    def add(self, records: Batch, texts: Sequence[str], exact: np.ndarray, signatures: np.ndarray,
            sets: ShingleSets) -> None:
        """Park records on disk and keep what clustering needs of them."""
        self._spill.write(records)
        self._store.add([str(r.get("id")) for r in records], exact, signatures, sets)
        self._lengths.extend(len(t) for t in texts)
        self._scores.extend(_score(r, self.config.keep_field) for r in records)
        self._keys.append(conflict_keys(records, self.config))

    def decide(self) -> Clusters:
        """Cluster everything added; from now on `emit` hands the records back."""
        self.sketches = self._store.finish()
        self.clusters = cluster_duplicates(self.sketches, np.asarray(self._lengths, np.int64),
                                           np.asarray(self._scores, np.float64), self.config,
                                           np.concatenate(self._keys) if self._keys else None)
        return self.clusters

    def emit(self, drop: Drop, batch_size: int, shown: dict[int, ClusterExample]) -> Iterator[Batch]:
        """The parked records in their order, duplicates dropped; members of the `shown` clusters are
        quoted in their examples."""
        assert self.sketches is not None and self.clusters is not None, "decide() first"
        sketches, clusters = self.sketches, self.clusters
        position = 0
        for batch in self._spill.read(batch_size):
            kept: Batch = []
            for record in batch:
                i = position
                position += 1
                status = int(clusters.status[i])
                if clusters.cluster[i] >= 0 and int(clusters.cluster[i]) in shown:
                    _add_example(shown[int(clusters.cluster[i])], record, status, clusters, i)
                if status == KEEP:
                    kept.append(record)
                    continue
                keeper = sketches.ids[int(clusters.duplicate_of[i])]
                similarity = round(float(clusters.similarity[i]), 4)
                kind = "exact" if status == EXACT else "near"
                drop(record, REASONS[status], f"{kind} duplicate of {keeper} (Jaccard {similarity})",
                     duplicate_of=keeper, similarity=similarity, cluster_id=int(clusters.cluster[i]))
            yield kept

    def summarise(self, report: DedupReport) -> None:
        """Counts, pair statistics, cluster sizes and (empty) examples of the largest clusters."""
        assert self.clusters is not None, "decide() first"
        c = self.clusters
        report.exact_duplicates = int(np.count_nonzero(c.status == EXACT))
        report.near_duplicates = int(np.count_nonzero(c.status == NEAR))
        report.candidate_pairs, report.verified_pairs = c.candidate_pairs, c.verified_pairs
        report.false_positive_pairs = c.false_positive_pairs
        report.conflicting_pairs = c.conflicting_pairs
        report.chained_removals = int(np.count_nonzero((c.status == NEAR) & (c.similarity < self.config.threshold)))
        report.seconds_lsh = round(c.seconds_lsh, 3)
        report.seconds_verification = round(c.seconds_verification, 3)
        in_clusters = c.cluster[c.cluster >= 0]
        sizes = np.bincount(in_clusters) if len(in_clusters) else np.empty(0, np.int64)
        report.clusters = len(sizes)
        report.cluster_sizes = {str(size): count for size, count in sorted(Counter(sizes.tolist()).items())}
        largest = sorted(range(len(sizes)), key=lambda k: (-int(sizes[k]), k))[: self.config.report_clusters]
        report.largest_clusters = [ClusterExample(cluster_id=k, size=int(sizes[k]), kept_id="", kept_preview="")
                                   for k in largest]

    def kept_rows(self) -> np.ndarray:
        assert self.clusters is not None, "decide() first"
        return np.flatnonzero(self.clusters.status == KEEP)

    def index_part(self) -> tuple[Sketches, np.ndarray]:
        """The kept records, for a saved index."""
        assert self.sketches is not None, "decide() first"
        return self.sketches, self.kept_rows()


def _add_example(example: ClusterExample, record: Record, status: int, clusters: Clusters, i: int) -> None:
    text = preview(record_text(record))
    if status == KEEP:
        example.kept_id, example.kept_preview = str(record.get("id")), text
    elif len(example.removed) < REMOVED_PER_EXAMPLE:
        example.removed.append(ClusterMember(id=str(record.get("id")), reason=REASONS[status],
                                             similarity=round(float(clusters.similarity[i]), 4), preview=text))
