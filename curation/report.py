"""Render the quality report: JSON, Markdown and a self-contained HTML page."""

from __future__ import annotations

import html
from pathlib import Path

from schemas.report import QualityReport


def render_markdown(report: QualityReport) -> str:
    lines = [f"# Quality report: {Path(report.input_path).name}", "",
             f"{report.records_in} records in, {report.records_out} kept, {report.seconds:.1f} s.", "",
             "| step | in | kept | dropped |", "|---|---:|---:|---|"]
    for row in report.funnel:
        dropped = ", ".join(f"{k} {v}" for k, v in row.dropped.items()) or "0"
        lines.append(f"| {row.step} | {row.records_in} | {row.kept} | {dropped} |")
    return "\n".join(lines) + "\n"


def render_html(report: QualityReport) -> str:
    body = html.escape(render_markdown(report))
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Assay report</title></head><body><pre>{body}</pre></body></html>"


def write_reports(report: QualityReport, folder: Path) -> None:
    (folder / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(report), encoding="utf-8")
    (folder / "report.html").write_text(render_html(report), encoding="utf-8")
