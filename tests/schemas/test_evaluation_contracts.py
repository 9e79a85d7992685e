"""The evaluation contracts: EvalSpec reads task strings and YAML, names unknown keys; BenchmarkReport
answers the promotion gate's question (difference, interval, verdict per task, model and metric)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from assay.schemas.evaluation import (
    BenchmarkReport,
    Comparison,
    EvalSpec,
    MetricValue,
    ModelRun,
    RunMetadata,
    TaskReport,
    TaskSpec,
)


def test_the_spec_reads_yaml_with_task_strings_and_mappings(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("model: tiny\nadapters: [tuned=runs/a]\ntasks:\n  - arc_easy:arc.json\n"
                    "  - {format: gen, path: g.jsonl, regex: 'A: (\\w+)'}\nlimit: 50\n")
    spec = EvalSpec.from_yaml(path)
    assert spec.tasks == [TaskSpec(format="arc_easy", path="arc.json"),
                          TaskSpec(format="gen", path="g.jsonl", regex="A: (\\w+)")]
    assert (spec.limit, spec.seed, spec.confidence, spec.cache) == (50, 1234, 0.95, True)


@pytest.mark.parametrize(("data", "message"), [
    ({"model": "m", "tasks": ["mc:a.jsonl"], "colour": "blue"}, "colour"),
    ({"model": "m", "tasks": []}, "at least 1"),
    ({"model": "m", "tasks": [{"format": "mc"}]}, "needs the `path`"),
    ({"model": "m", "tasks": [{"format": "mc", "path": "a", "regex": "(x)"}]}, "gen tasks only"),
    ({"model": "m", "tasks": ["mc:a.jsonl"], "limit": 0}, "greater than 0"),
])
def test_the_spec_rejects_what_cannot_work_by_name(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EvalSpec.model_validate(data)


def test_the_report_finds_a_comparison_by_task_model_and_metric() -> None:
    comparison = Comparison(model="tuned", metric="acc", base=0.4, tuned=0.5, difference=0.1, ci_low=0.02,
                            ci_high=0.18, p_value=0.01, verdict="better", n_items=200)
    strict = comparison.model_copy(update={"metric": "exact_match", "filter": "strict-match", "verdict": "worse"})
    task = TaskReport(name="arc_easy", format="arc_easy", output_type="multiple_choice", primary="acc",
                      items_total=570, items_evaluated=200, lm_eval_task="assay_arc_easy",
                      scores={"base": [MetricValue(metric="acc", value=0.4, stderr=0.03)]},
                      comparisons=[comparison, strict])
    report = BenchmarkReport(spec=EvalSpec(model="m", tasks=["arc_easy:a.json"]), metadata=RunMetadata(seed=1),
                             models=[ModelRun(label="base", model="m")], tasks=[task])
    assert report.comparison("arc_easy", "tuned") == comparison
    assert report.comparison("arc_easy", "tuned", "exact_match,strict-match") == strict
    assert report.comparison("gsm8k", "tuned") is None and report.comparison("arc_easy", "other") is None
    assert task.score("base").value == 0.4 and task.score("tuned") is None
    assert BenchmarkReport.model_validate_json(report.model_dump_json()) == report
