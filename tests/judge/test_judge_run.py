"""`assay judge` end to end against a real `assay serve-model` (the scripted tiny judge) on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from assay.api.cli import app
from assay.api.model_server_process import ModelServerProcess

runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def judge(*args: str) -> Any:
    result = runner.invoke(app, ["judge", *args, "--quiet"], catch_exceptions=False)
    return result


def read_report(out: Path) -> dict[str, Any]:
    return json.loads((out / "judge_report.json").read_text())


def read_verdicts(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]


ABSOLUTE_ROWS = [
    {"id": "q1", "prompt": "Say beta.", "response": "beta", "reference": "beta", "human": 4},
    {"id": "q2", "prompt": "Say alpha.", "response": "alpha and a much longer answer than needed", "human": 5},
    {"id": "q3", "prompt": "Name a colour.", "response": "red", "reference": "blue", "human": 4},
    {"id": "q4", "prompt": "Count to two.", "response": "one two", "human": 3},
]
PAIRWISE_ROWS = [
    {"id": "p1", "prompt": "Say beta.", "response_a": "beta", "response_b": "alpha", "label": "a"},
    {"id": "p2", "prompt": "Say alpha.", "response_a": "beta", "response_b": "alpha", "label": 2},
    {"id": "p3", "prompt": "Say hi.", "response_a": "hi", "response_b": "hello", "label": "tie"},
]


def test_absolute_scores_are_probability_weighted_and_a_rerun_costs_no_calls(
        model_server: ModelServerProcess, rubric_files: dict[str, Path], tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "answers.jsonl", ABSOLUTE_ROWS)
    common = [str(data), "--rubric", str(rubric_files["absolute"]), "--judge-model", "judge", "--judge-url",
              model_server.base_url, "--cache", str(tmp_path / "cache.sqlite"), "--label-field", "human",
              "--concurrency", "4"]
    first = judge(*common, "--out", str(tmp_path / "run1"))
    assert first.exit_code == 0, first.output
    report, verdicts = read_report(tmp_path / "run1"), read_verdicts(tmp_path / "run1")
    assert len(verdicts) == 4 * 2  # items x criteria
    assert {v["status"] for v in verdicts} == {"ok"} and {v["score"] for v in verdicts} == {4.0}
    # 4 x 0.6 + 5 x 0.3 + 3 x 0.1, read from the top logprobs at the rating token
    assert all(v["weighted_score"] == pytest.approx(4.2, abs=0.01) for v in verdicts)
    assert [c["mean"] for c in report["criteria"]] == [pytest.approx(4.2, abs=0.01)] * 2
    assert report["overall"]["mean"] == pytest.approx(4.2, abs=0.01) and report["overall"]["n"] == 4
    assert report["calls"]["parse_failure_rate"] == 0 and report["calls"]["cached"] == 0
    checks = {(c["name"], c["target"]): c for c in report["checks"]}
    assert checks[("has_reference", "response")]["passed"] == 1 and checks[("has_reference", "response")][
        "failed"] == 1 and checks[("has_reference", "response")]["not_applicable"] == 2
    assert checks[("short", "response")]["failed"] == 1
    labels = report["labels"]
    assert labels["n"] == 4 and labels["agreement"] == 0.5  # 4.2 rounds to 4: right for q1 and q3
    assert report["length_bias"]["n"] == 4
    assert (tmp_path / "run1" / "judge_report.html").read_text().startswith("<!doctype html>")
    assert "# Judge report" in (tmp_path / "run1" / "judge_report.md").read_text()

    again = judge(*common, "--out", str(tmp_path / "run2"))
    assert again.exit_code == 0, again.output
    cached = read_report(tmp_path / "run2")
    assert cached["calls"]["cached"] == cached["calls"]["requests"] == 8
    assert [v["raw"] for v in read_verdicts(tmp_path / "run2")] == [v["raw"] for v in verdicts]


def test_without_logprobs_the_score_is_the_median_of_samples(
        model_server: ModelServerProcess, rubric_files: dict[str, Path], tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "answers.jsonl", ABSOLUTE_ROWS[:2])
    result = judge(str(data), "--rubric", str(rubric_files["absolute"]), "--judge-model", "judge", "--judge-url",
                   model_server.base_url, "--no-cache", "--no-logprobs", "--samples", "5", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    report, verdicts = read_report(tmp_path / "o"), read_verdicts(tmp_path / "o")
    assert len(verdicts) == 2 * 2 * 5 and all(v["weighted_score"] is None for v in verdicts)
    assert {v["score"] for v in verdicts} <= {3.0, 4.0, 5.0} and len({v["score"] for v in verdicts}) > 1
    assert report["settings"]["temperature"] == 0.7  # samples at temperature 0 would all agree
    for item in report["results"]:
        for criterion, score in item["scores"].items():
            scores = sorted(v["score"] for v in verdicts if v["item_id"] == item["id"] and v["criterion"] == criterion)
            assert score == scores[2]  # the median of five
    assert 0 < report["sample_agreement"] <= 1


def test_pairwise_judges_both_orders_and_a_position_biased_judge_gets_only_ties(
        model_server: ModelServerProcess, rubric_files: dict[str, Path], tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRWISE_ROWS)
    result = judge(str(data), "--rubric", str(rubric_files["pairwise"]), "--judge-model", "judge", "--judge-url",
                   model_server.base_url, "--no-cache", "--label-field", "label", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    report, verdicts = read_report(tmp_path / "o"), read_verdicts(tmp_path / "o")
    # the judge always names the response shown first: a in order ab, b in order ba
    ids = ("p1", "p2", "p3")
    assert sorted((v["item_id"], v["order"], v["choice"]) for v in verdicts) == sorted(
        [(i, "ab", "a") for i in ids] + [(i, "ba", "b") for i in ids])
    pairwise = report["pairwise"]
    assert pairwise["ties"] == 3 and pairwise["tie_adjusted_win_rate_a"] == 0.5
    assert pairwise["position_consistency"] == 0 and pairwise["first_position_rate"] == 1
    assert any("position consistency" in w for w in report["warnings"])
    labels = report["labels"]
    assert labels["n"] == 3 and labels["agreement"] == pytest.approx(1 / 3) and labels["n_without_ties"] == 0


def test_a_judge_that_ignores_the_format_is_retried_and_reported_not_crashed(
        tiny_model: Path, rubric_files: dict[str, Path], tmp_path: Path) -> None:
    # The untrained tiny model, loaded in this process (the transformers backend), writes noise.
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRWISE_ROWS[:2])
    result = judge(str(data), "--rubric", str(rubric_files["pairwise"]), "--judge-model", str(tiny_model),
                   "--no-cache", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    report, verdicts = read_report(tmp_path / "o"), read_verdicts(tmp_path / "o")
    assert report["backend"] == "transformers"
    assert report["calls"]["parse_failure_rate"] == 1.0
    assert report["calls"]["retried"] == 4 and len(verdicts) == 8  # 2 pairs x 2 orders x (1 + 1 retry)
    assert report["pairwise"]["n"] == 0 and any("could not be parsed" in w for w in report["warnings"])
    assert "Unparsed or failed replies" in (tmp_path / "o" / "judge_report.html").read_text()


def test_calibrate_on_pandalm_prints_the_stored_judges_beside(model_server: ModelServerProcess, tmp_path: Path,
                                                              external_data: Path, rubric_files: dict[str, Path]
                                                              ) -> None:
    result = judge("calibrate", "--set", "pandalm", "--limit", "4", "--rubric", str(rubric_files["pairwise"]),
                   "--judge-model", "judge", "--judge-url", model_server.base_url, "--no-cache",
                   "--out", str(tmp_path / "cal"))
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "cal")
    assert report["calls"]["errors"] == 0
    assert report["labels"]["n"] == 4 and report["pairwise"]["position_consistency"] == 0
    assert "judge on pandalm (4 pairs)" in result.output
    assert "stored gpt-3.5-turbo on the same pairs" in result.output


def test_mt_bench_is_written_as_a_rubric_and_prompts(tmp_path: Path, external_data: Path) -> None:
    from assay.schemas.judge import Rubric

    result = runner.invoke(app, ["judge", "mt-bench", "--out", str(tmp_path / "mt")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rubric = Rubric.from_yaml(tmp_path / "mt" / "mt_bench_absolute.yaml")
    assert rubric.output_format == "mt_bench" and rubric.score_scale == (1, 10)
    prompts = read_jsonl(tmp_path / "mt" / "prompts.jsonl")
    assert len(prompts) == 80 and sum(1 for p in prompts if p["reference"]) >= 30
    from assay.evaluation.judge.prompts import render_messages

    math_item = next(p for p in prompts if p["category"] == "math")
    messages = render_messages(rubric, {"prompt": math_item["prompt"], "response": "42",
                                        "reference": math_item["reference"], "criterion": rubric.criteria[0]})
    assert "[The Start of Reference Answer]" in messages[-1]["content"] and "42" in messages[-1]["content"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
