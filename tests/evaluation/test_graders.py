"""The OpenAI-Evals graders: string checks, text similarity against the libraries' own figures, model-graded
scores and labels read from replies, and template errors reported per item."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from assay.evaluation.graders import (
    Grader,
    GraderError,
    check_templates,
    find_label,
    grade,
    parse_number,
    similarity,
)

GRADER: TypeAdapter[Any] = TypeAdapter(Grader)


def _grader(**fields: Any) -> Any:
    return GRADER.validate_python({"name": "g", **fields})


@pytest.mark.parametrize(("operation", "output", "passed"), [
    ("eq", "Paris", True), ("eq", "paris", False), ("ne", "Rome", True), ("like", "It is Paris.", True),
    ("like", "It is paris.", False), ("ilike", "IT IS PARIS", True), ("ilike", "Lyon", False)])
def test_string_check_operations(operation: str, output: str, passed: bool) -> None:
    grader = _grader(type="string_check", input="{{ sample.output_text }}", reference="{{ item.answer }}",
                     operation=operation)
    result = grade(grader, {"answer": "Paris"}, {"output_text": output})
    assert (result.passed, result.score) == (passed, float(passed))


def test_similarity_metrics_equal_the_libraries_own_figures() -> None:
    import sacrebleu
    from rapidfuzz import fuzz
    from rouge_score import rouge_scorer

    prediction, reference = "the cat sat on the mat today", "the cat sat on the mat"
    assert similarity("fuzzy_match", prediction, reference) == pytest.approx(fuzz.ratio(prediction, reference) / 100)
    assert similarity("bleu", prediction, reference) == pytest.approx(
        sacrebleu.sentence_bleu(prediction, [reference]).score / 100)
    scorer = rouge_scorer.RougeScorer(["rouge2", "rougeL"])
    expected = scorer.score(reference, prediction)
    assert similarity("rouge_2", prediction, reference) == pytest.approx(expected["rouge2"].fmeasure)
    assert similarity("rouge_l", prediction, reference) == pytest.approx(expected["rougeL"].fmeasure)
    grader = _grader(type="text_similarity", input="{{ sample.output_text }}", reference="{{ item.ref }}",
                     evaluation_metric="rouge_l", pass_threshold=0.9)
    result = grade(grader, {"ref": reference}, {"output_text": prediction})
    assert result.score == pytest.approx(expected["rougeL"].fmeasure) and result.passed is (result.score >= 0.9)


def test_scores_and_labels_are_read_from_the_reply() -> None:
    assert parse_number("I think 2. Result: 4", 1, 5) == 4
    assert parse_number("Result: 9", 1, 5) is None  # out of range
    assert parse_number("a solid answer, 3.5 overall", 1, 5) == 3.5
    assert parse_number("no number", 1, 5) is None
    assert find_label("not bad... Result: good", ["good", "bad"]) == "good"
    assert find_label("It is good, but overall bad", ["good", "bad"]) == "bad"  # the last one named
    assert find_label("goodness", ["good", "bad"]) is None  # whole words only


def test_model_graders_ask_with_the_rendered_prompt_and_grade_the_answer() -> None:
    asked: list[list[dict[str, str]]] = []

    def ask(model: str, messages: list[dict[str, str]], sampling: Any) -> str:
        asked.append(messages)
        return "Looks right. Result: 4" if model == "judge" else "Result: no"

    score = _grader(type="score_model", model="judge", range=[1, 5], pass_threshold=3,
                    input=[{"role": "user", "content": "Rate '{{ sample.output_text }}' for {{ item.q }}"}])
    result = grade(score, {"q": "2+2"}, {"output_text": "4"}, ask)
    assert (result.passed, result.score) == (True, 4.0)
    assert asked[0][0]["content"] == "Rate '4' for 2+2" and "Result: <score>" in asked[0][-1]["content"]
    label = _grader(type="label_model", model="other", labels=["yes", "no"], passing_labels=["yes"],
                    input=[{"role": "user", "content": "Correct? {{ sample.output_text }}"}])
    assert grade(label, {}, {"output_text": "5"}, ask).passed is False


def test_template_problems_are_errors_of_the_item_or_of_the_eval() -> None:
    grader = _grader(type="string_check", input="{{ sample.output_text }}", reference="{{ item.missing }}",
                     operation="eq")
    result = grade(grader, {"answer": "x"}, {"output_text": "x"})
    assert result.passed is False and "missing" in (result.error or "")
    with pytest.raises(GraderError, match="template"):
        check_templates(_grader(type="string_check", input="{{ sample.output_text", reference="x", operation="eq"))
    with pytest.raises(GraderError, match="not among labels"):
        check_templates(_grader(type="label_model", model="m", labels=["a", "b"], passing_labels=["c"],
                                input=[{"role": "user", "content": "x"}]))


def test_templates_cannot_reach_python_internals() -> None:
    grader = _grader(type="string_check", input="{{ item.__class__.__mro__ }}", reference="x", operation="eq")
    result = grade(grader, {"a": 1}, {})
    assert result.passed is False and result.error is not None
