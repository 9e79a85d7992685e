"""Judge statistics against worked examples, and PandaLM's published figures from its own files."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.evaluation.judge import metrics
from assay.evaluation.judge.engine import pairwise_label_agreement


def test_cohens_kappa_matches_the_textbook_example() -> None:
    # Two readers, 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.
    # p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert metrics.cohen_kappa(a, b) == pytest.approx(0.4)


def test_kappa_is_one_for_identical_raters_and_undefined_for_one_item() -> None:
    assert metrics.cohen_kappa(["a", "b", "tie"], ["a", "b", "tie"]) == pytest.approx(1.0)
    assert metrics.cohen_kappa(["a"], ["a"]) is None


def test_majority_vote_breaks_a_three_way_split_by_the_first_vote() -> None:
    assert metrics.majority_vote([2, 1, 1]) == 1
    assert metrics.majority_vote([2, 0, 1]) == 2


def test_win_rates_count_a_tie_as_half_a_win() -> None:
    rates = metrics.win_rates(["a", "a", "b", "tie"])
    assert rates["win_rate_a"] == 0.5 and rates["tie_adjusted_win_rate_a"] == pytest.approx(0.625)
    assert metrics.win_rates([])["tie_adjusted_win_rate_a"] is None


def test_the_bootstrap_interval_brackets_the_mean() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0, 1.0, 0.0, 1.0] * 5
    low, high = metrics.bootstrap_ci(values)
    assert low is not None and high is not None
    assert low < sum(values) / len(values) < high and low >= 0.0 and high <= 1.0
    assert metrics.bootstrap_ci([3.0]) == (None, None)
    assert metrics.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_agreement_without_ties_drops_pairs_where_either_side_is_a_tie() -> None:
    result = pairwise_label_agreement("label", ["a", "b", "tie", "a"], ["a", "a", "a", "tie"])
    assert result.agreement == 0.25
    assert result.n_without_ties == 2 and result.agreement_without_ties == 0.5
    assert result.confusion == {"a": {"a": 1, "tie": 1}, "b": {"a": 1}, "tie": {"a": 1}}


def test_pandalm_published_figures_are_reproduced_from_its_stored_verdicts(external_data: Path) -> None:
    from assay.evaluation.judge.datasets import PANDALM_PUBLISHED, reproduce_pandalm

    if not (external_data / "judge" / "pandalm_testset-v1.json").is_file():
        pytest.skip("PandaLM files not in the shared data")
    result = reproduce_pandalm()
    assert result.items == 999
    assert result.label_counts == PANDALM_PUBLISHED["label_counts"]
    for pair, published in PANDALM_PUBLISHED["annotator_kappa"].items():
        assert result.annotator_kappa[pair] == pytest.approx(published, abs=0.005)
    for judge in result.judges:
        figures = judge.agreement
        published = PANDALM_PUBLISHED[judge.judge]
        assert figures.agreement == pytest.approx(published["accuracy"], abs=5e-5)
        assert figures.macro_precision == pytest.approx(published["macro_precision"], abs=5e-5)
        assert figures.macro_recall == pytest.approx(published["macro_recall"], abs=5e-5)
        assert figures.macro_f1 == pytest.approx(published["macro_f1"], abs=5e-5)
