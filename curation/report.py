"""Render the quality report: JSON, Markdown for pull requests and terminals, a self-contained HTML page."""

from __future__ import annotations

import importlib
import io
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from pydantic import BaseModel

from assay.schemas.report import LengthSection, LengthStats, QualityReport, StepFunnel

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

OPTIONAL_SECTIONS: tuple[tuple[str, str], ...] = (
    ("pii", "Personal data (PII)"),
    ("dedup", "Duplicates"),
    ("balance", "Topic balance"),
)
"""Report sections owned by a step: (attribute of QualityReport, title)."""

SECTION_RENDERERS: dict[str, str] = {"dedup": "assay.curation.dedup", "balance": "assay.curation.balance"}
"""Steps whose module renders its own section (`render_<name>_{markdown,html}`); the others get the
generic rendering. Listed, not probed: importing a step module can be costly (presidio takes ~8 s)."""

ROLE_ORDER = ("system", "user", "assistant", "tool")
MARKDOWN_FIRST_ERRORS = 10
KEPT_COLOUR = "#3a8f5c"
BEFORE_COLOUR = "#9aa5b1"
AFTER_COLOUR = "#1f5fa8"
# Colour-blind-safe palette (Okabe-Ito, without the green used for kept records).
DROP_COLOURS = ("#d55e00", "#e69f00", "#cc79a7", "#0072b2", "#56b4e9", "#f0e442", "#8c564b", "#7f7f7f")


# --- public entry points -------------------------------------------------------------------------------

def write_reports(report: QualityReport, folder: str | Path) -> None:
    """Write report.json, report.md and report.html into `folder`."""
    folder = Path(folder)
    (folder / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(report), encoding="utf-8")
    (folder / "report.html").write_text(render_html(report), encoding="utf-8")


def render_markdown(report: QualityReport) -> str:
    """Compact GitHub Markdown: readable as plain text in a terminal, tables render in pull requests."""
    parts = [_md_summary(report), _md_funnel(report.funnel), _md_validation(report)]
    for name, title in OPTIONAL_SECTIONS:
        section = getattr(report, name)
        if section is not None:
            body = render_section_markdown(name, section).strip()
            parts.append(body if body.startswith("#") else f"## {title}\n\n{body}")
    parts += [_md_lengths(section) for section in report.lengths]
    parts.append(_md_examples(report))
    return "\n\n".join(part.strip() for part in parts if part.strip()) + "\n"


def render_html(report: QualityReport) -> str:
    """One HTML page with inline CSS and inline SVG plots: no scripts, no network, opens from disk."""
    template = _html_environment().get_template("report.html.j2")
    return template.render(**_html_context(report))


# --- step-owned sections (PII, dedup, balance) ---------------------------------------------------------

def _section_renderer(name: str, kind: str) -> Callable[[Any], str] | None:
    """`render_<name>_<kind>` from the step's module when SECTION_RENDERERS names one, else None."""
    if name not in SECTION_RENDERERS:
        return None
    module = importlib.import_module(SECTION_RENDERERS[name])
    renderer = getattr(module, f"render_{name}_{kind}", None)
    return renderer if callable(renderer) else None


def render_section_markdown(name: str, section: BaseModel) -> str:
    renderer = _section_renderer(name, "markdown")
    return renderer(section) if renderer is not None else generic_section_markdown(section)


def render_section_html(name: str, section: BaseModel) -> Markup:
    renderer = _section_renderer(name, "html")
    # The step's renderer returns an HTML fragment and is trusted to escape what it inserts.
    return Markup(renderer(section)) if renderer is not None else generic_section_html(section)


class _SectionFields:
    """A section's fields by shape: scalars (one table), mappings (a table each), lists of objects."""

    def __init__(self, section: BaseModel) -> None:
        self.scalars: list[tuple[str, Any]] = []
        self.mappings: list[tuple[str, list[tuple[str, Any]]]] = []
        self.item_lists: list[tuple[str, list[Any]]] = []
        self.empty: list[str] = []  # empty mappings and lists: named once, not given a table each
        for key, value in section.model_dump(mode="json").items():
            if isinstance(value, (dict, list)) and not value:
                self.empty.append(_label(key))
            elif isinstance(value, dict):
                self.mappings.append((_label(key), _sorted_items(value)))
            elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
                self.item_lists.append((_label(key), value))
            else:
                self.scalars.append((_label(key), value))


def _sorted_items(mapping: dict[str, Any]) -> list[tuple[str, Any]]:
    """Counts largest first; anything else in key order."""
    def key(item: tuple[str, Any]) -> tuple[float, str]:
        value = item[1]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (-float(value) if number else 0.0, str(item[0]))

    return sorted(mapping.items(), key=key)


def _plain_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def generic_section_markdown(section: BaseModel) -> str:
    """Any report section as Markdown: its scalar fields, one table per mapping, JSON lines per list."""
    fields = _SectionFields(section)
    parts = []
    if fields.scalars:
        parts.append(markdown_table(["field", "value"],
                                    [[label, md_code(_plain_value(v))] for label, v in fields.scalars], "lr"))
    for label, rows in fields.mappings:
        table = (markdown_table(["key", "value"], [[md_code(k), md_code(_plain_value(v))] for k, v in rows], "lr")
                 if rows else "_none_")
        parts.append(f"**{label}**\n\n{table}")
    for label, items in fields.item_lists:
        parts.append(f"**{label}**\n\n" + "\n".join(f"- {md_code(_plain_value(item), in_table=False)}"
                                                     for item in items))
    if fields.empty:
        parts.append(f"Empty: {', '.join(fields.empty)}.")
    return "\n\n".join(parts)


def generic_section_html(section: BaseModel) -> Markup:
    """Any report section as HTML tables (used when its step module has no renderer of its own)."""
    fields = _SectionFields(section)
    template = _html_environment().get_template("section_generic.html.j2")
    return Markup(template.render(fields=fields, plain=_plain_value, is_number=_is_number,
                                  as_json=lambda v: json.dumps(v, ensure_ascii=False, indent=1)))


def _label(field_name: str) -> str:
    return field_name.replace("_", " ")


# --- Markdown ------------------------------------------------------------------------------------------

def md_code(text: str, in_table: bool = True) -> str:
    """`text` as an inline code span, so user data shows literally (no HTML, no emphasis) on GitHub."""
    text = " ".join(str(text).split())
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    span = f"{fence}{padded}{fence}"
    # GitHub splits table cells on "|" even inside code spans unless it is escaped.
    return span.replace("|", "\\|") if in_table else span


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A GitHub table; `align` has one letter per column, l or r (default l)."""
    marks = ["---:" if (align[i:i + 1] == "r") else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _num(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _md_summary(report: QualityReport) -> str:
    dropped = report.records_in - report.records_out
    lines = [f"# Quality report: {md_code(Path(report.input_path).name, in_table=False)}", "",
             f"**{report.records_in:,}** records in, **{report.records_out:,}** kept "
             f"({_pct(report.records_out, report.records_in)}), **{dropped:,}** dropped, "
             f"in {report.seconds:.1f} s."]
    if report.validation is not None:
        fmt = report.validation.format.value if report.validation.format else "unknown"
        note = f" ({report.validation.format_note})" if report.validation.format_note else ""
        lines.append(f"Format: `{fmt}`{note}.")
    lines.append(f"Steps: {' → '.join(report.steps)}. Output: {md_code(report.output_dir, in_table=False)}. "
                 f"Created {report.created_at:%Y-%m-%d %H:%M} UTC.")
    return "\n".join(lines)


def _md_funnel(funnel: list[StepFunnel]) -> str:
    rows = [[row.step, f"{row.records_in:,}", f"{row.kept:,}", f"{row.dropped_total:,}", f"{row.changed:,}",
             ", ".join(f"`{reason}` {n:,}" for reason, n in _by_count(row.dropped)) or "-",
             f"{row.seconds:.2f}"] for row in funnel]
    return "## Funnel\n\n" + markdown_table(["step", "in", "kept", "dropped", "changed", "why dropped", "s"],
                                            rows, "lrrrrlr")


def _md_validation(report: QualityReport) -> str:
    summary = report.validation
    if summary is None:
        return ""
    parts = ["## Validation"]
    if summary.errors_by_code:
        parts.append(markdown_table(
            ["error", "records", "share of input"],
            [[f"`{code}`", f"{n:,}", _pct(n, summary.records_read)] for code, n in _by_count(summary.errors_by_code)],
            "lrr"))
    else:
        parts.append("No validation errors.")
    if summary.warnings:
        parts.append("Warnings: " + ", ".join(f"`{w}` {n:,}" for w, n in _by_count(summary.warnings)) + ".")
    if summary.first_errors:
        shown = summary.first_errors[:MARKDOWN_FIRST_ERRORS]
        parts.append(f"First {len(shown)} errors:\n\n" + markdown_table(
            ["line", "error", "field", "message"],
            [[str(e.line if e.line is not None else f"record {e.record}"), f"`{e.code.value}`",
              md_code(e.field or ""), md_code(e.message)] for e in shown],
            "rlll"))
    return "\n\n".join(parts)


def _md_lengths(section: LengthSection) -> str:
    roles = _ordered_roles(section)
    if not roles:
        return ""
    by = f" ({md_code(section.tokenizer, in_table=False)})" if section.tokenizer else ""
    rows = []
    for role in roles:
        before, after = section.before.get(role), section.after.get(role)
        cells = [md_code(role)]
        for attr in ("count", "mean", "p50", "p90", "p99", "max"):
            cells.append(f"{_stat(before, attr)} → {_stat(after, attr)}")
        rows.append(cells)
    return (f"## Message lengths in {section.unit}{by}, before → after\n\n"
            + markdown_table(["role", "messages", "mean", "p50", "p90", "p99", "max"], rows, "lrrrrrr"))


def _stat(stats: LengthStats | None, attr: str) -> str:
    if stats is None or stats.count == 0:
        return "-"
    return _num(getattr(stats, attr))


def _md_examples(report: QualityReport) -> str:
    groups = _example_groups(report)
    if not groups:
        return ""
    parts = ["## Examples of dropped records", "All dropped records are in `rejected.jsonl`."]
    for group in groups:
        lines = [f"**{group['step']} · `{group['reason']}`** ({group['total']:,})", ""]
        for example in group["items"]:
            where = _details_text(example.details)
            message = f" {md_code(example.message, in_table=False)}" if example.message else ""
            lines.append(f"- {md_code(example.id, in_table=False)}{f' ({where})' if where else ''}:{message}")
            lines.append(f"  {md_code(example.preview, in_table=False)}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _details_text(details: dict[str, Any]) -> str:
    """`line 5, column 1, field id`; the record ordinal only where it says more than the line."""
    return ", ".join(f"{k} {_plain_value(v)}" for k, v in details.items()
                     if v is not None and k != "message" and not (k == "record" and v == details.get("line")))


# --- shared view data ----------------------------------------------------------------------------------

def _by_count(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _ordered_roles(section: LengthSection) -> list[str]:
    roles = set(section.before) | set(section.after)
    return [r for r in ROLE_ORDER if r in roles] + sorted(roles - set(ROLE_ORDER))


def _example_groups(report: QualityReport) -> list[dict[str, Any]]:
    """Examples per (step, reason) in funnel order, each with the reason's total drop count."""
    totals = {(row.step, reason): n for row in report.funnel for reason, n in row.dropped.items()}
    order = {step: i for i, step in enumerate(row.step for row in report.funnel)}
    groups: list[dict[str, Any]] = []
    for items in report.examples.values():
        if not items:
            continue
        step, reason = items[0].step, items[0].reason
        groups.append({"step": step, "reason": reason, "total": totals.get((step, reason), len(items)),
                       "items": items})
    groups.sort(key=lambda g: (order.get(g["step"], len(order)), -g["total"], g["reason"]))
    return groups


# --- HTML ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _html_environment() -> Environment:
    # Autoescaping on: ids, previews, messages and paths all come from user data.
    env = Environment(loader=PackageLoader("assay.curation", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["num"] = _num
    env.filters["pct"] = lambda part, whole: _pct(part, whole)
    env.filters["details"] = _details_text
    return env


def _html_context(report: QualityReport) -> dict[str, Any]:
    summary = report.validation
    sections: list[dict[str, Any]] = [{"id": name, "title": title, "html": render_section_html(name, getattr(report, name))}
                for name, title in OPTIONAL_SECTIONS if getattr(report, name) is not None]
    for section in sections:
        section["has_heading"] = "<h2" in section["html"]
    lengths = [{"unit": s.unit, "tokenizer": s.tokenizer, "svg": lengths_svg(s, f"plot-lengths-{i}"),
                "rows": [(role, s.before.get(role), s.after.get(role)) for role in _ordered_roles(s)]}
               for i, s in enumerate(report.lengths)]
    return {
        "report": report,
        "name": Path(report.input_path).name,
        "dropped": report.records_in - report.records_out,
        "format": summary.format.value if summary is not None and summary.format else None,
        "funnel_svg": funnel_svg(report.funnel) if report.funnel else None,
        "errors": _by_count(summary.errors_by_code) if summary is not None else [],
        "warnings": _by_count(summary.warnings) if summary is not None else [],
        "sections": sections,
        "lengths": lengths,
        "examples": _example_groups(report),
        "by_count": _by_count,
        "spec_json": json.dumps(report.spec, indent=2, ensure_ascii=False),
    }


# --- plots (matplotlib, imported only when a page is rendered) -----------------------------------------

@contextmanager
def _plot_style(svg_id: str) -> Iterator[None]:
    import matplotlib

    # Text as paths: the page looks the same without the fonts; a fixed salt makes the SVG reproducible.
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "assay", "svg.id": svg_id,
                                "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        yield


def _figure(width: float, height: float) -> Figure:
    # A bare Figure (no pyplot): no global backend or figure registry, safe in servers and threads.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Figure, description: str) -> Markup:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    text = text[text.index("<svg"):]  # drop the XML prolog and doctype: not allowed inside HTML
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    title = str(Markup("<title>{}</title>").format(description))
    return Markup(text.replace(">", ">" + title, 1))


def _mpl_text(text: str, limit: int = 40) -> str:
    """User text made safe for matplotlib: `$` would start mathtext and can fail to parse."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def funnel_svg(funnel: list[StepFunnel]) -> Markup:
    """Horizontal stacked bars, one per step: kept, then each drop reason."""
    reasons = [reason for reason, _ in _by_count(_sum_reasons(funnel))]
    shown = reasons[: len(DROP_COLOURS) - 1] if len(reasons) > len(DROP_COLOURS) else reasons
    colours = {reason: DROP_COLOURS[i] for i, reason in enumerate(shown)}
    with _plot_style("plot-funnel"):
        fig = _figure(7.5, 1.1 + 0.45 * len(funnel) + 0.18 * math.ceil((len(shown) + 2) / 3))
        ax = fig.add_subplot()
        ys = list(range(len(funnel)))
        ax.barh(ys, [row.kept for row in funnel], color=KEPT_COLOUR, label="kept", height=0.6)
        left = [float(row.kept) for row in funnel]
        for reason in [*shown, "other reasons"]:
            widths = []
            for row in funnel:
                n = (row.dropped.get(reason, 0) if reason != "other reasons"
                     else sum(v for k, v in row.dropped.items() if k not in colours))
                widths.append(n)
            if any(widths):
                ax.barh(ys, widths, left=left, height=0.6, label=_mpl_text(reason),
                        color=colours.get(reason, DROP_COLOURS[-1]))
                left = [a + b for a, b in zip(left, widths, strict=True)]
        widest = max((row.records_in for row in funnel), default=0) or 1
        for y, row in zip(ys, funnel, strict=True):
            ax.text(row.records_in + widest * 0.01, y, f"{row.kept:,} of {row.records_in:,} kept",
                    va="center", fontsize=8)
        ax.set_xlim(0, widest * 1.3)
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(_short_number))
        ax.set_yticks(ys, [_mpl_text(row.step) for row in funnel])
        ax.invert_yaxis()
        ax.set_xlabel("records")
        fig.legend(loc="outside lower center", ncols=3, frameon=False, fontsize=8)
        return _svg(fig, "Records kept and dropped per step")


def _sum_reasons(funnel: list[StepFunnel]) -> dict[str, int]:
    total: dict[str, int] = {}
    for row in funnel:
        for reason, n in row.dropped.items():
            total[reason] = total.get(reason, 0) + n
    return total


def _finite_edges(edges: list[float]) -> list[float]:
    out = list(edges)
    if out and math.isinf(out[-1]):
        out[-1] = out[-2] * 1.1 if len(out) > 1 else 1.0
    return [0.5 if e == 0 else e for e in out]  # the first bin [0, 1) on a log axis


def _short_number(value: float, _pos: int = 0) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def lengths_svg(section: LengthSection, svg_id: str = "plot-lengths") -> Markup | None:
    """Small multiples, one per role: message-length histograms before (filled) and after (line)."""
    roles = _ordered_roles(section)
    if not roles:
        return None
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    ncols = min(len(roles), 4)
    nrows = math.ceil(len(roles) / ncols)
    with _plot_style(svg_id):
        fig = _figure(7.5 if ncols <= 3 else 9.6, 2.2 * nrows + 0.5)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        flat: list[Axes] = list(axes.flat)
        for ax, role in zip(flat, roles, strict=False):  # spare panels stay empty
            before, after = section.before.get(role), section.after.get(role)
            if before is not None and before.histogram:
                ax.stairs(before.histogram, _finite_edges(before.bin_edges), fill=True, color=BEFORE_COLOUR,
                          alpha=0.6, label="before")
            if after is not None and after.histogram:
                ax.stairs(after.histogram, _finite_edges(after.bin_edges), color=AFTER_COLOUR, linewidth=1.4,
                          label="after")
            ax.set_xscale("log")
            edges = [e for st in (before, after) if st is not None and st.histogram
                     for e in _finite_edges(st.bin_edges)]
            lo, hi = (min(edges), max(edges)) if edges else (1.0, 10.0)
            pad = max(1.5, math.sqrt(10 * lo / hi))  # at least a decade: one bin must not fill the panel
            ax.set_xlim(lo / pad, hi * pad)
            # 1-2-5 ticks over narrow ranges; powers of ten only when wider, else the labels collide.
            subs = (1.0, 2.0, 5.0) if hi * pad / (lo / pad) <= 300 else (1.0,)
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
            ax.xaxis.set_major_formatter(FuncFormatter(_short_number))
            ax.xaxis.set_minor_formatter(NullFormatter())
            counts = (before.count if before else 0, after.count if after else 0)
            ax.set_title(f"{_mpl_text(role)}  ({counts[0]:,} → {counts[1]:,})", fontsize=9)
            ax.set_xlabel(f"{section.unit} per message", fontsize=8)
        for ax in flat[len(roles):]:
            ax.set_visible(False)
        for row in axes:
            row[0].set_ylabel("messages")
        handles, labels = flat[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside upper right", ncols=2, frameon=False, fontsize=8)
        return _svg(fig, f"Message lengths in {section.unit} per role, before and after curation")


__all__ = [
    "funnel_svg", "generic_section_html", "generic_section_markdown", "lengths_svg",
    "markdown_table", "md_code", "render_html", "render_markdown", "render_section_html",
    "render_section_markdown", "write_reports",
]
