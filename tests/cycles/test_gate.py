"""The gate as a pure function: every rule reported with its value and result; significance, regressions, the
judge's win rate and metrics the evaluation lacks."""

from __future__ import annotations

from typing import Any

from assay.api.cycles.gate import decide
from assay.schemas.cycle import GateSpec
from assay.schemas.evaluation import BenchmarkReport, Comparison, EvalSpec, RunMetadata, TaskReport
from assay.schemas.judge import JudgeComparison


def _comparison(metric: str, champion: float, challenger: float, *, higher: bool, ci: tuple[float, float],
                verdict: str) -> Comparison:
    return Comparison(model="challenger", metric=metric, higher_is_better=higher, base=champion, tuned=challenger,
                      difference=challenger - champion, ci_low=ci[0], ci_high=ci[1], p_value=0.01,
                      verdict=verdict, n_items=50)  # type: ignore[arg-type]


def _report(judge_rate: float | None = None) -> BenchmarkReport:
    task = TaskReport(name="ppl", format="ppl", output_type="loglikelihood", primary="loss", items_total=50,
                      items_evaluated=50, lm_eval_task="ppl", comparisons=[
                          _comparison("loss", 2.0, 1.9, higher=False, ci=(-0.15, -0.05), verdict="better"),
                          _comparison("perplexity", 7.39, 6.69, higher=False, ci=(-1.0, -0.3), verdict="better")])
    quiz = TaskReport(name="mc", format="mc", output_type="multiple_choice", primary="acc", items_total=50,
                      items_evaluated=50, lm_eval_task="mc", comparisons=[
                          _comparison("acc", 0.60, 0.58, higher=True, ci=(-0.06, 0.02),
                                      verdict="no_significant_difference")])
    judged = [] if judge_rate is None else [JudgeComparison(
        rubric="pairwise", judge_model="judge", base="champion", tuned="challenger", prompts=20, tuned_wins=9,
        base_wins=7, ties=4, tie_adjusted_win_rate=judge_rate, verdict="no significant difference")]
    return BenchmarkReport(spec=EvalSpec(model="m", tasks=["ppl:x.jsonl"]), metadata=RunMetadata(seed=1), models=[],
                           tasks=[task, quiz], judge=judged)


def _gate(**changes: Any) -> GateSpec:
    gate: dict[str, Any] = {"metrics": [{"task": "ppl", "metric": "loss", "direction": "lower",
                                         "min_improvement": 0.05, "require_significant": True}],
                            "regressions": [{"task": "mc", "metric": "acc", "direction": "higher",
                                             "max_regression": 0.03}]}
    gate.update(changes)
    return GateSpec.model_validate(gate)


def test_a_significant_improvement_within_the_regression_limits_passes_every_rule() -> None:
    decision = decide(_gate(), _report(), "cycle:demo:0001")
    assert decision.passed and decision.reason == "all 2 gate rules passed against cycle:demo:0001"
    improve, regression = decision.rules
    assert improve.kind == "metric" and abs(improve.value - 0.1) < 1e-9 and improve.threshold == 0.05  # type: ignore[operator]
    assert regression.kind == "regression" and abs(regression.value - 0.02) < 1e-9  # type: ignore[operator]
    assert "[-0.15, -0.05]" in improve.detail and "50 items" in improve.detail


def test_each_failing_rule_is_named_with_its_value() -> None:
    gate = _gate(metrics=[{"task": "ppl", "metric": "loss", "direction": "lower", "min_improvement": 0.2},
                          {"task": "mc", "metric": "acc", "direction": "higher", "require_significant": True}],
                 regressions=[{"task": "mc", "metric": "acc", "direction": "higher", "max_regression": 0.01}])
    decision = decide(gate, _report(), "base")
    assert not decision.passed
    assert [r.passed for r in decision.rules] == [False, False, False]
    assert decision.rules[1].detail.endswith("not significant")
    assert decision.reason.startswith("3 of 3 gate rules failed against the base model: ppl loss")


def test_a_metric_the_evaluation_lacks_fails_its_rule_and_says_what_exists() -> None:
    gate = _gate(metrics=[{"task": "ppl", "metric": "bleu", "direction": "higher"},
                          {"task": "arc", "metric": "acc", "direction": "higher"}], regressions=[])
    first, second = decide(gate, _report(), "base").rules
    assert not first.passed and first.value is None and first.detail == "task ppl has no metric 'bleu' (metrics: loss, perplexity)"
    assert second.detail == "no task 'arc' in the evaluation (tasks: ppl, mc)"


def test_the_judge_win_rate_rule_reads_the_challengers_comparison() -> None:
    gate = _gate(min_judge_win_rate=0.6)
    assert decide(gate, _report(judge_rate=0.55), "base").rules[-1].passed is False
    rule = decide(gate, _report(judge_rate=0.65), "base").rules[-1]
    assert rule.passed and rule.kind == "judge" and rule.detail == "9 wins, 7 losses, 4 ties"
    assert decide(gate, _report(), "base").rules[-1].detail == "no judge comparison in the evaluation"
