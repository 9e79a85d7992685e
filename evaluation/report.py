"""Render the benchmark report: eval_report.json (the model), eval_report.md, a self-contained eval_report.html."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from assay.schemas.evaluation import BenchmarkReport, Comparison, MetricValue, TaskReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VERDICT_COLOURS = {"better": "#1a7f4b", "worse": "#c0392b", "no_significant_difference": "#7f8c8d"}
MODEL_COLOURS = ("#9aa5b1", "#1f5fa8", "#e69f00", "#cc79a7", "#56b4e9", "#d55e00", "#009e73")
VERDICT_WORDS = {"better": "better", "worse": "worse", "no_significant_difference": "no significant difference"}


def write_reports(report: BenchmarkReport, folder: str | Path) -> None:
    """eval_report.json, eval_report.md and eval_report.html in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval_report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    (folder / "eval_report.md").write_text(render_markdown(report), encoding="utf-8")
    (folder / "eval_report.html").write_text(render_html(report), encoding="utf-8")


# --- numbers in words ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    return f"{value:.{digits}f}"


def signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}"


def interval(c: Comparison) -> str:
    return f"[{signed(c.ci_low)}, {signed(c.ci_high)}]"


def p_value(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def with_stderr(value: MetricValue | None) -> str:
    if value is None:
        return "-"
    return fmt(value.value) + (f" ± {fmt(value.stderr)}" if value.stderr is not None else "")


def primary_comparisons(report: BenchmarkReport) -> list[tuple[TaskReport, Comparison]]:
    return [(task, c) for task in report.tasks for c in task.comparisons if c.key == task.primary]


def md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- Markdown ------------------------------------------------------------------------------------------


def render_markdown(report: BenchmarkReport) -> str:
    labels = [m.label for m in report.models]
    parts = ["# Benchmark report", _md_header(report)]
    if report.warnings:
        parts.append("\n".join(f"- **warning:** {w}" for w in report.warnings))
    reference = report.spec.reference
    parts.append(f"## Results\n\nHeadline metric per task; the difference is tuned - {reference} on the same items, "
                 f"with a paired bootstrap {report.spec.confidence:.0%} interval.")
    rows = []
    for task in report.tasks:
        base = task.score(reference)
        if not task.comparisons:
            rows.append([task.name, task.primary, str(task.items_evaluated), with_stderr(base), "", "", "", ""])
        for c in (c for c in task.comparisons if c.key == task.primary):
            rows.append([task.name, task.primary, str(task.items_evaluated), with_stderr(base),
                         f"{c.model}: {with_stderr(task.score(c.model))}", f"{signed(c.difference)} {interval(c)}",
                         p_value(c.p_value), VERDICT_WORDS[c.verdict]])
    parts.append(md_table(["task", "metric", "items", reference, "tuned", "difference [CI]", "p", "verdict"], rows))
    parts.append("## All metrics")
    for task in report.tasks:
        keys = [m.key for m in task.scores.get("base", [])]
        table = [[key, *[with_stderr(task.score(label, key)) for label in labels]] for key in keys]
        parts.append(f"### {task.name}\n\n{_task_line(task)}\n\n" + md_table(["metric", *labels], table))
        if task.comparisons:
            parts.append(md_table(["model", "metric", "difference", "interval", "p", "verdict"],
                                  [[c.model, c.key, signed(c.difference), interval(c), p_value(c.p_value),
                                    VERDICT_WORDS[c.verdict]] for c in task.comparisons]))
    if report.judge:
        parts.append("## Judge\n\nBase and tuned answered the same prompts; the judge saw every pair in both "
                     "orders (a disagreement between orders is a tie).\n\n" + md_table(
                         ["model", "rubric", "judge", "prompts", "tuned wins", "base wins", "ties",
                          "tie-adjusted win rate [CI]", "position consistency", "verdict"],
                         [[c.tuned, c.rubric, c.judge_model, str(c.prompts), str(c.tuned_wins), str(c.base_wins),
                           str(c.ties), f"{fmt(c.tie_adjusted_win_rate)} [{fmt(c.ci_low)}, {fmt(c.ci_high)}]",
                           fmt(c.position_consistency), c.verdict] for c in report.judge]))
    contaminated = [t for t in report.tasks if t.contamination is not None]
    if contaminated:
        parts.append("## Contamination\n\nTask items found in the training data (13-gram overlap, then MinHash "
                     "containment).\n\n" + md_table(
                         ["task", "items found", "of items", "scored here", "examples"],
                         [[t.name, str(t.contamination.items_found), str(t.contamination.items_total),
                           str(t.contamination.evaluated_found), ", ".join(t.contamination.examples)]
                          for t in contaminated if t.contamination is not None]))
    examples = [(t, d) for t in report.tasks for d in t.disagreements]
    if examples:
        parts.append("## Where base and tuned disagree")
        for task, d in examples:
            parts.append(f"- **{task.name}** item `{d.item}` ({d.metric}: {d.model} {fmt(d.tuned_score)} vs base "
                         f"{fmt(d.base_score)}): target `{md_cell(d.target[:120])}`; base `{md_cell(d.base_answer[:120])}`; "
                         f"{d.model} `{md_cell(d.tuned_answer[:120])}`")
    if report.curation is not None:
        data = report.curation
        parts.append(f"## Data (curation)\n\n`{data.input_path}`: {data.records_in} records in, {data.records_out} "
                     "kept.\n\n" + md_table(["removed by", "records"], [[k, str(v)] for k, v in data.removed.items()]))
    if report.training is not None:
        t = report.training
        head = md_table(["field", "value"], [[k, str(v)] for k, v in t.report.items()]) if t.report else ""
        loss = (f"\n\nTraining loss {fmt(t.loss_curve[0][1])} at step {t.loss_curve[0][0]} -> "
                f"{fmt(t.loss_curve[-1][1])} at step {t.loss_curve[-1][0]}.") if t.loss_curve else ""
        parts.append(f"## Training\n\nRun `{t.run}`.{loss}\n\n{head}")
    parts.append(_md_metadata(report))
    return "\n\n".join(p for p in parts if p) + "\n"


def _md_header(report: BenchmarkReport) -> str:
    lines = [f"Model `{report.spec.model}`"]
    for m in report.models[1:]:
        check = m.adapter_check
        applied = "" if check is None else (" (applied: logits change by up to "
                                             f"{fmt(check.probe_max_logit_diff)})" if check.applied else
                                             " (**not applied**)")
        lines.append(f"adapter **{m.label}** `{m.adapter}` sha256 `{(m.adapter_sha256 or '')[:16]}`{applied}")
    return "; ".join(lines) + "."


def _task_line(task: TaskReport, markdown: bool = True) -> str:
    source = (f"`{task.path}`" if markdown else task.path) if task.path else "lm-eval registry"
    sample = (f"{task.items_evaluated} of {task.items_total} items (seeded sample)"
              if task.items_evaluated < task.items_total else f"{task.items_total} items")
    name = f"`{task.lm_eval_task}`" if markdown else task.lm_eval_task
    return f"{task.format} from {source}; {sample}; {task.num_fewshot}-shot; lm-eval task {name}."


def _md_metadata(report: BenchmarkReport) -> str:
    meta = report.metadata
    rows = [["started", meta.started_at.isoformat(timespec="seconds")], ["seconds", fmt(meta.seconds, 1)],
            ["seed", str(meta.seed)], ["limit", str(meta.limit)], ["device / dtype", f"{meta.device} / {meta.dtype}"],
            ["batch size", str(meta.batch_size)], ["chat template", str(meta.chat_template)],
            *[[name, version] for name, version in meta.versions.items()]]
    rows += [[f"task file {t.name}", f"{t.path} sha256 {(t.file_sha256 or '')[:16]}"] for t in report.tasks if t.path]
    rows += [[f"model {m.label}", f"{m.requests} requests, {m.computed} computed, {fmt(m.seconds, 1)} s"]
             for m in report.models]
    return "## Run\n\n" + md_table(["", ""], rows)


# --- HTML ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> Environment:
    # Autoescaping on: prompts, answers and paths come from user files.
    env = Environment(loader=PackageLoader("assay.evaluation", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=fmt, signed=signed, interval=interval, p_value=p_value, with_stderr=with_stderr)
    return env


def render_html(report: BenchmarkReport) -> str:
    labels = [m.label for m in report.models]
    context: dict[str, Any] = {
        "report": report, "labels": labels, "verdict_words": VERDICT_WORDS, "verdict_colours": VERDICT_COLOURS,
        "headline": primary_comparisons(report), "task_line": lambda task: _task_line(task, markdown=False),
        "metric_keys": {t.name: [m.key for m in t.scores.get("base", [])] for t in report.tasks},
        "difference_svg": difference_svg(report), "scores_svg": scores_svg(report),
        "loss_svg": loss_svg(report) if report.training and report.training.loss_curve else None,
        "spec_json": report.spec.model_dump_json(indent=2),
    }
    return _environment().get_template("eval_report.html.j2").render(**context)


# --- plots ---------------------------------------------------------------------------------------------


@contextmanager
def _plot_style(svg_id: str) -> Iterator[None]:
    import matplotlib

    # Text as paths: the page looks the same without the fonts; a fixed salt makes the SVG reproducible.
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "assay", "svg.id": svg_id,
                                "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        yield


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, safe in servers

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Figure, description: str) -> Markup:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)
    return Markup(text.replace(">", ">" + str(Markup("<title>{}</title>").format(description)), 1))


def _label(text: str, limit: int = 42) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")  # `$` would start matplotlib mathtext


def difference_svg(report: BenchmarkReport) -> Markup | None:
    """Forest plot, one panel per task (each on its own scale): every adapter's headline difference to the
    base, with its interval."""
    rows = [(task, [c for c in task.comparisons if c.key == task.primary]) for task in report.tasks]
    rows = [(task, found) for task, found in rows if found]
    if not rows:
        return None
    with _plot_style("plot-difference"):
        heights = [0.35 + 0.28 * len(found) for _, found in rows]
        fig = _figure(7.2, 0.5 + sum(heights))
        axes = fig.subplots(len(rows), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
        for ax, (task, found) in zip(axes, rows, strict=True):
            for y, c in enumerate(reversed(found)):
                colour = VERDICT_COLOURS[c.verdict]
                ax.errorbar(c.difference, y, xerr=[[c.difference - c.ci_low], [c.ci_high - c.difference]],
                            fmt="o", color=colour, ecolor=colour, capsize=3, markersize=5)
            ax.axvline(0, color="#444", linewidth=0.8)
            ax.set_yticks(range(len(found)), [_label(c.model, 24) for c in reversed(found)])
            ax.set_ylim(-0.6, len(found) - 0.4)
            ax.set_title(_label(f"{task.name}: {task.primary}", 60), loc="left", fontsize=9)
            low = min(min(c.ci_low for c in found), 0.0)
            high = max(max(c.ci_high for c in found), 0.0)
            pad = (high - low) * 0.1 or 0.05
            ax.set_xlim(low - pad, high + pad)
        axes[-1].set_xlabel(f"tuned - base ({report.spec.confidence:.0%} paired bootstrap interval)")
        return _svg(fig, "Difference to the base model per task, with intervals")


def scores_svg(report: BenchmarkReport) -> Markup | None:
    """One small panel per task (each on its own scale): the headline metric of every model, with lm-eval's
    standard error."""
    if not report.tasks:
        return None
    labels = [m.label for m in report.models]
    columns = min(4, len(report.tasks))
    rows = -(-len(report.tasks) // columns)
    with _plot_style("plot-scores"):
        fig = _figure(7.2, 0.4 + 1.9 * rows)
        axes = fig.subplots(rows, columns, squeeze=False).ravel()
        for ax, task in zip(axes, report.tasks, strict=False):
            values = [task.score(label) for label in labels]
            ax.bar(range(len(labels)), [v.value if v else 0.0 for v in values],
                   yerr=[(v.stderr or 0.0) if v else 0.0 for v in values], capsize=2,
                   color=[MODEL_COLOURS[i % len(MODEL_COLOURS)] for i in range(len(labels))])
            ax.set_xticks(range(len(labels)), [_label(label, 12) for label in labels], fontsize=7)
            ax.set_title(_label(f"{task.name}\n{task.primary}", 40), fontsize=8)
            top = max([(v.value + (v.stderr or 0.0)) if v else 0.0 for v in values] + [0.0])
            ax.set_ylim(0, top * 1.1 if top > 1.0 else 1.0)  # shares stay on a 0-1 axis, even all at zero
        for ax in axes[len(report.tasks):]:
            ax.set_visible(False)
        return _svg(fig, "Headline metric per task and model")


def loss_svg(report: BenchmarkReport) -> Markup | None:
    training = report.training
    if training is None or not training.loss_curve:
        return None
    with _plot_style("plot-loss"):
        fig = _figure(7.2, 2.4)
        ax = fig.add_subplot()
        steps, losses = zip(*training.loss_curve, strict=True)
        ax.plot(steps, losses, color="#1f5fa8", linewidth=1.2, label="training loss")
        if training.eval_loss_curve:
            e_steps, e_losses = zip(*training.eval_loss_curve, strict=True)
            ax.plot(e_steps, e_losses, "o-", color="#e69f00", linewidth=1.2, markersize=3, label="validation loss")
        ax.set_xlabel("step")
        ax.legend(frameon=False, fontsize=8)
        return _svg(fig, "Loss during fine-tuning")


def render_eval_run_html(summary: dict[str, Any]) -> str:
    """The page of one OpenAI-shaped eval run (/v1/reports/{id}): counts, per-criterion results, examples."""
    return _environment().get_template("eval_run.html.j2").render(run=summary, fmt=fmt)
