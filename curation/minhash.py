"""Vectorised shingling, xxh32 hashing and MinHash signatures equal to datasketch's, plus LSH banding.

The signatures are exactly those of `datasketch.MinHash(num_perm, seed, hashfunc=xxhash.xxh32_intdigest)`
updated with the byte shingles that `shingles()` returns (scheme "affine32", datasketch's permutations).
The fast path never builds a Python object per shingle: a batch of texts becomes one code-point array,
words and shingles become byte ranges, and xxh32 runs over all ranges at once in numpy.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np

ShingleKind = Literal["word", "char"]

_U32 = np.uint32
_U64 = np.uint64
_MAX32 = _U32(0xFFFFFFFF)
_P1, _P2, _P3, _P4, _P5 = (_U32(p) for p in (2654435761, 2246822519, 3266489917, 668265263, 374761393))
_WORD_RE = re.compile(r"\w+")
_SEPARATOR = "\n"  # between documents of a batch: never a word character, never inside a char shingle


# ---------------------------------------------------------------- text normalisation


def normalise_text(text: str, nfkc: bool = True, casefold: bool = True, collapse_whitespace: bool = True,
                   strip_punctuation: bool = False) -> str:
    """The text as exact-duplicate hashing and shingling see it."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if casefold:
        text = text.casefold()
    if strip_punctuation:
        text = " ".join(_WORD_RE.findall(text))
    elif collapse_whitespace:
        text = " ".join(text.split())
    return text


def _utf8(text: str) -> bytes:
    # surrogatepass: JSON can carry lone surrogates; they must hash, not crash
    return text.encode("utf-8", "surrogatepass")


def shingles(text: str, kind: ShingleKind = "word", ngram: int = 5) -> list[bytes]:
    """Reference shingles of an already normalised text, one Python object each (slow; for baselines/tests).

    Words are runs of `\\w` characters joined by one space; a text with fewer than `ngram` units gives one
    shingle of all of them, an empty one none.
    """
    if kind == "word":
        words = _WORD_RE.findall(text)
        if not words:
            return []
        if len(words) < ngram:
            return [_utf8(" ".join(words))]
        return [_utf8(" ".join(words[i:i + ngram])) for i in range(len(words) - ngram + 1)]
    text = text.replace(_SEPARATOR, " ")
    if not text:
        return []
    if len(text) < ngram:
        return [_utf8(text)]
    return [_utf8(text[i:i + ngram]) for i in range(len(text) - ngram + 1)]


# ---------------------------------------------------------------- vectorised xxh32


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << _U32(r)) | (x >> _U32(32 - r))


def _stripe_round(acc: np.ndarray, lane: np.ndarray) -> np.ndarray:
    return _rotl(acc + lane * _P2, 13) * _P1


def xxh32_ranges(buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray, seed: int = 0) -> np.ndarray:
    """xxh32 (seed `seed`) of every byte range `buffer[start:start+length]`, equal to xxhash.xxh32_intdigest."""
    count = len(starts)
    if count == 0:
        return np.empty(0, dtype=_U32)
    padded = np.zeros(len(buffer) + 4, dtype=_U32)
    padded[: len(buffer)] = buffer
    # little-endian 32-bit word starting at every byte offset, so any read is one gather
    words = padded[:-3] | (padded[1:-2] << _U32(8)) | (padded[2:-1] << _U32(16)) | (padded[3:] << _U32(24))
    starts = starts.astype(np.int64)
    lengths = lengths.astype(np.int64)
    hashes = np.full(count, (seed + int(_P5)) & 0xFFFFFFFF, dtype=_U32)

    long_ones = np.flatnonzero(lengths >= 16)
    if len(long_ones):
        hashes[long_ones] = _long_input_state(words, starts[long_ones], lengths[long_ones] // 16, seed)
    hashes += lengths.astype(_U32)

    position = starts + (lengths // 16) * 16
    remainder = lengths % 16
    for k in range(3):  # up to three 4-byte words remain after the stripes
        active = np.flatnonzero(remainder // 4 > k)
        if not len(active):
            break
        step = hashes[active] + words[position[active]] * _P3
        hashes[active] = _rotl(step, 17) * _P4
        position[active] += 4
    for k in range(3):  # then up to three single bytes
        active = np.flatnonzero(remainder % 4 > k)
        if not len(active):
            break
        step = hashes[active] + padded[position[active]] * _P5
        hashes[active] = _rotl(step, 11) * _P1
        position[active] += 1
    hashes ^= hashes >> _U32(15)
    hashes *= _P2
    hashes ^= hashes >> _U32(13)
    hashes *= _P3
    hashes ^= hashes >> _U32(16)
    return hashes


def _long_input_state(words: np.ndarray, starts: np.ndarray, stripes: np.ndarray, seed: int) -> np.ndarray:
    """The four-accumulator phase of xxh32 for inputs of 16 bytes or more."""
    n = len(starts)
    acc = [np.full(n, (seed + a) & 0xFFFFFFFF, dtype=_U32)
           for a in (int(_P1) + int(_P2), int(_P2), 0, -int(_P1))]
    for k in range(int(stripes.max())):
        active = np.flatnonzero(stripes > k)
        base = starts[active] + 16 * k
        for lane in range(4):
            acc[lane][active] = _stripe_round(acc[lane][active], words[base + 4 * lane])
    return _rotl(acc[0], 1) + _rotl(acc[1], 7) + _rotl(acc[2], 12) + _rotl(acc[3], 18)


# ---------------------------------------------------------------- tokenising a batch


@cache
def _word_char_table() -> np.ndarray:
    """True for every code point that regex `\\w` matches (alphanumeric or underscore)."""
    return np.fromiter(((chr(c).isalnum() or c == 95) for c in range(0x110000)), dtype=bool, count=0x110000)


def _is_word_char(code_points: np.ndarray) -> np.ndarray:
    if len(code_points) and code_points.max() < 0x80:  # ASCII: comparisons beat a table lookup
        lower = code_points | _U32(32)
        return (((lower - _U32(97)) < _U32(26)) | ((code_points - _U32(48)) < _U32(10))
                | (code_points == _U32(95)))
    return np.take(_word_char_table(), code_points)


@dataclass
class Units:
    """Words or characters of a batch of texts, as byte ranges in one UTF-8 buffer."""

    buffer: np.ndarray  # uint8
    starts: np.ndarray  # int64 byte offsets
    ends: np.ndarray
    doc: np.ndarray  # int64 document index of each unit
    n_docs: int


def _utf8_offsets(code_points: np.ndarray) -> np.ndarray:
    """Byte offset of every code point (and one past the end) in the UTF-8 encoding."""
    if not len(code_points) or code_points.max() < 0x80:
        return np.arange(len(code_points) + 1, dtype=np.int64)
    sizes = 1 + (code_points >= 0x80).astype(np.int64) + (code_points >= 0x800) + (code_points >= 0x10000)
    offsets = np.zeros(len(code_points) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(sizes.astype(np.int32), dtype=np.int32)  # a batch stays far below 2 GB
    return offsets


def _code_points(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    joined = _SEPARATOR.join(texts)
    code_points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(_U32)
    doc_starts = np.zeros(len(texts), dtype=np.int64)
    if len(texts) > 1:
        np.cumsum([len(t) + 1 for t in texts[:-1]], out=doc_starts[1:])
    return code_points, doc_starts


def _to_buffer(code_points: np.ndarray) -> np.ndarray:
    if not len(code_points) or code_points.max() < 0x80:
        return code_points.astype(np.uint8)
    text = code_points.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
    return np.frombuffer(_utf8(text), dtype=np.uint8)


def word_units(texts: Sequence[str]) -> Units:
    """The `\\w+` words of each text, re-joined by single spaces so a run of words is one byte range."""
    code_points, doc_starts = _code_points(texts)
    code_points = np.append(code_points, _U32(ord(_SEPARATOR)))  # a word can end at the last position
    is_word = _is_word_char(code_points)
    edges = np.diff(np.concatenate(([False], is_word)).astype(np.int8))
    word_start = np.flatnonzero(edges == 1)
    word_end = np.flatnonzero(edges == -1)
    doc = np.searchsorted(doc_starts, word_start, side="right") - 1
    # keep the word characters and, after each word, one space when the next word is in the same document
    keep = is_word.copy()
    joins = word_end[:-1][doc[1:] == doc[:-1]]
    keep[joins] = True
    kept = code_points.copy()
    kept[joins] = _U32(32)
    new_index = np.cumsum(keep.view(np.uint8), dtype=np.int32) - 1  # int32: several times faster than int64
    kept = kept[keep]
    offsets = _utf8_offsets(kept)
    new_start = new_index[word_start]
    new_end = new_index[word_end - 1] + 1
    return Units(_to_buffer(kept), offsets[new_start], offsets[new_end], doc.astype(np.int64), len(texts))


def char_units(texts: Sequence[str]) -> Units:
    """Every character of each text (separators replaced by spaces, as `shingles()` does)."""
    texts = [t.replace(_SEPARATOR, " ") for t in texts]
    code_points, doc_starts = _code_points(texts)
    offsets = _utf8_offsets(code_points)
    is_char = np.ones(len(code_points), dtype=bool)
    is_char[doc_starts[1:] - 1] = False  # the separators
    positions = np.flatnonzero(is_char)
    doc = np.searchsorted(doc_starts, positions, side="right") - 1
    return Units(_to_buffer(code_points), offsets[positions], offsets[positions + 1], doc.astype(np.int64),
                 len(texts))


@dataclass
class ShingleSets:
    """Unique sorted xxh32 shingle hashes of each document: `hashes[offsets[i]:offsets[i+1]]`."""

    hashes: np.ndarray  # uint32
    offsets: np.ndarray  # int64, n_docs + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> np.ndarray:
        return self.hashes[self.offsets[i]:self.offsets[i + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> ShingleSets:
        """The sets of documents `rows`, in that order."""
        sizes = self.sizes()[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        hashes = (np.concatenate([self.get(int(i)) for i in rows]) if len(rows) else self.hashes[:0])
        return ShingleSets(hashes.astype(self.hashes.dtype, copy=False), offsets)


def _ngram_ranges(units: Units, ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte ranges (start, end) and document of every n-gram of units; short documents give one range."""
    counts = np.bincount(units.doc, minlength=units.n_docs)
    first = np.zeros(units.n_docs + 1, dtype=np.int64)
    np.cumsum(counts, out=first[1:])
    if len(units.doc) >= ngram:
        last = np.arange(ngram - 1, len(units.doc))
        full = np.flatnonzero(units.doc[last] == units.doc[: len(last)])
    else:
        full = np.empty(0, dtype=np.int64)
    short_docs = np.flatnonzero((counts > 0) & (counts < ngram))
    starts = np.concatenate((units.starts[full], units.starts[first[short_docs]]))
    ends = np.concatenate((units.ends[full + ngram - 1], units.ends[first[short_docs + 1] - 1]))
    docs = np.concatenate((units.doc[full], short_docs))
    return starts, ends, docs


def shingle_sets(texts: Sequence[str], kind: ShingleKind = "word", ngram: int = 5) -> ShingleSets:
    """Hashed shingle sets of normalised texts, equal to {xxh32(s) for s in shingles(text)} per text."""
    units = word_units(texts) if kind == "word" else char_units(texts)
    starts, ends, docs = _ngram_ranges(units, ngram)
    hashes = xxh32_ranges(units.buffer, starts, ends - starts)
    keys = np.sort((docs.astype(_U64) << _U64(32)) | hashes.astype(_U64))
    if len(keys):  # drop repeats; np.unique's hash path is several times slower here
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    offsets[1:] = np.searchsorted(keys >> _U64(32), np.arange(len(texts), dtype=_U64), side="right")
    return ShingleSets((keys & _U64(0xFFFFFFFF)).astype(_U32), offsets)


# ---------------------------------------------------------------- MinHash signatures


def fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser, which datasketch applies to every input hash before permuting it."""
    values = values ^ (values >> _U32(16))
    values = values * _U32(0x85EBCA6B)
    values ^= values >> _U32(13)
    values *= _U32(0xC2B2AE35)
    return values ^ (values >> _U32(16))


class MinHasher:
    """Signatures of shingle sets with datasketch's affine32 permutations for `num_perm` and `seed`."""

    SHINGLES_PER_CHUNK = 2048  # measured fastest; keeps the (num_perm x shingles) product in the CPU cache

    def __init__(self, num_perm: int = 128, seed: int = 1) -> None:
        from datasketch import MinHash

        template = MinHash(num_perm=num_perm, seed=seed, scheme="affine32")
        a, b = template.permutations
        self.num_perm = num_perm
        self.seed = seed
        self._a = np.asarray(a, dtype=_U32)[:, None]
        self._b = np.asarray(b, dtype=_U32)[:, None]

    def signatures(self, sets: ShingleSets) -> np.ndarray:
        """(n_docs, num_perm) uint32; a document without shingles gets datasketch's empty value (all max)."""
        out = np.full((len(sets), self.num_perm), _MAX32, dtype=_U32)
        sizes = sets.sizes()
        non_empty = np.flatnonzero(sizes > 0)
        mixed = fmix32(sets.hashes)
        if not len(non_empty):
            return out
        per_chunk = max(1, int(self.SHINGLES_PER_CHUNK // max(1.0, float(sizes[non_empty].mean()))))
        for start in range(0, len(non_empty), per_chunk):
            docs = non_empty[start:start + per_chunk]
            lo, hi = sets.offsets[docs[0]], sets.offsets[docs[-1] + 1]
            permuted = self._a * mixed[lo:hi][None, :]
            permuted += self._b
            out[docs] = np.minimum.reduceat(permuted, sets.offsets[docs] - lo, axis=1).T
        return out


# ---------------------------------------------------------------- LSH banding


def lsh_bands(threshold: float, num_perm: int, bands: int | None = None, rows: int | None = None,
              recall_weight: float = 0.5) -> tuple[int, int]:
    """Bands and rows: given, or datasketch's optimum for the threshold, weighing false negatives by
    `recall_weight` and false positives by the rest."""
    if bands is not None and rows is not None:
        if bands * rows > num_perm:
            raise ValueError(f"bands x rows = {bands * rows} exceeds num_perm = {num_perm}")
        return bands, rows
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(1.0 - recall_weight, recall_weight))
    return int(lsh.b), int(lsh.r)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_docs, bands) uint64: equal bands give equal keys; unequal ones collide with odds of 2^-64."""
    keys = np.zeros((len(signatures), bands), dtype=_U64)
    multiplier = _U64(0x9E3779B97F4A7C15)
    for band in range(bands):
        acc = np.zeros(len(signatures), dtype=_U64)
        for column in range(band * rows, (band + 1) * rows):
            acc = acc * multiplier + signatures[:, column].astype(_U64)
        keys[:, band] = fmix64(acc)
    return keys


def fmix64(values: np.ndarray) -> np.ndarray:
    values = values ^ (values >> _U64(33))
    values = values * _U64(0xFF51AFD7ED558CCD)
    values ^= values >> _U64(33)
    values *= _U64(0xC4CEB9FE1A85EC53)
    return values ^ (values >> _U64(33))


def candidate_pairs(keys: np.ndarray, members: np.ndarray, pair_limit: int = 50) -> np.ndarray:
    """(k, 2) int64 pairs i < j of `members` (record indices; `keys` holds their band keys, row by row)
    that share a bucket in some band.

    A bucket of up to `pair_limit` records yields all its pairs (what MinHashLSH queries return); a bigger
    one yields each member paired with the bucket's first and its neighbour, so cost stays linear.
    """
    found: list[np.ndarray] = []
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        sorted_keys = keys[order, band]
        same = sorted_keys[1:] == sorted_keys[:-1]
        if not same.any():
            continue
        run_starts = np.flatnonzero(np.concatenate(([True], ~same)))
        run_lengths = np.diff(np.append(run_starts, len(order)))
        pairs_of_two = run_starts[run_lengths == 2]
        found.append(np.stack((order[pairs_of_two], order[pairs_of_two + 1]), axis=1))
        for start, length in zip(run_starts[run_lengths > 2], run_lengths[run_lengths > 2], strict=True):
            bucket = order[start:start + length]
            if length <= pair_limit:
                i, j = np.triu_indices(length, k=1)
                found.append(np.stack((bucket[i], bucket[j]), axis=1))
            else:
                found.append(np.stack((np.full(length - 1, bucket[0]), bucket[1:]), axis=1))
                found.append(np.stack((bucket[1:-1], bucket[2:]), axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    local = np.concatenate(found)
    pairs = np.sort(members[local], axis=1)
    return np.unique(pairs, axis=0).astype(np.int64)


# ---------------------------------------------------------------- verification and clustering


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """True Jaccard similarity of two unique hashed shingle sets."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared)


def estimated_jaccard(signatures: np.ndarray, i: int, j: int) -> float:
    return float(np.count_nonzero(signatures[i] == signatures[j])) / signatures.shape[1]


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving; the root of a set is its smallest member."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    def union(self, i: int, j: int) -> bool:
        """Join the sets of i and j; False when they could not be joined (see KeyedUnionFind)."""
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)
        return True

    def roots(self) -> np.ndarray:
        """Root of every element, by pointer jumping over the whole array at once."""
        parent = self.parent.copy()
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent = grand


class KeyedUnionFind(UnionFind):
    """Disjoint sets that never join members with different keys: a cannot-link constraint.

    Row i of `keys` holds element i's key hashes, one column per field, 0 where the value is missing. A
    set takes the known value of each field from its members; two sets join only when no field has two
    different known values, so no chain of merges can put conflicting elements together.
    """

    def __init__(self, keys: np.ndarray) -> None:
        super().__init__(len(keys))
        self.keys = np.array(keys, dtype=np.uint64, copy=True)

    def union(self, i: int, j: int) -> bool:
        ri, rj = self.find(i), self.find(j)
        if ri == rj:
            return True
        a, b = self.keys[ri], self.keys[rj]
        if np.any((a != 0) & (b != 0) & (a != b)):
            return False
        root, child = min(ri, rj), max(ri, rj)
        self.parent[child] = root
        self.keys[root] = np.where(self.keys[root] != 0, self.keys[root], self.keys[child])
        return True
