"""The champion/challenger gate: every rule of a GateSpec checked against one evaluation report, as a decision
that lists each rule with its value and whether it passed. Pure: a report in, a decision out."""

from __future__ import annotations

from assay.schemas.cycle import GateDecision, GateSpec, RuleResult
from assay.schemas.evaluation import BenchmarkReport, Comparison

CHALLENGER = "challenger"


def _comparison(report: BenchmarkReport, task: str, metric: str) -> tuple[Comparison | None, str]:
    found = report.task(task)
    if found is None:
        return None, f"no task {task!r} in the evaluation (tasks: {', '.join(t.name for t in report.tasks)})"
    comparison = report.comparison(task, CHALLENGER, metric)
    if comparison is None:
        keys = sorted({c.key for c in found.comparisons})
        return None, f"task {task} has no metric {metric!r} (metrics: {', '.join(keys)})"
    return comparison, ""


def _improvement(comparison: Comparison, direction: str) -> float:
    """How much better the challenger is (negative: worse), in the metric's units."""
    return comparison.difference if direction == "higher" else -comparison.difference


def decide(gate: GateSpec, report: BenchmarkReport, champion: str) -> GateDecision:
    """Check every rule; the challenger passes only when all of them pass. `champion` names the model it was
    compared with, for the reason line."""
    rules: list[RuleResult] = []
    for rule in gate.metrics:
        words = f"{rule.task} {rule.metric}: {rule.direction} is better, improve by >= {rule.min_improvement:g}" + (
            " with a significant difference" if rule.require_significant else "")
        comparison, missing = _comparison(report, rule.task, rule.metric)
        if comparison is None:
            rules.append(RuleResult(rule=words, kind="metric", threshold=rule.min_improvement, passed=False,
                                    detail=missing))
            continue
        gain = _improvement(comparison, rule.direction)
        significant = comparison.verdict == ("better" if (rule.direction == "higher") == comparison.higher_is_better
                                             else "worse")
        passed = gain >= rule.min_improvement and (significant or not rule.require_significant)
        detail = (f"champion {comparison.base:.4g}, challenger {comparison.tuned:.4g}, difference "
                  f"{comparison.difference:+.4g} [{comparison.ci_low:+.4g}, {comparison.ci_high:+.4g}], "
                  f"p={comparison.p_value:.3g}, {comparison.n_items} items"
                  + ("" if significant or not rule.require_significant else "; not significant"))
        rules.append(RuleResult(rule=words, kind="metric", value=gain, threshold=rule.min_improvement,
                                passed=passed, detail=detail))
    for limit in gate.regressions:
        words = f"{limit.task} {limit.metric}: worsen by <= {limit.max_regression:g} ({limit.direction} is better)"
        comparison, missing = _comparison(report, limit.task, limit.metric)
        if comparison is None:
            rules.append(RuleResult(rule=words, kind="regression", threshold=limit.max_regression, passed=False,
                                    detail=missing))
            continue
        worsening = -_improvement(comparison, limit.direction)
        rules.append(RuleResult(rule=words, kind="regression", value=worsening, threshold=limit.max_regression,
                                passed=worsening <= limit.max_regression,
                                detail=f"champion {comparison.base:.4g}, challenger {comparison.tuned:.4g}"))
    if gate.min_judge_win_rate is not None:
        words = f"judge: challenger's tie-adjusted win rate >= {gate.min_judge_win_rate:g}"
        judged = next((j for j in report.judge if j.tuned == CHALLENGER), None)
        rate = judged.tie_adjusted_win_rate if judged is not None else None
        rules.append(RuleResult(
            rule=words, kind="judge", value=rate, threshold=gate.min_judge_win_rate,
            passed=rate is not None and rate >= gate.min_judge_win_rate,
            detail="no judge comparison in the evaluation" if judged is None else
            f"{judged.tuned_wins} wins, {judged.base_wins} losses, {judged.ties} ties"))
    failed = [r for r in rules if not r.passed]
    against = champion if champion != "base" else "the base model"
    reason = (f"all {len(rules)} gate rules passed against {against}" if not failed else
              f"{len(failed)} of {len(rules)} gate rules failed against {against}: "
              + "; ".join(f"{r.rule} ({r.detail})" if r.value is None else f"{r.rule} (value {r.value:+.4g})"
                          for r in failed))
    return GateDecision(passed=not failed, rules=rules, reason=reason)
