"""Length distributions in bounded memory: geometric histograms per role, quantiles read off them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from assay.curation.steps import Record, StepConfigError, message_text
from assay.schemas.report import LengthSection, LengthStats

# Edges 0, 1, then x1.1 up to 10^8 characters: quantiles within 10%, ~200 bins, fixed memory.
_EDGES = np.concatenate([[0.0, 1.0], np.unique(np.round(1.1 ** np.arange(1, 194)))])

TextMeasure = Callable[[list[str]], list[int]]
"""Maps a batch of message texts to their lengths (characters, tokens, ...)."""


class TokenizerLoadError(StepConfigError):
    """The tokenizer named for token lengths could not be loaded."""


def character_lengths(texts: list[str]) -> list[int]:
    return [len(text) for text in texts]


def token_measure(tokenizer: str | Path) -> TextMeasure:
    """A measure counting tokens (no special tokens) with a transformers tokenizer: a local folder, or a
    hub id already in the local cache when HF_HUB_OFFLINE=1."""
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(str(tokenizer))
    except (OSError, ValueError, KeyError) as exc:
        raise TokenizerLoadError(f"tokenizer '{tokenizer}' could not be loaded for token lengths: {exc}") from exc
    backend = getattr(loaded, "backend_tokenizer", None)
    if backend is not None:
        # The Rust tokenizer directly: batched, and no "longer than model_max_length" warnings.
        def count_fast(texts: list[str]) -> list[int]:
            return [len(enc.ids) for enc in backend.encode_batch(texts, add_special_tokens=False)]

        return count_fast

    def count_slow(texts: list[str]) -> list[int]:
        return [len(ids) for ids in loaded(texts, add_special_tokens=False, verbose=False)["input_ids"]]

    return count_slow


class LengthHistogram:
    def __init__(self, measure: TextMeasure | None = None) -> None:
        self.measure = measure or character_lengths
        self.counts: dict[str, np.ndarray] = {}
        self.total: dict[str, int] = {}
        self.sums: dict[str, int] = {}
        self.maxima: dict[str, int] = {}

    def add_records(self, records: Iterable[Record]) -> None:
        per_role: dict[str, list[str]] = {}
        for record in records:
            for message in record.get("messages", ()):
                per_role.setdefault(str(message.get("role")), []).append(message_text(message))
        for role, texts in per_role.items():
            self.add(role, self.measure(texts))

    def add(self, role: str, lengths: list[int]) -> None:
        values = np.asarray(lengths, dtype=np.int64)
        idx = np.searchsorted(_EDGES, values, side="right") - 1
        counts = self.counts.setdefault(role, np.zeros(len(_EDGES), dtype=np.int64))
        np.add.at(counts, idx, 1)
        self.total[role] = self.total.get(role, 0) + len(values)
        self.sums[role] = self.sums.get(role, 0) + int(values.sum())
        self.maxima[role] = max(self.maxima.get(role, 0), int(values.max()) if len(values) else 0)

    def stats(self) -> dict[str, LengthStats]:
        out = {}
        for role, counts in self.counts.items():
            n = self.total[role]
            cumulative = np.cumsum(counts)

            def quantile(q: float, cumulative: np.ndarray = cumulative, n: int = n) -> float:
                i = int(np.searchsorted(cumulative, math.ceil(q * n)))
                return float(_EDGES[min(i, len(_EDGES) - 1)])

            nonzero = np.nonzero(counts)[0]
            lo, hi = (int(nonzero[0]), int(nonzero[-1]) + 1) if len(nonzero) else (0, 1)
            out[role] = LengthStats(
                count=n, mean=self.sums[role] / n if n else 0.0, p50=quantile(0.5), p90=quantile(0.9),
                p99=quantile(0.99), max=self.maxima[role], histogram=counts[lo:hi].tolist(),
                bin_edges=_EDGES[lo:hi + 1].tolist() if hi < len(_EDGES) else [*_EDGES[lo:].tolist(), float("inf")],
            )
        return out


class LengthProfile:
    """Message lengths per role before and after the steps: characters always, tokens when a tokenizer
    is named (loaded once, here, so a bad name fails before any record is read)."""

    def __init__(self, tokenizer: str | Path | None = None) -> None:
        self.tokenizer = str(tokenizer) if tokenizer else None
        self.characters = (LengthHistogram(), LengthHistogram())
        self.tokens: tuple[LengthHistogram, LengthHistogram] | None = None
        if self.tokenizer:
            measure = token_measure(self.tokenizer)
            self.tokens = (LengthHistogram(measure), LengthHistogram(measure))

    def add_before(self, records: list[Record]) -> None:
        self.characters[0].add_records(records)
        if self.tokens:
            self.tokens[0].add_records(records)

    def add_after(self, records: list[Record]) -> None:
        self.characters[1].add_records(records)
        if self.tokens:
            self.tokens[1].add_records(records)

    def sections(self) -> list[LengthSection]:
        out = [LengthSection(unit="characters", before=self.characters[0].stats(),
                             after=self.characters[1].stats())]
        if self.tokens:
            out.append(LengthSection(unit="tokens", tokenizer=self.tokenizer, before=self.tokens[0].stats(),
                                     after=self.tokens[1].stats()))
        return out
