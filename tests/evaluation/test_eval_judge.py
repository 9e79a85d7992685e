"""`assay eval --judge`: the base and each adapter answer the same prompts, a judge compares every pair in both
orders, and the comparison joins the benchmark report. The judge is the judge tests' scripted tiny model (a
real transformers model, run in this process) that always prefers the answer shown first."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.evaluation import EvalInputError, evaluate
from assay.evaluation.judge.testing import PAIRWISE_RUBRIC, build_scripted_judge
from assay.schemas.evaluation import EvalSpec, JudgeSpec

from .conftest import CHATS


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scripted_judge(tmp_path_factory.mktemp("judge") / "judge")


def test_the_judges_comparison_joins_the_benchmark_report(tiny_model: Path, adapter: Path, judge: Path,
                                                          task_files: dict[str, Path], tmp_path: Path) -> None:
    rubric = tmp_path / "pairwise.yaml"
    rubric.write_text(PAIRWISE_RUBRIC)
    spec = EvalSpec(model=str(tiny_model), adapters=[f"tuned={adapter}"], tasks=[f"ppl:{task_files['ppl']}"],
                    cache=False, judge=JudgeSpec(rubric=str(rubric), model=str(judge), max_new_tokens=6, cache=False))
    events: list[dict] = []
    report = evaluate(spec, tmp_path / "out", on_event=events.append)
    [comparison] = report.judge
    # the held-out chats are the prompts; a judge that always picks the first answer shown ties every pair
    assert (comparison.tuned, comparison.base, comparison.prompts) == ("tuned", "base", len(CHATS))
    assert (comparison.tuned_wins, comparison.base_wins, comparison.ties) == (0, 0, len(CHATS))
    assert comparison.position_consistency == 0 and comparison.verdict == "no significant difference"
    assert (tmp_path / "out" / "judge-tuned" / "verdicts.jsonl").is_file()
    assert [e["event"] for e in events if e["event"].startswith("judge")] == ["judge_started", "judge_done"]
    html = (tmp_path / "out" / "eval_report.html").read_text()
    assert 'id="judge"' in html and "## Judge" in (tmp_path / "out" / "eval_report.md").read_text()


def test_judge_settings_are_checked_before_any_model_runs(tiny_model: Path, adapter: Path, judge: Path,
                                                          task_files: dict[str, Path], tmp_path: Path) -> None:
    base = {"model": str(tiny_model), "adapters": [str(adapter)], "tasks": [f"mc:{task_files['mc']}"]}
    with pytest.raises(EvalInputError, match="--judge needs prompts: give --judge-prompts FILE"):
        evaluate(EvalSpec(**base, judge=JudgeSpec(model=str(judge))), tmp_path / "a")
    with pytest.raises(EvalInputError, match="needs a pairwise rubric; helpfulness is absolute"):
        evaluate(EvalSpec(**base, judge=JudgeSpec(model=str(judge), rubric="helpfulness",
                                                  prompts=str(task_files["ppl"]))), tmp_path / "b")
    with pytest.raises(EvalInputError, match="give at least one --adapter"):
        evaluate(EvalSpec(model=str(tiny_model), tasks=[f"ppl:{task_files['ppl']}"], judge=JudgeSpec(model=str(judge))),
                 tmp_path / "c")
    assert not (tmp_path / "a" / "eval_report.json").exists()
