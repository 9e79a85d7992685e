"""Sketches of a record set (ids, exact hashes, MinHash signatures, hashed shingle sets), saved and queried.

In memory a store holds signatures and exact hashes; shingle sets (needed only to verify candidate pairs)
are spilled to a flat uint32 file and read back through a memory map. A saved index is a folder of .npy
files plus `index.json` with the settings it was built with; loading maps the arrays, so a large corpus
costs little memory until it is queried.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from assay.curation.minhash import ShingleSets, band_keys, estimated_jaccard, jaccard
from assay.curation.steps import StepConfigError

INDEX_FORMAT = "assay-dedup-index"
INDEX_VERSION = 1
INDEX_MARKER = "index.json"


class IndexError_(StepConfigError):
    """A saved index cannot be used: missing files, another format, or settings that differ from the run's."""


@dataclass
class Sketches:
    """Everything dedup knows about a set of records, row i describing record i."""

    ids: list[str]
    exact: np.ndarray  # uint64
    signatures: np.ndarray  # (n, num_perm) uint32; (n, 0) when near-duplicate search is off
    sets: ShingleSets

    def __len__(self) -> int:
        return len(self.ids)


class SketchStore:
    """Accumulates sketches batch by batch; shingle sets go to disk as they come."""

    def __init__(self, folder: Path, name: str, num_perm: int) -> None:
        self._path = folder / f"{name}.shingles.u32"
        self._out = self._path.open("wb")
        self.ids: list[str] = []
        self._exact: list[np.ndarray] = []
        self._signatures = np.empty((0, num_perm), dtype=np.uint32)
        self._sizes: list[np.ndarray] = []

    def add(self, ids: Sequence[str], exact: np.ndarray, signatures: np.ndarray, sets: ShingleSets) -> None:
        start = len(self.ids)
        self.ids.extend(ids)
        self._exact.append(exact)
        if len(self.ids) > len(self._signatures):
            # grow in place (realloc/mremap): a list of batches concatenated at the end would need twice
            # the memory of all signatures at that moment
            capacity = max(2 * len(self._signatures), len(self.ids), 1024)
            self._signatures.resize((capacity, signatures.shape[1]), refcheck=False)
        self._signatures[start:len(self.ids)] = signatures
        self._sizes.append(sets.sizes())
        self._out.write(sets.hashes.astype("<u4").tobytes())

    def finish(self) -> Sketches:
        self._out.close()
        offsets = np.zeros(len(self.ids) + 1, dtype=np.int64)
        if self._sizes:
            np.cumsum(np.concatenate(self._sizes), out=offsets[1:])
        hashes = (np.memmap(self._path, dtype="<u4", mode="r") if offsets[-1] else np.empty(0, dtype=np.uint32))
        signatures = self._signatures
        width = signatures.shape[1]
        signatures.resize((len(self.ids), width), refcheck=False)
        exact = np.concatenate(self._exact) if self._exact else np.empty(0, dtype=np.uint64)
        return Sketches(self.ids, exact, signatures, ShingleSets(hashes, offsets))


def save_index(folder: str | Path, parts: Sequence[tuple[Sketches, np.ndarray]], settings: dict[str, Any]) -> int:
    """Write the chosen rows of each part as one index folder (atomically replaced); returns its size."""
    target = Path(folder)
    if target.exists() and not (target / INDEX_MARKER).is_file():
        # Only ever replace an earlier index, never a folder that holds something else.
        raise IndexError_(f"dedup.save_index {target}: exists and is not a saved dedup index (no "
                          f"{INDEX_MARKER}); choose a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        ids = [sk.ids[i] for sk, rows in parts for i in rows.tolist()]
        np.save(work / "exact.npy", np.concatenate([sk.exact[rows] for sk, rows in parts]))
        np.save(work / "signatures.npy", np.concatenate([sk.signatures[rows] for sk, rows in parts]))
        sizes = np.concatenate([sk.sets.sizes()[rows] for sk, rows in parts])
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        np.save(work / "offsets.npy", offsets)
        with (work / "shingles.npy").open("wb") as out:
            header = np.lib.format.header_data_from_array_1_0(np.empty(0, dtype="<u4"))
            header["shape"] = (int(offsets[-1]),)
            np.lib.format.write_array_header_1_0(out, header)
            for sk, rows in parts:  # row by row: the shingle sets never have to fit in memory at once
                for i in rows.tolist():
                    out.write(np.ascontiguousarray(sk.sets.get(i), dtype="<u4").tobytes())
        (work / "ids.json").write_bytes(orjson.dumps(ids))
        meta = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "records": len(ids), "settings": settings}
        (work / INDEX_MARKER).write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(work, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, target)
        return len(ids)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def is_index_folder(path: str | Path) -> bool:
    return (Path(path) / INDEX_MARKER).is_file()


def load_index(folder: str | Path, settings: dict[str, Any]) -> Sketches:
    """Map a saved index; its shingling settings must equal `settings` (else the hashes mean other things)."""
    folder = Path(folder)
    try:
        meta = orjson.loads((folder / INDEX_MARKER).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise IndexError_(f"{folder}: not a readable dedup index ({exc})") from exc
    if meta.get("format") != INDEX_FORMAT or meta.get("version") != INDEX_VERSION:
        raise IndexError_(f"{folder}: not an {INDEX_FORMAT} version {INDEX_VERSION} folder")
    saved = meta.get("settings", {})
    differences = [f"{key}: index {saved.get(key)!r}, this run {value!r}"
                   for key, value in settings.items() if saved.get(key) != value]
    if differences:
        raise IndexError_(f"{folder}: built with other settings ({'; '.join(differences)}); "
                          "rebuild it or run with the index's settings")
    try:
        ids = orjson.loads((folder / "ids.json").read_bytes())
        exact = np.load(folder / "exact.npy", mmap_mode="r")
        signatures = np.load(folder / "signatures.npy", mmap_mode="r")
        offsets = np.load(folder / "offsets.npy")
        hashes = np.load(folder / "shingles.npy", mmap_mode="r") if offsets[-1] else np.empty(0, np.uint32)
    except (OSError, ValueError, orjson.JSONDecodeError) as exc:
        raise IndexError_(f"{folder}: damaged index ({exc})") from exc
    if not (len(ids) == len(exact) == len(signatures) == len(offsets) - 1 == meta.get("records")):
        raise IndexError_(f"{folder}: damaged index (its files disagree on the number of records)")
    return Sketches(ids, np.asarray(exact), signatures, ShingleSets(hashes, offsets))


@dataclass
class CorpusMatch:
    index: int
    similarity: float
    exact: bool


class CorpusLookup:
    """Finds, for new records, a record of an existing corpus they duplicate (exactly or nearly)."""

    def __init__(self, corpus: Sketches, bands: int, rows: int, threshold: float, verify: bool = True,
                 bucket_limit: int = 50) -> None:
        self.corpus = corpus
        self.threshold = threshold
        self.verify = verify
        self.bucket_limit = bucket_limit
        self._bands, self._rows = bands, rows
        self._exact_order = np.argsort(corpus.exact, kind="stable")
        self._exact_sorted = corpus.exact[self._exact_order]
        self._band_order: list[np.ndarray] = []
        self._band_sorted: list[np.ndarray] = []
        if corpus.signatures.shape[1] and len(corpus):
            searchable = np.flatnonzero(corpus.sets.sizes() > 0)
            keys = band_keys(np.asarray(corpus.signatures[searchable]), bands, rows)
            for band in range(bands):
                order = np.argsort(keys[:, band], kind="stable")
                self._band_order.append(searchable[order])
                self._band_sorted.append(keys[order, band])

    def match(self, exact: np.ndarray, signatures: np.ndarray, sets: ShingleSets,
              use_exact: bool = True, use_near: bool = True) -> list[CorpusMatch | None]:
        found: list[CorpusMatch | None] = [None] * len(exact)
        if use_exact and len(self._exact_sorted):
            at = np.searchsorted(self._exact_sorted, exact)
            at_clipped = np.minimum(at, len(self._exact_sorted) - 1)
            for i in np.flatnonzero(self._exact_sorted[at_clipped] == exact).tolist():
                found[i] = CorpusMatch(int(self._exact_order[at_clipped[i]]), 1.0, True)
        if not use_near or not self._band_sorted:
            return found
        keys = band_keys(signatures, self._bands, self._rows)
        candidates: dict[int, set[int]] = {}
        sizes = sets.sizes()
        for band, sorted_keys in enumerate(self._band_sorted):
            left = np.searchsorted(sorted_keys, keys[:, band], side="left")
            right = np.searchsorted(sorted_keys, keys[:, band], side="right")
            for i in np.flatnonzero(right > left).tolist():
                if found[i] is None and sizes[i] > 0:
                    stop = min(int(right[i]), int(left[i]) + self.bucket_limit)
                    candidates.setdefault(i, set()).update(self._band_order[band][left[i]:stop].tolist())
        for i, corpus_rows in candidates.items():
            best: CorpusMatch | None = None
            for j in sorted(corpus_rows):
                if self.verify:
                    similarity = jaccard(sets.get(i), np.asarray(self.corpus.sets.get(j)))
                    if similarity < self.threshold:
                        continue
                else:
                    similarity = _cross_estimate(signatures[i], np.asarray(self.corpus.signatures[j]))
                if best is None or similarity > best.similarity:
                    best = CorpusMatch(j, similarity, False)
            found[i] = best
        return found


def _cross_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return estimated_jaccard(np.stack((a, b)), 0, 1)
