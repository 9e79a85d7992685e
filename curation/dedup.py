"""The dedup step: exact and near duplicates (MinHash LSH, verified), duplicates of a corpus, contamination."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from assay.curation.contamination import ContaminationMatch, Decontaminator
from assay.curation.dedup_index import (
    CorpusLookup,
    CorpusMatch,
    Sketches,
    SketchStore,
    is_index_folder,
    load_index,
    save_index,
)
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
from assay.curation.steps import Batch, Record, SpillFile, Step, StepConfigError, record_text
from assay.schemas.dedup import ClusterExample, ClusterMember, ContaminationHits, DedupConfig, DedupReport

log = logging.getLogger("assay.dedup")

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
DUPLICATE_OF_CORPUS = "duplicate_of_corpus"
CONTAMINATED = "contaminated"
PREVIEW_CHARS = 160
REMOVED_PER_EXAMPLE = 3

_KEEP, _EXACT, _NEAR, _CORPUS, _CONTAMINATED = range(5)
_REASONS = {_EXACT: EXACT_DUPLICATE, _NEAR: NEAR_DUPLICATE, _CORPUS: DUPLICATE_OF_CORPUS,
            _CONTAMINATED: CONTAMINATED}


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

    def exact_hashes(self, texts: Sequence[str]) -> np.ndarray:
        return self._exact(self._exact_texts(texts))

    def _exact_texts(self, texts: Sequence[str]) -> list[str]:
        n = self.config.normalize
        return [normalise_text(t, n.nfkc, n.casefold, n.collapse_whitespace, n.strip_punctuation) for t in texts]

    @staticmethod
    def _exact(normalised: list[str]) -> np.ndarray:
        # Keep in step with EMPTY_TEXT_HASH below.
        return np.fromiter((xxhash.xxh3_64_intdigest(t.encode("utf-8", "surrogatepass")) for t in normalised),
                           dtype=np.uint64, count=len(normalised))

    def sketch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, ShingleSets]:
        normalised = self._exact_texts(texts)
        exact = self._exact(normalised)
        if self.hasher is None:
            empty = ShingleSets(np.empty(0, np.uint32), np.zeros(len(texts) + 1, np.int64))
            return exact, np.empty((len(texts), 0), np.uint32), empty
        n = self.config.normalize
        if not n.collapse_whitespace and self.config.shingle == "char":  # char shingles see collapsed spaces
            normalised = [normalise_text(t, n.nfkc, n.casefold, True, n.strip_punctuation) for t in texts]
        sets = shingle_sets(normalised, self.config.shingle, self.config.ngram)
        return exact, self.hasher.signatures(sets), sets


EMPTY_TEXT_HASH = np.uint64(xxhash.xxh3_64_intdigest(b""))
"""The exact hash of an empty normalised text (never an exact duplicate of anything)."""


def sketch_dataset(path: Path, sketcher: Sketcher, work_dir: Path, name: str, batch_size: int) -> Sketches:
    """Sketches of every valid record of a dataset file (a curated corpus given with --against)."""
    from assay.curation.validate import Validator
    from assay.schemas.validation import ValidateConfig

    store = SketchStore(work_dir, name, sketcher.config.num_perm)
    validator = Validator(path, ValidateConfig.model_validate({"reject_duplicate_ids": False, "require_assistant": False}))
    for valid, bad in validator.batches(batch_size):
        if bad:
            log.warning("%s: %d records of the corpus are invalid and ignored", path, len(bad))
        if valid:
            texts = [dedup_text(r, sketcher.config) for r in valid]
            store.add([str(r.get("id")) for r in valid], *sketcher.sketch(texts))
    return store.finish()


# ---------------------------------------------------------------- clustering the run's own records


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


def cluster_duplicates(sketches: Sketches, eligible: np.ndarray, lengths: np.ndarray, scores: np.ndarray,
                       config: DedupConfig, keys: np.ndarray | None = None) -> Clusters:
    """Exact groups and verified near-duplicate pairs, joined by union-find; one record kept per cluster.

    `keys` (see conflict_keys) keeps records with different conflict-field values out of one cluster.
    """
    n = len(sketches)
    result = Clusters(np.zeros(n, np.int8), np.full(n, -1, np.int64), np.zeros(n, np.float32),
                      np.full(n, -1, np.int64))
    union = KeyedUnionFind(keys) if keys is not None and keys.shape[1] else UnionFind(n)
    # An empty compared text (no turn of the chosen roles, or only punctuation when that is stripped)
    # says nothing about duplication.
    members = np.flatnonzero(eligible & (sketches.exact != EMPTY_TEXT_HASH))
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
            result.status[i], result.similarity[i] = _EXACT, 1.0
        else:
            result.status[i] = _NEAR
            result.similarity[i] = (jaccard(sketches.sets.get(i), sketches.sets.get(keeper)) if config.verify
                                    else estimated_jaccard(sketches.signatures, i, keeper))


# ---------------------------------------------------------------- the step


@dataclass
class _Flag:
    """Why a record was removed before clustering (contamination, corpus duplicate), for its rejection."""

    status: int
    record_id: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def _score(record: Record, name: str | None) -> float:
    value = record.get(name) if name else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return -math.inf  # records without a usable score lose to any that have one
    return float(value)


class DedupStep(Step[DedupConfig]):
    name = "dedup"

    def __init__(self, config: DedupConfig) -> None:
        super().__init__(config)
        self.sketcher = Sketcher(self.config)
        self.report = DedupReport(shingle=self.config.shingle, ngram=self.config.ngram,
                                  num_perm=self.config.num_perm, threshold=self.config.threshold,
                                  keep=self.config.keep if self.config.keep != "field"
                                  else f"field:{self.config.keep_field}", verify=self.config.verify)
        if self.config.near or self.config.against:
            bands, rows = lsh_bands(self.config.threshold, self.config.num_perm, self.config.bands,
                                    self.config.rows, self.config.recall_weight)
            self.report.bands, self.report.rows = bands, rows
            log.info("dedup: MinHash num_perm=%d, threshold=%.2f -> LSH %d bands x %d rows (%s %d-grams)",
                     self.config.num_perm, self.config.threshold, bands, rows, self.config.shingle,
                     self.config.ngram)
        self._corpora: list[tuple[str, Sketches, CorpusLookup]] = []
        self._contamination: Decontaminator | None = None

    # -- setup ---------------------------------------------------------------------------------
    def _load_corpora(self) -> None:
        for number, raw in enumerate(self.config.against):
            path = Path(raw)
            if is_index_folder(path):
                sketches = load_index(path, self.sketcher.settings())
            elif path.is_file():
                sketches = sketch_dataset(path, self.sketcher, self.ctx.work_dir, f"corpus-{number}",
                                          self.ctx.batch_size)
            else:
                raise StepConfigError(f"--against {path}: neither a dataset file nor a saved dedup index folder "
                                 f"(one holds index.json)")
            lookup = CorpusLookup(sketches, self.report.bands, self.report.rows, self.config.threshold,
                                  self.config.verify, self.config.bucket_pair_limit)
            self._corpora.append((str(path), sketches, lookup))
            self.report.corpus_paths.append(str(path))
            self.report.corpus_records += len(sketches)

    def _load_benchmarks(self) -> None:
        c = self.config
        if c.decontaminate:
            started = time.perf_counter()
            self._contamination = Decontaminator.build(
                c.decontaminate, c.contamination_method, c.contamination_ngram, c.contamination_min_words,
                c.contamination_max_items, c.contamination_minhash_ngram, c.contamination_minhash_threshold,
                c.contamination_sketch_size, c.contamination_minhash_min_shared)
            self.report.contamination_method = c.contamination_method
            self.report.seconds_contamination += time.perf_counter() - started

    # -- pass 1: sketch everything, flag contamination and corpus duplicates ----------------------
    def _absorb(self, batch: Batch, texts: list[str], exact: np.ndarray, signatures: np.ndarray, sets: Any,
                spill: SpillFile, store: SketchStore, lengths: list[int], scores: list[float],
                flags: dict[int, _Flag]) -> None:
        """Record one sketched batch: park its records, flag corpus/benchmark hits, keep its sketches."""
        spill.write(batch)
        ids = [str(r.get("id")) for r in batch]
        self._flag(texts, ids, exact, signatures, sets, len(lengths), flags)
        store.add(ids, exact, signatures, sets)
        lengths.extend(len(t) for t in texts)
        scores.extend(_score(r, self.config.keep_field) for r in batch)

    def _flag(self, texts: list[str], ids: list[str], exact: np.ndarray, signatures: np.ndarray,
              sets: ShingleSets, offset: int, flags: dict[int, _Flag]) -> None:
        if self._contamination is not None:
            started = time.perf_counter()
            for i, hit in enumerate(self._contamination.match(texts)):
                if hit is not None:
                    flags[offset + i] = _contaminated(hit, ids[i])
            self.report.seconds_contamination += time.perf_counter() - started
        for path, corpus, lookup in self._corpora:
            matches = lookup.match(exact, signatures, sets, self.config.exact, self.config.near)
            for i, match in enumerate(matches):
                if match is not None and offset + i not in flags:
                    flags[offset + i] = _corpus_duplicate(match, corpus, path, ids[i])

    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        self._load_corpora()
        self._load_benchmarks()
        spill = self.ctx.spill("dedup")
        store = SketchStore(self.ctx.work_dir, "dedup-run", self.config.num_perm)
        lengths: list[int] = []
        scores: list[float] = []
        flags: dict[int, _Flag] = {}
        keys: list[np.ndarray] = []
        sketch_seconds = 0.0
        def sketch(records: Batch) -> tuple[list[str], Any]:
            texts = [dedup_text(r, self.config) for r in records]
            return texts, self.sketcher.sketch(texts)

        for whole in batches:
            started = time.perf_counter()
            pairs = self.processable(whole, sketch)
            sketch_seconds += time.perf_counter() - started
            for batch, (texts, (exact, signatures, sets)) in pairs:
                self._absorb(batch, texts, exact, signatures, sets, spill, store, lengths, scores, flags)
                keys.append(conflict_keys(batch, self.config))
        sketches = store.finish()

        self.report.seconds_signatures = round(sketch_seconds, 3)

        eligible = np.ones(len(sketches), dtype=bool)
        eligible[list(flags)] = False
        clusters = cluster_duplicates(sketches, eligible, np.asarray(lengths, np.int64),
                                      np.asarray(scores, np.float64), self.config,
                                      np.concatenate(keys) if keys else None)
        for i, flag in flags.items():
            clusters.status[i] = flag.status
        self._summarise(clusters, flags)
        yield from self._emit(spill.read(self.ctx.batch_size), sketches, clusters, flags)
        self._save_index(sketches, clusters)

    # -- pass 2: hand on the kept records, reject the others ------------------------------------
    def _emit(self, batches: Iterator[Batch], sketches: Sketches, clusters: Clusters,
              flags: dict[int, _Flag]) -> Iterator[Batch]:
        shown = {ex.cluster_id: ex for ex in self.report.largest_clusters}
        position = 0
        for batch in batches:
            kept: Batch = []
            for record in batch:
                i = position
                position += 1
                status = int(clusters.status[i])
                if clusters.cluster[i] >= 0 and int(clusters.cluster[i]) in shown:
                    self._add_example(shown[int(clusters.cluster[i])], record, status, clusters, i)
                if status == _KEEP:
                    kept.append(record)
                elif i in flags:
                    self.drop(record, _REASONS[status], flags[i].message, **flags[i].details)
                else:
                    keeper = sketches.ids[int(clusters.duplicate_of[i])]
                    similarity = round(float(clusters.similarity[i]), 4)
                    kind = "exact" if status == _EXACT else "near"
                    self.drop(record, _REASONS[status], f"{kind} duplicate of {keeper} (Jaccard {similarity})",
                              duplicate_of=keeper, similarity=similarity, cluster_id=int(clusters.cluster[i]))
            yield kept

    def _add_example(self, example: ClusterExample, record: Record, status: int, clusters: Clusters,
                     i: int) -> None:
        text = preview(record_text(record))
        if status == _KEEP:
            example.kept_id, example.kept_preview = str(record.get("id")), text
        elif status in (_EXACT, _NEAR) and len(example.removed) < REMOVED_PER_EXAMPLE:
            example.removed.append(ClusterMember(id=str(record.get("id")), reason=_REASONS[status],
                                                 similarity=round(float(clusters.similarity[i]), 4),
                                                 preview=text))

    def _summarise(self, clusters: Clusters, flags: dict[int, _Flag]) -> None:
        r = self.report
        status = clusters.status
        r.records_in = len(status)
        r.kept = int(np.count_nonzero(status == _KEEP))
        r.exact_duplicates = int(np.count_nonzero(status == _EXACT))
        r.near_duplicates = int(np.count_nonzero(status == _NEAR))
        r.corpus_duplicates = int(np.count_nonzero(status == _CORPUS))
        r.contaminated = int(np.count_nonzero(status == _CONTAMINATED))
        r.candidate_pairs, r.verified_pairs = clusters.candidate_pairs, clusters.verified_pairs
        r.false_positive_pairs = clusters.false_positive_pairs
        r.conflicting_pairs = clusters.conflicting_pairs
        r.chained_removals = int(np.count_nonzero((status == _NEAR) & (clusters.similarity < self.config.threshold)))
        r.seconds_lsh = round(clusters.seconds_lsh, 3)
        r.seconds_verification = round(clusters.seconds_verification, 3)
        in_clusters = clusters.cluster[clusters.cluster >= 0]
        sizes = np.bincount(in_clusters) if len(in_clusters) else np.empty(0, np.int64)
        r.clusters = len(sizes)
        r.cluster_sizes = {str(size): count for size, count in sorted(Counter(sizes.tolist()).items())}
        largest = sorted(range(len(sizes)), key=lambda c: (-int(sizes[c]), c))[: self.config.report_clusters]
        r.largest_clusters = [ClusterExample(cluster_id=c, size=int(sizes[c]), kept_id="", kept_preview="")
                              for c in largest]
        r.contamination = _contamination_hits(flags, self._contamination)
        if r.candidate_pairs:
            log.info("dedup: %d candidate pairs, %d verified, %d LSH false positives discarded",
                     r.candidate_pairs, r.verified_pairs, r.false_positive_pairs)

    def _save_index(self, sketches: Sketches, clusters: Clusters) -> None:
        if self.config.save_index is None:
            return
        parts = [(corpus, np.arange(len(corpus))) for _, corpus, _ in self._corpora]
        parts.append((sketches, np.flatnonzero(clusters.status == _KEEP)))
        self.report.index_records = save_index(self.config.save_index, parts, self.sketcher.settings())
        self.report.index_saved = str(self.config.save_index)

    def report_section(self) -> DedupReport:
        return self.report


def _contaminated(hit: ContaminationMatch, record_id: str) -> _Flag:
    return _Flag(_CONTAMINATED, record_id, hit.message(), hit.details())


def _corpus_duplicate(match: CorpusMatch, corpus: Sketches, path: str, record_id: str) -> _Flag:
    kept_id = corpus.ids[match.index]
    similarity = round(match.similarity, 4)
    kind = "exact" if match.exact else "near"
    return _Flag(_CORPUS, record_id, f"{kind} duplicate of corpus record {kept_id} (Jaccard {similarity})",
                 {"duplicate_of": kept_id, "similarity": similarity, "corpus": path, "match": kind})


def _contamination_hits(flags: dict[int, _Flag], index: Decontaminator | None) -> list[ContaminationHits]:
    if index is None:
        return []
    hits = {name: ContaminationHits(benchmark=name, items=count)
            for name, count in sorted(index.items_per_benchmark.items())}
    items_hit: dict[str, set[str]] = {name: set() for name in hits}
    for _, flag in sorted(flags.items()):
        if flag.status != _CONTAMINATED:
            continue
        entry = hits[flag.details["benchmark"]]
        entry.records_removed += 1
        method = flag.details["method"]
        entry.records_by_method[method] = entry.records_by_method.get(method, 0) + 1
        items_hit[entry.benchmark].add(flag.details["item"])
        if len(entry.examples) < REMOVED_PER_EXAMPLE:
            entry.examples.append({"record": flag.record_id, **{k: v for k, v in flag.details.items()
                                                                 if k != "benchmark"}})
    for name, entry in hits.items():
        entry.items_hit = len(items_hit[name])
    return list(hits.values())
