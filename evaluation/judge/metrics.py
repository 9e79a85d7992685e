"""Agreement and reliability statistics for judges: pure functions over plain lists (no I/O, no models).

The same functions score a live judge run and the stored verdicts that come with PandaLM, so a reproduced
published figure checks this code.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any, TypeVar

T = TypeVar("T", bound=Hashable)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable], *, labels: Sequence[Hashable] | None = None,
                weights: str | None = None) -> float | None:
    """Cohen's kappa between two raters (scikit-learn's); None when undefined (fewer than 2 items or one class)."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    if len(a) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(cohen_kappa_score(list(a), list(b), labels=list(labels) if labels else None, weights=weights))
    return None if math.isnan(value) else value


def majority_vote(votes: Sequence[T]) -> T:
    """The most common vote; among equally common votes the one seen first (PandaLM's rule for its labels)."""
    counts = Counter(votes)
    best = max(counts.values())
    return next(v for v in votes if counts[v] == best)


def agreement(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    if not a:
        return None
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def macro_prf(truth: Sequence[Hashable], predicted: Sequence[Hashable],
              labels: Sequence[Hashable]) -> tuple[float, float, float]:
    """Macro-averaged precision, recall and F1 over `labels` (a class never predicted has precision 0)."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(list(truth), list(predicted), labels=list(labels),
                                                               average="macro", zero_division=0)
    return float(precision), float(recall), float(f1)


def confusion(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for t, p in zip(truth, predicted, strict=True):
        row = table.setdefault(t, {})
        row[p] = row.get(p, 0) + 1
    return table


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean (scipy); (None, None) with fewer than two values."""
    if len(values) < 2:
        return None, None
    import numpy as np

    data = np.asarray(values, dtype=float)
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    from scipy.stats import bootstrap

    result = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile",
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def correlations(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """Pearson r, Spearman rho and Spearman's p-value; None where undefined (constant input, < 3 points)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None, None
    from scipy.stats import pearsonr, spearmanr

    pearson = float(pearsonr(x, y).statistic)
    rho = spearmanr(x, y)
    return pearson, float(rho.statistic), float(rho.pvalue)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    return correlations(x, y)[1]


def sample_agreement(samples: Sequence[Hashable]) -> float | None:
    """Share of an item's samples that equal its most common verdict; None for a single sample."""
    if len(samples) < 2:
        return None
    return Counter(samples).most_common(1)[0][1] / len(samples)


def win_rates(outcomes: Sequence[str]) -> dict[str, float | int | None]:
    """Counts and rates from final pairwise outcomes ('a', 'b', 'tie')."""
    n = len(outcomes)
    wins_a, wins_b, ties = outcomes.count("a"), outcomes.count("b"), outcomes.count("tie")
    if n == 0:
        return {"n": 0, "wins_a": 0, "wins_b": 0, "ties": 0, "win_rate_a": None, "win_rate_b": None,
                "tie_rate": None, "tie_adjusted_win_rate_a": None}
    return {"n": n, "wins_a": wins_a, "wins_b": wins_b, "ties": ties, "win_rate_a": wins_a / n,
            "win_rate_b": wins_b / n, "tie_rate": ties / n, "tie_adjusted_win_rate_a": (wins_a + ties / 2) / n}


def outcome_points(outcome: str) -> float:
    """1 for a win of a, 0.5 for a tie, 0 for a loss: the per-item value behind the tie-adjusted win rate."""
    return {"a": 1.0, "tie": 0.5, "b": 0.0}[outcome]
