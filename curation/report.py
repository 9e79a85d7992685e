"""Render the quality report: JSON, Markdown for pull requests and terminals, a self-contained HTML page."""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from pydantic import BaseModel

from assay.schemas import registry
from assay.schemas.report import LengthSection, LengthStats, QualityReport, StepFunnel

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ROLE_ORDER = ("system", "user", "assistant", "tool")
MARKDOWN_FIRST_ERRORS = 10
KEPT_COLOUR = "#3a8f5c"
BEFORE_COLOUR = "#9aa5b1"
AFTER_COLOUR = "#1f5fa8"
BAR_EIGHTHS = ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")
TEXT_BAR_WIDTH = 24  # characters of a full-length bar in Markdown
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
    text = _environment("md").get_template("report.md.j2").render(**_context(report, "md"))
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_html(report: QualityReport) -> str:
    """One HTML page with inline CSS and inline SVG plots: no scripts, no network, opens from disk."""
    context = _context(report, "html")
    context["funnel_svg"] = funnel_svg(report.funnel) if report.funnel else None
    for i, block in enumerate(context["lengths"]):
        block["svg"] = lengths_svg(block["section"], f"plot-lengths-{i}")
    return _environment("html").get_template("report.html.j2").render(**context)


# --- step sections -------------------------------------------------------------------------------------

def render_section(name: str, section: BaseModel, fmt: str) -> str:
    """A step's report section, Markdown (`md`) or an HTML fragment (`html`), without its heading: the
    template its declaration names, or a table of the section's fields."""
    template = registry.declaration(name).template if name in registry.step_names() else None
    body = _environment(fmt).get_template(f"sections/{template or 'generic.j2'}").render(
        section=section, fields=_SectionFields(section))
    return Markup(body) if fmt == "html" else body


def render_section_markdown(name: str, section: BaseModel) -> str:
    return render_section(name, section, "md")


def render_section_html(name: str, section: BaseModel) -> Markup:
    return Markup(render_section(name, section, "html"))


class _SectionFields:
    """A section's fields by shape: scalars (shown as text), mappings (a table each), lists of objects."""

    def __init__(self, section: BaseModel) -> None:
        self.scalars: list[tuple[str, str]] = []
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
                self.scalars.append((_label(key), _plain_value(value)))


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


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _num(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _stat(stats: LengthStats | None, attr: str) -> str:
    if stats is None or stats.count == 0:
        return "-"
    return _num(getattr(stats, attr))


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

@lru_cache(maxsize=2)
def _environment(fmt: str) -> Environment:
    """The report's one Jinja environment per format: the same loader, filters and helpers; HTML
    autoescapes, Markdown puts user data in code spans (`code`)."""
    if fmt not in ("html", "md"):
        raise ValueError(f"report format must be html or md, got {fmt!r}")
    html = fmt == "html"
    env = Environment(loader=PackageLoader("assay.curation", "templates"), autoescape=html,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    code: Callable[[Any], str] = _html_code if html else (lambda text: md_code(str(text), in_table=False))
    env.filters.update(num=_num, pct=_pct, percent=_percent, details=_details_text, plain=_plain_value,
                       as_json=lambda v: json.dumps(v, ensure_ascii=False, indent=1), basename=lambda p: Path(p).name,
                       code=code, cell=_md_cell)
    env.globals.update(fmt=fmt, is_number=_is_number, text_bar=_text_bar, before_colour=BEFORE_COLOUR,
                       after_colour=AFTER_COLOUR, by_count=_by_count, stat_pairs=_stat_pairs,
                       reasons=lambda counts: ", ".join(f"{code(reason)} {n:,}" for reason, n in _by_count(counts))
                       or "-")
    return env


def _html_code(text: Any) -> Markup:
    return Markup("<code>{}</code>").format(text)


def _md_cell(value: Any) -> str:
    """A Markdown table cell: one line, and `|` escaped (GitHub splits cells on it, even in code spans)."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def _text_bar(value: float, largest: float) -> str:
    """A bar of block characters for Markdown, in eighths of a character."""
    eighths = round(TEXT_BAR_WIDTH * 8 * value / largest) if largest > 0 else 0
    return "█" * (eighths // 8) + BAR_EIGHTHS[eighths % 8]


def _stat_pairs(before: LengthStats | None, after: LengthStats | None) -> list[str]:
    return [f"{_stat(before, attr)} → {_stat(after, attr)}" for attr in ("count", "mean", "p50", "p90", "p99", "max")]


def _context(report: QualityReport, fmt: str) -> dict[str, Any]:
    """What both report templates show; the sections rendered in `fmt`."""
    summary = report.validation
    first_errors = list(summary.first_errors) if summary is not None else []
    sections = [{"id": step.name, "title": step.title, "body": render_section(step.name, section, fmt)}
                for step in registry.STEPS if (section := report.section(step.name)) is not None]
    lengths = [{"unit": s.unit, "tokenizer": s.tokenizer, "section": s, "svg": None,
                "rows": [(role, s.before.get(role), s.after.get(role)) for role in _ordered_roles(s)]}
               for s in report.lengths]
    return {
        "report": report,
        "name": Path(report.input_path).name,
        "dropped": report.records_in - report.records_out,
        "format": summary.format.value if summary is not None and summary.format else None,
        "funnel_svg": None,
        "errors": _by_count(summary.errors_by_code) if summary is not None else [],
        "warnings": _by_count(summary.warnings) if summary is not None else [],
        "first_errors": first_errors[:MARKDOWN_FIRST_ERRORS] if fmt == "md" else first_errors,
        "sections": sections,
        "lengths": lengths,
        "examples": _example_groups(report),
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
    "funnel_svg", "lengths_svg", "md_code", "render_html", "render_markdown", "render_section",
    "render_section_html", "render_section_markdown", "write_reports",
]
