"""Reading judge replies: only the last, well-formed verdict counts, whatever else the judge writes."""

from __future__ import annotations

import math

import pytest

from assay.evaluation.judge.parsing import (
    choice_in_record_terms,
    parse_choice,
    parse_label,
    parse_score,
    strip_think,
    weighted_score,
)

FIVE = [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize(("reply", "expected"), [
    ("Feedback: solid answer. [RESULT] 4", 4),
    ("[RESULT]: (3)", 3),
    ("[result] 2.", 2),
    ("Feedback: ok [ RESULT ] 5\n</s>", 5),
    # a score quoted in the feedback never wins over the final verdict
    ("Feedback: a perfect reply would earn [RESULT] 5, but this one misses a step. [RESULT] 2", 2),
    ("Feedback: 5/5 would be too generous; I give [RESULT] 3", 3),
])
def test_the_last_well_formed_result_is_the_score(reply: str, expected: int) -> None:
    parsed = parse_score(reply, "prometheus", FIVE)
    assert parsed is not None and parsed.score == expected


@pytest.mark.parametrize("reply", [
    "Feedback: good. Score: 4",  # no marker
    "Feedback: good. [RESULT] 4.5",  # not an integer level
    "Feedback: good. [RESULT] 7",  # outside the rubric's levels
    "Feedback: good. [RESULT] 45",
    "Feedback: good. [RESULT] \uff14",  # a full-width digit is not an ASCII score
    "Feedback: good. [RESULT] four",
    # an echoed format line after the verdict: the last marker is malformed, so no earlier number is used
    "Feedback: fine [RESULT] 4\nOutput format: [RESULT] (an integer between 1 and 5)",
    "",
])
def test_malformed_or_missing_verdicts_do_not_parse(reply: str) -> None:
    assert parse_score(reply, "prometheus", FIVE) is None


def test_incorrect_never_reads_as_correct() -> None:
    reply = "Reasoning... [RESULT] INCORRECT"
    assert parse_label(reply, ["CORRECT", "INCORRECT"]) == ("INCORRECT", reply.index("INCORRECT"))
    assert parse_label("[RESULT] correct.", ["CORRECT", "INCORRECT"])[0] == "CORRECT"  # type: ignore[index]
    assert parse_label("[RESULT] CORRECTLY answered", ["CORRECT", "INCORRECT"]) is None
    assert parse_label("[RESULT] NOT CORRECT", ["CORRECT", "INCORRECT"]) is None


@pytest.mark.parametrize(("reply", "expected"), [
    ("Feedback: A rambles. [RESULT] B", "B"),
    ("[RESULT] Response A", "A"),
    ("[RESULT] tie", "TIE"),
    ("At first I thought [RESULT] A, but on reflection [RESULT] B", "B"),
    ("[RESULT] Both are fine", None),
    ("[RESULT] Better: A", None),
    ("Assistant A is better.", None),
])
def test_pairwise_verdicts_read_the_last_marker_as_a_whole_word(reply: str, expected: str | None) -> None:
    parsed = parse_choice(reply, "prometheus")
    assert (parsed.shown if parsed else None) == expected


def test_mt_bench_formats() -> None:
    ten = [float(s) for s in range(1, 11)]
    assert parse_score("The answer [[7]] is quoted... Rating: [[8]]", "mt_bench", ten).score == 8  # type: ignore[union-attr]
    assert parse_score("Rating: [[8.5]]", "mt_bench", ten).score == 8.5  # type: ignore[union-attr]
    assert parse_score("Rating: [[11]]", "mt_bench", ten) is None
    assert parse_score("Rating: [8]", "mt_bench", ten) is None
    assert parse_choice("[[A]] was my first guess; final: [[C]]", "mt_bench").shown == "TIE"  # type: ignore[union-attr]
    assert parse_choice("[[D]]", "mt_bench") is None


def test_a_verdict_maps_back_to_the_record_through_the_order_shown() -> None:
    assert choice_in_record_terms("A", "ab") == "a" and choice_in_record_terms("A", "ba") == "b"
    assert choice_in_record_terms("B", "ba") == "a" and choice_in_record_terms("TIE", "ba") == "tie"


def test_a_think_block_is_not_read() -> None:
    assert strip_think("<think>[RESULT] 1</think>Feedback: ok") == "Feedback: ok"
    assert parse_score(strip_think("<think>maybe [RESULT] 1</think>"), "prometheus", FIVE) is None


def test_the_weighted_score_is_the_expectation_over_the_score_token() -> None:
    tokens = [("Feedback", []), (": ok", []), (" [RESULT]", []),
              (" 4", [(" 4", math.log(0.6)), (" 5", math.log(0.3)), (" 3", math.log(0.05)), (" x", math.log(0.05))])]
    text = "".join(t for t, _ in tokens)
    # only valid scores count, renormalised: (4*.6 + 5*.3 + 3*.05) / .95
    assert weighted_score(tokens, text, "prometheus", FIVE) == pytest.approx((2.4 + 1.5 + 0.15) / 0.95)


def test_no_weighted_score_when_the_token_does_not_carry_exactly_the_score() -> None:
    fused = [("[RESULT] 4.", [("[RESULT] 4.", -0.1)])]
    assert weighted_score(fused, "[RESULT] 4.", "prometheus", FIVE) is None
    # on a 1-10 scale a "1" token could start "10": never weighted
    ten = [float(s) for s in range(1, 11)]
    split = [("Rating: [[", []), ("1", [("1", -0.1), ("9", -2.0)]), ("0", []), ("]]", [])]
    assert weighted_score(split, "Rating: [[10]]", "mt_bench", ten) is None


def test_the_built_in_rubrics_load() -> None:
    from assay.evaluation.judge.rubrics import builtin_rubrics, load_rubric

    assert builtin_rubrics() == ["helpfulness", "pairwise"]
    helpfulness = load_rubric("helpfulness")
    assert [c.name for c in helpfulness.criteria] == ["helpfulness", "correctness"]
    assert all(len(c.levels) == 5 for c in helpfulness.criteria)
    assert load_rubric("pairwise").mode == "pairwise"
