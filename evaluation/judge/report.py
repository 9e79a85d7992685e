"""Writing a judge run: verdicts.jsonl and judge_report.json / .md / .html (renderings of one JudgeReport)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import orjson

from assay.schemas.judge import JudgeReport, JudgeVerdict, LabelAgreement

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _interval(low: float | None, high: float | None, digits: int = 3) -> str:
    return "-" if low is None or high is None else f"[{low:.{digits}f}, {high:.{digits}f}]"


def render_markdown(report: JudgeReport) -> str:
    lines = [f"# Judge report: {report.rubric} (v{report.rubric_version}, {report.mode})", "",
             f"Judge `{report.judge_model}` via {report.backend}; {report.items} items, {report.samples} sample(s) "
             f"per judgment; data {report.data_path or '-'}.", ""]
    calls = report.calls
    lines += ["| requests | cached | judgments | retried | parse failures | errors | judgments/s |",
              "|---|---|---|---|---|---|---|",
              f"| {calls.requests} | {calls.cached} | {calls.judgments} | {calls.retried} | {calls.parse_failures} "
              f"({_pct(calls.parse_failure_rate)}) | {calls.errors} | {_fmt(calls.judgments_per_s, 2)} |", ""]
    if report.criteria:
        lines += ["## Scores", "", "| criterion | weight | n | mean | 95% CI | distribution |", "|---|---|---|---|---|---|"]
        for s in [*report.criteria, *([report.overall] if report.overall else [])]:
            dist = ", ".join(f"{k}: {v}" for k, v in s.distribution.items())
            lines.append(f"| {s.name} | {s.weight:g} | {s.n} | {_fmt(s.mean)} | {_interval(s.ci_low, s.ci_high)} | "
                         f"{dist} |")
        lines.append("")
    if report.pairwise:
        p = report.pairwise
        lines += ["## Pairwise", "", "| pairs | wins a | wins b | ties | win rate a | tie-adjusted win rate a | 95% CI | "
                  "position consistency | first-position rate |", "|---|---|---|---|---|---|---|---|---|",
                  f"| {p.n} | {p.wins_a} | {p.wins_b} | {p.ties} | {_pct(p.win_rate_a)} | "
                  f"{_pct(p.tie_adjusted_win_rate_a)} | {_interval(p.ci_low, p.ci_high)} | "
                  f"{_pct(p.position_consistency)} | {_pct(p.first_position_rate)} |", ""]
    lines += ["## Reliability", "", f"- sample agreement: {_pct(report.sample_agreement)}"]
    if report.length_bias:
        b = report.length_bias
        lines.append(f"- length bias (n={b.n}): Pearson {_fmt(b.pearson)}, Spearman {_fmt(b.spearman)} "
                     f"(p={_fmt(b.spearman_p)})" + (f", longer response wins {_pct(b.longer_wins_rate)}"
                                                     if b.longer_wins_rate is not None else ""))
    lines.append("")
    if report.labels:
        lines += ["## Agreement with labels", "", *_label_lines(report.labels), ""]
    if report.checks:
        lines += ["## Checks (no model)", "", "| check | type | on | passed | failed | n/a | pass rate |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {c.name} | {c.type} | {c.target} | {c.passed} | {c.failed} | {c.not_applicable} | "
                  f"{_pct(c.pass_rate)} |" for c in report.checks]
        lines.append("")
    if report.warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in report.warnings], ""]
    return "\n".join(lines)


def _label_lines(labels: LabelAgreement) -> list[str]:
    lines = [f"- field `{labels.field}`, {labels.n} labelled items",
             f"- agreement: {_pct(labels.agreement)}; without ties: {_pct(labels.agreement_without_ties)} "
             f"(n={labels.n_without_ties})",
             f"- Cohen's kappa: {_fmt(labels.cohen_kappa)}"]
    if labels.weighted_kappa is not None or labels.spearman is not None:
        lines.append(f"- quadratic-weighted kappa: {_fmt(labels.weighted_kappa)}; Spearman: {_fmt(labels.spearman)}")
    if labels.macro_f1 is not None:
        lines.append(f"- macro precision {_fmt(labels.macro_precision)}, recall {_fmt(labels.macro_recall)}, "
                     f"F1 {_fmt(labels.macro_f1)}")
    return lines


def render_html(report: JudgeReport, verdicts: Sequence[JudgeVerdict] = ()) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["pct"] = _pct
    env.filters["num"] = _fmt
    env.globals["interval"] = _interval
    failed = [v for v in verdicts if v.status != "ok"][:10]
    columns = sorted({col for row in (report.labels.confusion.values() if report.labels else ()) for col in row})
    return str(env.get_template("judge_report.html.j2").render(report=report, failed=failed, confusion_cols=columns,
                                                                examples=report.results[:20]))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_outputs(out_dir: str | Path, report: JudgeReport, verdicts: Sequence[JudgeVerdict]) -> dict[str, Path]:
    """verdicts.jsonl and judge_report.{json,md,html}, each replaced whole (never left half-written)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"verdicts": out / "verdicts.jsonl", "json": out / "judge_report.json", "md": out / "judge_report.md",
             "html": out / "judge_report.html"}
    _atomic_write(paths["verdicts"], b"".join(orjson.dumps(v.model_dump(mode="json")) + b"\n" for v in verdicts))
    _atomic_write(paths["json"], report.model_dump_json(indent=2).encode())
    _atomic_write(paths["md"], render_markdown(report).encode())
    _atomic_write(paths["html"], render_html(report, verdicts).encode())
    return paths
