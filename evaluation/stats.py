"""Paired comparison of two models on the same items: bootstrap interval, p-value and verdict.

The items are resampled with replacement, the same indices for both models (scipy.stats.bootstrap with
paired=True), so the interval reflects item-to-item variation of the *difference*, which is much narrower
than two independent intervals would suggest when the models agree on most items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from assay.schemas.evaluation import Verdict

Statistic = Callable[..., np.ndarray]


@dataclass(frozen=True)
class PairedResult:
    difference: float  # tuned - base, on all items
    ci_low: float
    ci_high: float
    p_value: float
    stderr: float  # bootstrap standard error of the difference
    n_items: int
    resampled: bool = True  # False: fewer than two items or identical scores, nothing to resample

    @property
    def significant(self) -> bool:
        """The interval excludes zero (never on one item or on identical scores)."""
        return self.resampled and (self.ci_low > 0 or self.ci_high < 0)


def mean_difference(base: np.ndarray, tuned: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(tuned.mean(axis=axis) - base.mean(axis=axis))


def per_token_loss(loglikelihoods: np.ndarray, tokens: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean negative log-likelihood per token over the items: sum(-ll) / sum(tokens)."""
    return np.asarray(-loglikelihoods.sum(axis=axis) / np.maximum(tokens.sum(axis=axis), 1))


def loss_difference(base: np.ndarray, tuned: np.ndarray, tokens: np.ndarray, axis: int = -1) -> np.ndarray:
    return per_token_loss(tuned, tokens, axis) - per_token_loss(base, tokens, axis)


def perplexity_difference(base: np.ndarray, tuned: np.ndarray, tokens: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(per_token_loss(tuned, tokens, axis)) - np.exp(per_token_loss(base, tokens, axis))


def paired_bootstrap(data: tuple[np.ndarray, ...], statistic: Statistic = mean_difference,
                     n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> PairedResult:
    """Percentile interval and two-sided p-value of `statistic` (a difference) under paired resampling.

    The p-value is twice the smaller tail share of resampled differences at or beyond zero (with the +1
    correction of a Monte Carlo p-value), so p < 1 - confidence exactly when the interval excludes zero.
    """
    from scipy.stats import bootstrap

    arrays = tuple(np.asarray(a, dtype=np.float64) for a in data)
    n = len(arrays[0])
    observed = float(statistic(*arrays, axis=-1))
    if n < 2 or all(np.array_equal(arrays[0], a) for a in arrays[1:2]):
        # one item, or identical scores: no variation to resample; the difference is what it is
        return PairedResult(observed, observed, observed, 1.0, 0.0, n, resampled=False)
    batch = max(1, min(n_resamples, 20_000_000 // max(n, 1)))  # bound memory: batch x n floats per array
    result = bootstrap(arrays, statistic, n_resamples=n_resamples, batch=batch, vectorized=True, paired=True,
                       axis=-1, confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    resampled = np.asarray(result.bootstrap_distribution)
    below = (np.count_nonzero(resampled <= 0) + 1) / (len(resampled) + 1)
    above = (np.count_nonzero(resampled >= 0) + 1) / (len(resampled) + 1)
    return PairedResult(observed, float(result.confidence_interval.low), float(result.confidence_interval.high),
                        float(min(1.0, 2 * min(below, above))), float(result.standard_error), n)


def verdict(result: PairedResult, higher_is_better: bool) -> Verdict:
    """better / worse when the interval excludes zero, in the metric's good direction; else no difference."""
    if result.significant:
        improved = (result.ci_low > 0) == higher_is_better
        return "better" if improved else "worse"
    return "no_significant_difference"


def bootstrap_stderr(data: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], n_resamples: int = 2000,
                     seed: int = 0) -> float | None:
    """Standard error of a statistic that is not a plain mean (per-token loss), by bootstrap over items."""
    from scipy.stats import bootstrap

    arrays = tuple(np.asarray(a, dtype=np.float64) for a in data)
    if len(arrays[0]) < 2:
        return None
    result = bootstrap(arrays, statistic, n_resamples=n_resamples, vectorized=True, paired=True, axis=-1,
                       method="percentile", rng=np.random.default_rng(seed))
    return float(result.standard_error)
