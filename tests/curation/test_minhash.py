"""The vectorised shingling, hashing and MinHash core: equal to xxhash and datasketch, and LSH equal to MinHashLSH."""

from __future__ import annotations

import random

import numpy as np
import pytest
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.curation.minhash import (
    KeyedUnionFind,
    MinHasher,
    UnionFind,
    band_keys,
    candidate_pairs,
    jaccard,
    lsh_bands,
    normalise_text,
    shingle_sets,
    shingles,
    xxh32_ranges,
)

TEXTS = [
    "Hello, World! this is   a test of the shingles, ok?",
    "",
    "a b",
    "Ünïcödé café naïve ﬁne ½ x_y __ 12 34 — ‘quoted’ “words”",
    "one two three four five six",
    "  ,, ;; ",
    "日本語のテキストも単語になる 東京 大阪",
    "emoji 🙂 between words 🙂🙂 and \ud800 a lone surrogate",
    "line\nbreaks\n\nand\ttabs between words in this short text",
]


def reference_minhash(text: str, kind: str, ngram: int, num_perm: int, seed: int) -> np.ndarray:
    """The naive datasketch way: one MinHash, one update() per shingle, xxh32 as the hash function."""
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest)
    for shingle in shingles(text, kind, ngram):  # type: ignore[arg-type]
        m.update(shingle)
    return m.hashvalues


def test_xxh32_over_byte_ranges_equals_xxhash_for_every_length_and_seed():
    rng = random.Random(3)
    pieces = [bytes(rng.randrange(256) for _ in range(length)) for length in range(0, 90)] * 2
    buffer = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    lengths = np.array([len(p) for p in pieces])
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    for seed in (0, 7, 2**32 - 1):
        hashes = xxh32_ranges(buffer, starts, lengths, seed=seed)
        assert hashes.tolist() == [xxhash.xxh32_intdigest(p, seed=seed) for p in pieces]


@pytest.mark.parametrize(("kind", "ngram"), [("word", 5), ("word", 1), ("word", 3), ("char", 3), ("char", 5)])
def test_shingle_sets_equal_the_hashes_of_the_reference_shingles(kind, ngram):
    texts = [normalise_text(t) for t in TEXTS]
    sets = shingle_sets(texts, kind, ngram)
    for i, text in enumerate(texts):
        expected = sorted({xxhash.xxh32_intdigest(s) for s in shingles(text, kind, ngram)})
        assert sets.get(i).tolist() == expected, text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=80), min_size=1, max_size=6),
       st.sampled_from(["word", "char"]), st.integers(1, 6))
def test_shingle_sets_match_the_reference_on_arbitrary_unicode(texts, kind, ngram):
    texts = [normalise_text(t) for t in texts]
    sets = shingle_sets(texts, kind, ngram)
    for i, text in enumerate(texts):
        assert sets.get(i).tolist() == sorted({xxhash.xxh32_intdigest(s) for s in shingles(text, kind, ngram)})


@pytest.mark.parametrize(("kind", "ngram", "num_perm", "seed"),
                         [("word", 5, 128, 1), ("word", 2, 64, 42), ("char", 4, 256, 7)])
def test_signatures_equal_datasketch_for_the_same_parameters_and_hash(kind, ngram, num_perm, seed):
    texts = [normalise_text(t) for t in TEXTS]
    signatures = MinHasher(num_perm, seed).signatures(shingle_sets(texts, kind, ngram))
    for i, text in enumerate(texts):
        assert np.array_equal(signatures[i], reference_minhash(text, kind, ngram, num_perm, seed)), text
    bulk = MinHash.bulk([shingles(t, kind, ngram) for t in texts], num_perm=num_perm, seed=seed,  # type: ignore[arg-type]
                        hashfunc=xxhash.xxh32_intdigest)
    assert all(np.array_equal(signatures[i], m.hashvalues) for i, m in enumerate(bulk))


def test_a_text_without_shingles_gets_the_empty_datasketch_signature():
    signatures = MinHasher(64, 1).signatures(shingle_sets(["", " ,;. "]))
    empty = MinHash(num_perm=64, seed=1).hashvalues
    assert np.array_equal(signatures[0], empty) and np.array_equal(signatures[1], empty)


def test_lsh_bands_and_rows_are_datasketchs_for_the_threshold():
    for threshold in (0.5, 0.8, 0.9):
        lsh = MinHashLSH(threshold=threshold, num_perm=128)
        assert lsh_bands(threshold, 128) == (lsh.b, lsh.r)
    assert lsh_bands(0.8, 128, bands=16, rows=8) == (16, 8)
    with pytest.raises(ValueError, match="exceeds num_perm"):
        lsh_bands(0.8, 64, bands=16, rows=8)


def _documents_with_near_duplicates(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    docs = [" ".join(rng.choices(vocab, k=60)) for _ in range(n)]
    for _ in range(n // 3):  # copies with a few words replaced: similarities spread around the threshold
        words = rng.choice(docs).split()
        for _ in range(rng.randint(0, 6)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        docs.append(" ".join(words))
    return docs


def test_candidate_pairs_are_exactly_those_minhashlsh_returns():
    docs = _documents_with_near_duplicates(300, seed=5)
    signatures = MinHasher(128, 1).signatures(shingle_sets(docs))
    bands, rows = lsh_bands(0.7, 128)
    members = np.arange(len(docs))
    ours = {tuple(p) for p in candidate_pairs(band_keys(signatures, bands, rows), members, 1000).tolist()}

    lsh = MinHashLSH(num_perm=128, params=(bands, rows))
    minhashes = [LeanMinHash(seed=1, hashvalues=s, scheme="affine32") for s in signatures]
    for i, m in enumerate(minhashes):
        lsh.insert(i, m)
    theirs = {(min(i, j), max(i, j)) for i, m in enumerate(minhashes) for j in lsh.query(m) if i != j}
    assert theirs and ours == theirs


def test_big_buckets_are_linked_in_a_chain_not_all_pairs():
    signatures = np.tile(np.arange(16, dtype=np.uint32), (40, 1))  # 40 identical signatures
    pairs = candidate_pairs(band_keys(signatures, 4, 4), np.arange(40), pair_limit=10)
    union = UnionFind(40)
    for i, j in pairs.tolist():
        union.union(i, j)
    assert len(pairs) < 40 * 39 // 2 and set(union.roots().tolist()) == {0}


def test_union_find_joins_chains_and_roots_are_smallest_members():
    union = UnionFind(7)
    for i, j in [(5, 3), (3, 1), (6, 4)]:
        union.union(i, j)
    assert union.roots().tolist() == [0, 1, 2, 1, 4, 1, 4]


def test_keyed_union_find_never_chains_members_with_different_keys():
    # keys: one field; 0 = unknown. 1 and 2 bridge nothing even through the unknown element 0.
    union = KeyedUnionFind(np.array([[0], [7], [9], [7]], dtype=np.uint64))
    assert union.union(0, 1)
    assert not union.union(0, 2)  # 0's set now knows the key 7
    assert union.union(3, 0)
    assert union.roots().tolist() == [0, 0, 2, 0]


def test_jaccard_is_exact_on_hashed_sets():
    a = np.array([1, 2, 3, 4], dtype=np.uint32)
    b = np.array([3, 4, 5], dtype=np.uint32)
    assert jaccard(a, b) == pytest.approx(2 / 5)
    assert jaccard(a, a) == 1.0
    assert jaccard(np.empty(0, np.uint32), np.empty(0, np.uint32)) == 1.0


def test_normalisation_folds_width_case_and_whitespace():
    assert normalise_text("ＨＥＬＬＯ\u3000  World\n") == "hello world"
    assert normalise_text("Hello,  World!", strip_punctuation=True) == "hello world"
    assert normalise_text("Hello  World", casefold=False) == "Hello World"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=8), st.data())
def test_taking_some_documents_keeps_exactly_their_shingle_sets(texts, data):
    sets = shingle_sets(texts, "char", 3)
    rows = np.asarray(data.draw(st.lists(st.integers(0, max(len(texts) - 1, 0)), max_size=len(texts)))
                      if texts else [], dtype=np.int64)
    taken = sets.take(rows)
    assert len(taken) == len(rows)
    for k, row in enumerate(rows.tolist()):
        assert taken.get(k).tolist() == sets.get(row).tolist()
