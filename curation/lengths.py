"""Length distributions in bounded memory: geometric histograms per role, quantiles read off them."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from curation.steps import Record, message_text
from schemas.report import LengthStats

# Edges 0, 1, then x1.1 up to 10^8 characters: quantiles within 10%, ~200 bins, fixed memory.
_EDGES = np.concatenate([[0.0, 1.0], np.unique(np.round(1.1 ** np.arange(1, 194)))])


class LengthHistogram:
    def __init__(self) -> None:
        self.counts: dict[str, np.ndarray] = {}
        self.total: dict[str, int] = {}
        self.sums: dict[str, int] = {}
        self.maxima: dict[str, int] = {}

    def add_records(self, records: Iterable[Record]) -> None:
        per_role: dict[str, list[int]] = {}
        for record in records:
            for message in record.get("messages", ()):
                per_role.setdefault(str(message.get("role")), []).append(len(message_text(message)))
        for role, lengths in per_role.items():
            self.add(role, lengths)

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
