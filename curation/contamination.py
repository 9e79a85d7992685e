"""Decontamination: find training records that share long word n-grams with benchmark items.

As lm-eval's decontamination does, a record is contaminated when it contains a 13-gram (configurable) of
an item's text, after NFKC, case folding and dropping punctuation. Benchmark fields shorter than the
n-gram but at least `min_words` long (short questions) are matched whole. N-grams that occur in many
items of the benchmarks (instructions, answer templates) are boilerplate and ignored.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from curation.minhash import fmix64, normalise_text, word_units, xxh32_ranges
from curation.steps import StepConfigError

BENCHMARK_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
_MULTIPLIER = np.uint64(0x100000001B3)


class BenchmarkFileError(StepConfigError):
    """A benchmark file cannot be read: names the file, the line where known, and why."""


@dataclass
class BenchmarkItem:
    benchmark: str
    item: str
    texts: list[str]


@dataclass
class ContaminationMatch:
    benchmark: str
    item: str
    ngrams_matched: int
    item_overlap: float


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
    """Every string inside an item, however nested (questions, passages, choices, solutions)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from string_fields(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from string_fields(inner)


def _item_name(obj: Any, fallback: str) -> str:
    if isinstance(obj, dict):
        for key in ("id", "idx", "question_id", "task_id"):
            value = obj.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                return str(value)
    return fallback


def _open_text(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix.lower() == ".gz" else data


def read_benchmark(path: Path) -> list[BenchmarkItem]:
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
            items.append(BenchmarkItem(name, _item_name(obj, f"line {number}"), list(string_fields(obj))))
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
    return [BenchmarkItem(name, _item_name(item, where), list(string_fields(item))) for where, item in entries]


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
        items = [item for path in benchmark_files(paths) for item in read_benchmark(path)]
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
