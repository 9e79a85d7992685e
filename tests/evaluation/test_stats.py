"""The paired bootstrap: its interval matches a direct computation, its p-value agrees with the interval, and
verdicts follow the metric's direction."""

from __future__ import annotations

import numpy as np

from assay.evaluation.stats import (
    PairedResult,
    loss_difference,
    paired_bootstrap,
    per_token_loss,
    verdict,
)


def direct_paired_interval(base: np.ndarray, tuned: np.ndarray, resamples: int, confidence: float,
                           seed: int) -> tuple[float, float, np.ndarray]:
    """The textbook loop: draw n item indices with replacement, the same for both models, take the mean
    difference; the interval is the percentiles of those differences."""
    rng = np.random.default_rng(seed)
    n = len(base)
    diffs = np.empty(resamples)
    for b in range(resamples):
        idx = rng.integers(0, n, n)
        diffs[b] = tuned[idx].mean() - base[idx].mean()
    alpha = (1 - confidence) / 2
    return float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha)), diffs


def test_the_interval_matches_a_direct_bootstrap_loop() -> None:
    rng = np.random.default_rng(3)
    base = (rng.random(300) < 0.45).astype(float)
    flips = rng.random(300)
    tuned = np.where(flips < 0.15, 1.0, np.where(flips < 0.2, 0.0, base))  # gains 15%, loses 5% of items
    result = paired_bootstrap((base, tuned), n_resamples=20_000, confidence=0.95, seed=11)
    low, high, diffs = direct_paired_interval(base, tuned, 20_000, 0.95, seed=99)
    assert result.difference == tuned.mean() - base.mean()
    # two Monte Carlo estimates of the same percentiles: equal to well under a percentage point
    assert abs(result.ci_low - low) < 0.006 and abs(result.ci_high - high) < 0.006
    assert abs(result.stderr - diffs.std(ddof=1)) < 0.002
    # and both agree with the analytic standard error of a paired mean difference
    analytic = (tuned - base).std(ddof=1) / np.sqrt(len(base))
    assert abs(result.stderr - analytic) < 0.1 * analytic


def test_the_p_value_is_below_alpha_exactly_when_the_interval_excludes_zero() -> None:
    rng = np.random.default_rng(5)
    for shift in (0.0, 0.05, 0.1, 0.2, -0.15):
        base = (rng.random(200) < 0.5).astype(float)
        tuned = np.where(rng.random(200) < abs(shift), float(shift > 0), base)
        result = paired_bootstrap((base, tuned), n_resamples=4000, seed=1)
        excludes_zero = result.ci_low > 0 or result.ci_high < 0
        assert (result.p_value < 0.05) == excludes_zero or min(abs(result.ci_low), abs(result.ci_high)) < 1e-9


def test_verdicts_follow_the_metric_direction() -> None:
    up = PairedResult(0.1, 0.05, 0.15, 0.001, 0.02, 100)
    flat = PairedResult(0.01, -0.02, 0.04, 0.4, 0.02, 100)
    assert verdict(up, higher_is_better=True) == "better"
    assert verdict(up, higher_is_better=False) == "worse"  # e.g. perplexity went up
    assert verdict(flat, higher_is_better=True) == "no_significant_difference"


def test_identical_scores_and_single_items_are_never_significant() -> None:
    same = np.array([1.0, 0.0, 1.0, 1.0])
    result = paired_bootstrap((same, same.copy()))
    assert (result.difference, result.p_value, verdict(result, True)) == (0.0, 1.0, "no_significant_difference")
    one = paired_bootstrap((np.array([0.0]), np.array([1.0])))
    assert one.difference == 1.0 and verdict(one, True) == "no_significant_difference"


def test_per_token_loss_weights_items_by_their_tokens() -> None:
    ll = np.array([-10.0, -1.0])
    tokens = np.array([10.0, 1.0])
    assert per_token_loss(ll, tokens) == 1.0  # (10 + 1) / (10 + 1), not the mean of per-item losses
    base, tuned = np.array([-20.0, -2.0]), np.array([-10.0, -1.0])
    result = paired_bootstrap((base, tuned, tokens), loss_difference, n_resamples=500)
    assert result.difference == -1.0 and result.ci_low <= -1.0 <= result.ci_high
