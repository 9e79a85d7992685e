"""Decontamination: find training records that overlap benchmark items, by long n-grams and by MinHash.

`ngram`: as lm-eval's decontamination does, a record is contaminated when it contains a 13-gram
(configurable) of an item's text, after NFKC, case folding and dropping punctuation. Benchmark fields
shorter than the n-gram but at least `min_words` long (short questions) are matched whole.

`minhash`: a record is contaminated when it contains most of an item's prompt (question, passage) as word
shingles, edited or reordered: containment |record ∩ item| / |item| >= a threshold. A bottom-k MinHash
sketch of each item (its k smallest shingle hashes, a uniform sample of its shingles) estimates the
containment from one lookup table; candidates are then verified on the exact shingle sets.

In both, n-grams / shingles found in many items of the benchmarks (instructions, answer templates) are
boilerplate and ignored.
"""

from __future__ import annotations

import gzip
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from assay.curation.minhash import ShingleSets, fmix64, normalise_text, shingle_sets, word_units, xxh32_ranges
from assay.curation.steps import StepConfigError
from assay.schemas.dedup import ContaminationHits, DedupConfig

BENCHMARK_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
# Fields that hold what a model is asked (compared by the MinHash method); answers and solutions are not:
# a training record that quotes the question but answers it in its own words is still contaminated.
PROMPT_FIELDS = ("passage", "context", "article", "question", "prompt", "problem", "instruction", "input",
                 "query", "sentence", "goal", "premise", "hypothesis")
# Appended when the prompt alone is too short to be told apart from ordinary text ("Which gas do plants use?").
CHOICE_FIELDS = ("choices", "options", "endings")
_MULTIPLIER = np.uint64(0x100000001B3)

Method = Literal["ngram", "minhash", "both"]
CONTAMINATED = "contaminated"


class BenchmarkFileError(StepConfigError):
    """A benchmark file cannot be read: names the file, the line where known, and why."""


@dataclass
class BenchmarkItem:
    benchmark: str
    item: str
    texts: list[str]
    prompt: str = ""  # the text the MinHash method compares (see prompt_text)


@dataclass
class ContaminationMatch:
    """Why a text counts as contaminated: the benchmark item and the evidence of the method that found it."""

    benchmark: str
    item: str
    ngrams_matched: int = 0
    item_overlap: float = 0.0
    method: str = "ngram"
    containment: float = 0.0  # minhash: share of the item's shingles found in the text (exact, verified)
    jaccard: float = 0.0  # minhash: Jaccard of the two shingle sets, for comparison with dedup
    shingles_matched: int = 0

    def details(self) -> dict[str, Any]:
        """The rejection's details: benchmark file, item, method, and that method's measure of overlap."""
        common: dict[str, Any] = {"benchmark": self.benchmark, "item": self.item, "method": self.method}
        if self.method == "ngram":
            return {**common, "ngrams_matched": self.ngrams_matched, "item_overlap": self.item_overlap}
        return {**common, "containment": self.containment, "jaccard": self.jaccard,
                "shingles_matched": self.shingles_matched}

    def message(self) -> str:
        name = Path(self.benchmark).name
        if self.method == "ngram":
            return f"shares {self.ngrams_matched} n-gram(s) with {name} item {self.item}"
        return (f"contains {self.containment:.0%} of the shingles of {name} item {self.item} "
                f"(MinHash containment, verified)")


def _is_benchmark_file(path: Path) -> bool:
    return path.name.lower().endswith(BENCHMARK_SUFFIXES)


def benchmark_files(paths: Sequence[str | Path]) -> list[Path]:
    """The benchmark files named, folders expanded to the .json/.jsonl(.gz) files below them."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_benchmark_file(p))
            if not found:
                raise BenchmarkFileError(f"{path}: no .json, .jsonl or .gz benchmark files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise BenchmarkFileError(f"{path}: no such benchmark file or folder")
    return files


def string_fields(value: Any) -> Iterator[str]:
    """Every string inside an item, however nested (questions, passages, choices, solutions), in order.
    An explicit stack, not recursion: JSON may nest deeper than Python's recursion limit."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, dict):
            stack.extend(reversed(list(current.values())))
        elif isinstance(current, list):
            stack.extend(reversed(current))


def prompt_text(obj: Any, min_words: int = 8) -> str:
    """What an item asks: its prompt fields (question, passage...), with its choices when that is shorter
    than `min_words` words; all its strings when it has no prompt field."""
    if not isinstance(obj, dict):
        return "\n".join(string_fields(obj))
    prompt = [t for key in PROMPT_FIELDS for t in string_fields(obj.get(key))]
    if not prompt:
        return "\n".join(string_fields(obj))
    if sum(len(t.split()) for t in prompt) < min_words:
        prompt += [t for key in CHOICE_FIELDS for t in string_fields(obj.get(key))]
    return "\n".join(prompt)


def _item(name: str, obj: Any, fallback: str, min_words: int) -> BenchmarkItem:
    return BenchmarkItem(name, _item_name(obj, fallback), list(string_fields(obj)), prompt_text(obj, min_words))


def _item_name(obj: Any, fallback: str) -> str:
    if isinstance(obj, dict):
        for key in ("id", "idx", "question_id", "task_id"):
            value = obj.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                return str(value)
    return fallback


def _open_text(path: Path) -> bytes:
    data = path.read_bytes()
    data = gzip.decompress(data) if path.suffix.lower() == ".gz" else data
    return data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark, as the training-data reader allows


def read_benchmark(path: Path, min_words: int = 8) -> list[BenchmarkItem]:
    """Items of one benchmark file: JSON lines, a JSON array, or an object holding arrays of items."""
    try:
        data = _open_text(path)
    except (OSError, gzip.BadGzipFile) as exc:
        raise BenchmarkFileError(f"{path}: cannot read ({exc})") from exc
    name = str(path)
    items: list[BenchmarkItem] = []
    if path.name.lower().endswith((".jsonl", ".jsonl.gz")):
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BenchmarkFileError(f"{path}:{number}: not valid JSON ({exc})") from exc
            items.append(_item(name, obj, f"line {number}", min_words))
        return items
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BenchmarkFileError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(obj, dict):
        lists = {k: v for k, v in obj.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        entries = [(f"{k}[{i}]", item) for k, v in lists.items() for i, item in enumerate(v)]
        if not entries:
            entries = [("#0", obj)]
    elif isinstance(obj, list):
        entries = [(f"#{i}", item) for i, item in enumerate(obj)]
    else:
        raise BenchmarkFileError(f"{path}: expected a JSON array or object of items, got {type(obj).__name__}")
    return [_item(name, item, where, min_words) for where, item in entries]


def read_items(paths: Sequence[str | Path], min_words: int = 8) -> list[BenchmarkItem]:
    """Every item of the benchmark files and folders named."""
    return [item for path in benchmark_files(paths) for item in read_benchmark(path, min_words)]


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """xxh32 of every word of the (NFKC, case-folded) texts, and the index of the text it came from."""
    units = word_units([normalise_text(t, collapse_whitespace=False) for t in texts])
    return xxh32_ranges(units.buffer, units.starts, units.ends - units.starts).astype(np.uint64), units.doc


def _gram_hashes(words: np.ndarray, doc: np.ndarray, lengths: Sequence[int]
                 ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(length, hashes, start word) of every run of `length` words inside one text, for each length."""
    wanted = set(lengths)
    acc = words.copy()
    for length in range(1, max(wanted) + 1):
        if length > 1:
            acc = acc[:-1] * _MULTIPLIER + words[length - 1:]
        if length in wanted:
            starts = np.flatnonzero(doc[length - 1:] == doc[: len(acc)]) if len(acc) else np.empty(0, np.int64)
            yield length, fmix64(acc[starts]), starts


@dataclass
class _GramTable:
    hashes: np.ndarray  # sorted uint64
    items: np.ndarray  # int64 item index of each hash


@dataclass
class ContaminationIndex:
    """N-grams of benchmark items, by n-gram length, ready for lookups of training batches."""

    items: list[BenchmarkItem]
    tables: dict[int, _GramTable]
    item_grams: np.ndarray  # n-grams per item (after boilerplate removal), for the overlap fraction
    items_per_benchmark: Counter[str] = field(default_factory=Counter)
    ngram: int = 13

    @classmethod
    def build(cls, paths: Sequence[str | Path], ngram: int = 13, min_words: int = 8, max_items: int = 5
              ) -> ContaminationIndex:
        return cls.from_items(read_items(paths), ngram, min_words, max_items)

    @classmethod
    def from_items(cls, items: list[BenchmarkItem], ngram: int = 13, min_words: int = 8, max_items: int = 5
                   ) -> ContaminationIndex:
        field_item = np.array([i for i, item in enumerate(items) for _ in item.texts], dtype=np.int64)
        words, doc = _word_hashes([t for item in items for t in item.texts])
        counts = np.bincount(doc, minlength=len(field_item))
        by_length: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        lengths = [ngram, *range(min_words, ngram)]
        for length, hashes, starts in _gram_hashes(words, doc, lengths):
            fields = doc[starts]
            # a field contributes its n-grams, or itself whole when shorter than the n-gram
            use = counts[fields] >= ngram if length == ngram else counts[fields] == length
            by_length.setdefault(length, []).append((hashes[use], field_item[fields[use]]))
        tables: dict[int, _GramTable] = {}
        item_grams = np.zeros(len(items), dtype=np.int64)
        for length, parts in by_length.items():
            table = _dedupe_and_drop_boilerplate(np.concatenate([p[0] for p in parts]),
                                                 np.concatenate([p[1] for p in parts]), max_items)
            if len(table.hashes):
                tables[length] = table
                item_grams += np.bincount(table.items, minlength=len(items))
        return cls(items, tables, item_grams, Counter(item.benchmark for item in items), ngram)

    def match(self, texts: Sequence[str]) -> list[ContaminationMatch | None]:
        """For each text, the benchmark item it shares the most n-grams with, or None."""
        results: list[ContaminationMatch | None] = [None] * len(texts)
        if not self.tables or not texts:
            return results
        words, doc = _word_hashes(texts)
        found_docs: list[np.ndarray] = []
        found_items: list[np.ndarray] = []
        for length, hashes, starts in _gram_hashes(words, doc, sorted(self.tables)):
            table = self.tables[length]
            left = np.searchsorted(table.hashes, hashes, side="left")
            right = np.searchsorted(table.hashes, hashes, side="right")
            for hit in np.flatnonzero(right > left):  # matches are rare: a loop over them is cheap
                found_docs.append(np.full(right[hit] - left[hit], doc[starts[hit]]))
                found_items.append(table.items[left[hit]:right[hit]])
        if not found_docs:
            return results
        pairs = Counter(zip(np.concatenate(found_docs).tolist(), np.concatenate(found_items).tolist(), strict=True))
        best: dict[int, tuple[int, int]] = {}
        for (d, item), n in pairs.items():
            if d not in best or n > best[d][1]:
                best[d] = (item, n)
        for d, (item, n) in best.items():
            entry = self.items[item]
            total = max(1, int(self.item_grams[item]))
            results[d] = ContaminationMatch(entry.benchmark, entry.item, n, round(min(1.0, n / total), 3))
        return results


def _dedupe_and_drop_boilerplate(hashes: np.ndarray, items: np.ndarray, max_items: int) -> _GramTable:
    order = np.lexsort((items, hashes))
    hashes, items = hashes[order], items[order]
    if len(hashes):
        fresh = np.concatenate(([True], (hashes[1:] != hashes[:-1]) | (items[1:] != items[:-1])))
        hashes, items = hashes[fresh], items[fresh]
    _, counts = np.unique(hashes, return_counts=True)
    common = np.repeat(counts > max_items, counts)
    return _GramTable(hashes[~common], items[~common])


def _shingles(texts: Sequence[str], ngram: int) -> ShingleSets:
    # word shingles are \w+ runs joined by one space, so spacing and punctuation never matter
    return shingle_sets([normalise_text(t, collapse_whitespace=False) for t in texts], "word", ngram)


@dataclass
class ContainmentIndex:
    """Bottom-k MinHash sketches of the items' prompts, for containment lookups of training batches.

    Row r describes one indexed item (`rows[r]` into `items`): its shingle set without boilerplate, and
    the k smallest hashes of that set (a uniform sample, xxh32 being a good hash) in one sorted table.
    The share of an item's sample found in a text estimates the item's containment in the text.
    """

    items: list[BenchmarkItem]
    rows: np.ndarray  # int64 item index of each row
    sets: ShingleSets  # per row: unique sorted shingle hashes, boilerplate removed
    sample_hashes: np.ndarray  # sorted uint32, the bottom-k hashes of all rows
    sample_rows: np.ndarray  # int64 row of each sample hash
    sample_sizes: np.ndarray  # int64 per row: hashes in its sample (k, or all of a smaller set)
    ngram: int = 3
    threshold: float = 0.5
    min_shared: int = 5
    items_per_benchmark: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_items(cls, items: list[BenchmarkItem], ngram: int = 3, threshold: float = 0.5,
                   sketch_size: int = 64, min_shared: int = 5, max_items: int = 5) -> ContainmentIndex:
        """Index the items' prompts; an item with fewer than `min_shared` specific shingles can never match."""
        sets = _shingles([item.prompt for item in items], ngram)
        owner = np.repeat(np.arange(len(items), dtype=np.int64), sets.sizes())
        _, inverse, counts = np.unique(sets.hashes, return_inverse=True, return_counts=True)
        specific = counts[inverse] <= max_items
        sizes = np.bincount(owner[specific], minlength=len(items))
        keep = specific & (sizes[owner] >= min_shared)
        rows = np.flatnonzero(sizes >= min_shared)
        hashes = sets.hashes[keep]  # still sorted within each item
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(sizes[rows], out=offsets[1:])
        row_of = np.repeat(np.arange(len(rows), dtype=np.int64), sizes[rows])
        in_sample = np.arange(len(hashes)) - offsets[row_of] < sketch_size
        order = np.argsort(hashes[in_sample], kind="stable")
        return cls(items, rows, ShingleSets(hashes, offsets), hashes[in_sample][order], row_of[in_sample][order],
                   np.minimum(sizes[rows], sketch_size), ngram, threshold, min_shared,
                   Counter(item.benchmark for item in items))

    def candidates(self, sets: ShingleSets) -> tuple[np.ndarray, np.ndarray]:
        """(text, row) pairs whose sampled containment could reach the threshold."""
        text_of = np.repeat(np.arange(len(sets), dtype=np.int64), sets.sizes())
        left = np.searchsorted(self.sample_hashes, sets.hashes, side="left")
        right = np.searchsorted(self.sample_hashes, sets.hashes, side="right")
        hit = np.flatnonzero(right > left)
        if not len(hit):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        repeats = right[hit] - left[hit]
        within = np.arange(int(repeats.sum())) - np.repeat(np.cumsum(repeats) - repeats, repeats)
        rows = self.sample_rows[np.repeat(left[hit], repeats) + within]
        width = max(1, len(self.rows))
        pairs, found = np.unique(np.repeat(text_of[hit], repeats) * width + rows, return_counts=True)
        texts, rows = np.divmod(pairs, width)
        k = self.sample_sizes[rows]
        # a sample smaller than the set is an estimate: let through what three standard errors could lift
        t = self.threshold
        margin = np.where(k < self.sets.sizes()[rows], 3.0 * np.sqrt(t * (1.0 - t) / k), 0.0)
        near = found / k >= t - margin
        return texts[near], rows[near]

    def match(self, texts: Sequence[str]) -> list[ContaminationMatch | None]:
        """For each text, the item whose prompt it contains most, or None.

        A match shares at least `min_shared` shingles and `threshold` of the item's (exact, verified):
        3 common word triples of a 6-shingle question are not evidence, however high the share.
        """
        results: list[ContaminationMatch | None] = [None] * len(texts)
        if not len(self.rows) or not texts:
            return results
        sets = _shingles(texts, self.ngram)
        for t, row in zip(*(a.tolist() for a in self.candidates(sets)), strict=True):
            mine, theirs = sets.get(t), self.sets.get(row)
            shared = len(np.intersect1d(mine, theirs, assume_unique=True))
            containment = shared / len(theirs)
            best = results[t]
            if shared < self.min_shared or containment < self.threshold or (best is not None and containment <= best.containment):
                continue
            item = self.items[int(self.rows[row])]
            results[t] = ContaminationMatch(
                item.benchmark, item.item, method="minhash", containment=round(containment, 3),
                jaccard=round(shared / (len(mine) + len(theirs) - shared), 3), shingles_matched=shared)
        return results


@dataclass
class Decontaminator:
    """The chosen methods over the same benchmark items; a text the n-gram method flags is not re-checked."""

    items_per_benchmark: Counter[str]
    ngram_index: ContaminationIndex | None
    minhash_index: ContainmentIndex | None

    @classmethod
    def build(cls, paths: Sequence[str | Path], method: Method = "both", ngram: int = 13, min_words: int = 8,
              max_items: int = 5, minhash_ngram: int = 3, minhash_threshold: float = 0.5,
              sketch_size: int = 64, min_shared: int = 5) -> Decontaminator:
        items = read_items(paths, min_words)
        ngrams = (ContaminationIndex.from_items(items, ngram, min_words, max_items)
                  if method in ("ngram", "both") else None)
        minhash = (ContainmentIndex.from_items(items, minhash_ngram, minhash_threshold, sketch_size, min_shared,
                                               max_items)
                   if method in ("minhash", "both") else None)
        return cls(Counter(item.benchmark for item in items), ngrams, minhash)

    def match(self, texts: Sequence[str]) -> list[ContaminationMatch | None]:
        results: list[ContaminationMatch | None] = (self.ngram_index.match(texts) if self.ngram_index
                                                    else [None] * len(texts))
        if self.minhash_index is not None:
            rest = [i for i, hit in enumerate(results) if hit is None]
            for i, hit in zip(rest, self.minhash_index.match([texts[i] for i in rest]), strict=True):
                results[i] = hit
        return results


class Decontamination:
    """The dedup step's decontamination: rejects, batch by batch, the records that overlap a benchmark
    item, and tallies the hits per benchmark for the report. Needs no pass over the whole dataset."""

    def __init__(self, decontaminator: Decontaminator, examples: int = 3) -> None:
        self.decontaminator = decontaminator
        self.examples = examples
        self.seconds = 0.0
        self._hits = {name: ContaminationHits(benchmark=name, items=count)
                      for name, count in sorted(decontaminator.items_per_benchmark.items())}
        self._items_hit: dict[str, set[str]] = {name: set() for name in self._hits}

    @classmethod
    def from_config(cls, config: DedupConfig) -> Decontamination:
        started = time.perf_counter()
        unit = cls(Decontaminator.build(
            config.decontaminate, config.contamination_method, config.contamination_ngram,
            config.contamination_min_words, config.contamination_max_items, config.contamination_minhash_ngram,
            config.contamination_minhash_threshold, config.contamination_sketch_size,
            config.contamination_minhash_min_shared))
        unit.seconds = time.perf_counter() - started
        return unit

    def match(self, texts: Sequence[str], ids: Sequence[str]) -> list[ContaminationMatch | None]:
        """Per text, the benchmark item it overlaps (counted as a removed record), or None."""
        started = time.perf_counter()
        matches = self.decontaminator.match(texts)
        for record_id, hit in zip(ids, matches, strict=True):
            if hit is not None:
                self._count(hit, record_id)
        self.seconds += time.perf_counter() - started
        return matches

    def _count(self, hit: ContaminationMatch, record_id: str) -> None:
        entry = self._hits[hit.benchmark]
        entry.records_removed += 1
        entry.records_by_method[hit.method] = entry.records_by_method.get(hit.method, 0) + 1
        self._items_hit[hit.benchmark].add(hit.item)
        entry.items_hit = len(self._items_hit[hit.benchmark])
        if len(entry.examples) < self.examples:
            details = hit.details()
            del details["benchmark"]
            entry.examples.append({"record": record_id, **details})

    def hits(self) -> list[ContaminationHits]:
        return list(self._hits.values())
