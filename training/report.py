"""The training report as JSON, Markdown and a self-contained HTML page with the loss curves."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from assay.schemas.training import CurvePoint, SweepReport, TrainingReport

TRAIN_COLOUR = "#1f5fa8"
VALID_COLOUR = "#d55e00"


def write_training_report(report: TrainingReport, folder: str | Path) -> None:
    """training_report.json, .md, .html and loss.svg in `folder`; the JSON is written last."""
    folder = Path(folder)
    svg = loss_svg(report)
    if svg is not None:
        (folder / "loss.svg").write_text(str(svg), encoding="utf-8")
    (folder / "training_report.md").write_text(render_markdown(report, with_plot=svg is not None), encoding="utf-8")
    (folder / "training_report.html").write_text(render_html(report, svg), encoding="utf-8")
    (folder / "training_report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def summary_rows(report: TrainingReport) -> list[tuple[str, str]]:
    spec, data = report.spec, report.data
    rows = [
        ("status", report.status),
        ("model", f"{report.model.name} ({report.model.kind})"),
        ("steps", f"{report.steps} of {report.total_steps} ({report.epochs:g} epochs)"),
        ("validation loss", f"{_fmt(report.valid_loss_before)} before -> {_fmt(report.final_valid_loss)} after"
                            if report.valid_loss_before is not None else _fmt(report.final_valid_loss)),
        ("validation perplexity", _fmt(report.final_valid_ppl)),
        ("last training loss", _fmt(report.train_loss[-1].value if report.train_loss else None)),
        ("time", _duration(report.seconds)),
        ("tokens trained", f"{report.tokens_trained:,} ({report.tokens_per_s:,.1f} tokens/s)"),
        ("peak memory", f"{report.peak_memory_mb:,.0f} MB ({report.memory_kind})" if report.peak_memory_mb else "-"),
        ("device", f"{report.device}, {report.precision}"),
        ("trainable parameters", f"{report.trainable_parameters:,} of {report.total_parameters:,} "
                                 f"({100 * report.trainable_parameters / max(report.total_parameters, 1):.2f}%)"),
        ("LoRA", f"r={spec.lora.r} alpha={spec.lora.alpha} dropout={spec.lora.dropout:g} on "
                 f"{spec.lora.target_modules if isinstance(spec.lora.target_modules, str) else ', '.join(spec.lora.target_modules)}"),
        ("optimisation", f"lr {spec.learning_rate:g} ({spec.lr_scheduler}, warmup {spec.warmup_ratio:g}), batch "
                         f"{spec.batch_size} x {spec.grad_accum} accumulation, max_seq_len {spec.max_seq_len}, "
                         f"seed {spec.seed}"),
        ("loss computed on", report.loss_path),
        ("chat template", data.chat_template),
    ]
    if report.packing_note:
        rows.append(("packing", report.packing_note))
    if report.resumed_from:
        rows.append(("resumed at steps", ", ".join(map(str, report.resumed_from))))
    if report.adapter_sha256:
        rows.append(("adapter sha256", report.adapter_sha256))
    return rows


def data_rows(report: TrainingReport) -> list[list[str]]:
    data = report.data
    rows = []
    for name, split in (("train", data.train), ("validation", data.validation)):
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(split.dropped.items())) or "-"
        rows.append([name, f"{split.examples:,}", f"{split.tokens:,}", f"{split.target_tokens:,}",
                     f"{100 * split.masked_share:.1f}%", f"{split.truncated:,}", f"{split.mean_length:g}",
                     f"{split.max_length:,}", dropped])
    return rows


DATA_HEADERS = ["split", "examples", "tokens", "learned tokens", "masked", "truncated", "mean length",
                "longest", "dropped"]


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: TrainingReport, with_plot: bool = False) -> str:
    data = report.data
    parts = [f"# Training report: {report.model.name}", "",
             _md_table(["", ""], summary_rows(report)), ""]
    if with_plot:
        parts += ["![training and validation loss](loss.svg)", ""]
    parts += ["## Data", "",
              f"`{data.path}` ({data.format or 'unknown'} format, sha256 `{data.sha256[:16]}...`): "
              f"{data.records:,} valid records; validation from {data.validation_source}"
              + (f" (`{data.validation_path}`)" if data.validation_path else "") + ".", ""]
    if data.rejected:
        parts += ["Rejected by validation: " + ", ".join(f"{k} {v}" for k, v in sorted(data.rejected.items())), ""]
    parts += [_md_table(DATA_HEADERS, data_rows(report)), ""]
    if report.valid_loss:
        parts += ["## Validation", "", _md_table(["step", "validation loss"],
                                                 [[str(p.step), _fmt(p.value)] for p in report.valid_loss]), ""]
    if report.outputs:
        parts += ["## Outputs", "", *[f"- {k}: `{v}`" for k, v in report.outputs.items()], ""]
    return "\n".join(parts)


def _environment() -> Environment:
    return Environment(loader=PackageLoader("assay.training", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(report: TrainingReport, svg: Markup | None = None) -> str:
    template = _environment().get_template("training_report.html.j2")
    return template.render(report=report, summary=summary_rows(report), data_headers=DATA_HEADERS,
                           data_rows=data_rows(report), plot=svg if svg is not None else loss_svg(report),
                           fmt=_fmt)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, safe in servers and threads

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Any, description: str, svg_id: str) -> Markup:
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "assay", "svg.id": svg_id}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    text = text[text.index("<svg"):]  # no XML prolog inside HTML
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return Markup(text.replace(">", str(Markup("><title>{}</title>").format(description)), 1))


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_svg(report: TrainingReport) -> Markup | None:
    """Training loss per step (raw and smoothed) and validation loss at each evaluation."""
    if not report.train_loss:
        return None
    import matplotlib

    with matplotlib.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        fig = _figure(7.0, 3.2)
        ax = fig.add_subplot()
        steps = [p.step for p in report.train_loss]
        values = [p.value for p in report.train_loss]
        window = max(1, len(values) // 20)
        ax.plot(steps, values, color=TRAIN_COLOUR, alpha=0.3 if window > 1 else 1.0, linewidth=1,
                label="training loss" if window == 1 else None)
        if window > 1:
            ax.plot(steps, _smooth(values, window), color=TRAIN_COLOUR, linewidth=1.8,
                    label=f"training loss (mean of {window} steps)")
        valid: list[CurvePoint] = list(report.valid_loss)
        if report.valid_loss_before is not None:
            valid = [CurvePoint(step=0, value=report.valid_loss_before), *valid]
        if valid:
            ax.plot([p.step for p in valid], [p.value for p in valid], color=VALID_COLOUR, marker="o",
                    markersize=4, linewidth=1.8, label="validation loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (nats per learned token)")
        ax.grid(alpha=0.25)
        ax.legend(frameon=False)
        return _svg(fig, "Training and validation loss per step", "plot-loss")


# --- sweeps -------------------------------------------------------------------------------------------

def sweep_rows(report: SweepReport) -> list[list[str]]:
    rows = []
    for rank, point in enumerate(report.points, 1):
        rows.append([str(rank) if point.error is None else "-", f"{point.learning_rate:g}", str(point.batch_size),
                     str(point.effective_batch_size), f"{point.lr_per_example:.3g}", _fmt(point.valid_loss),
                     _fmt(point.train_loss), _duration(point.seconds), point.error or ""])
    return rows


SWEEP_HEADERS = ["rank", "learning rate", "batch size", "effective batch", "lr / example", "validation loss",
                 "last training loss", "time", "error"]


def render_sweep_markdown(report: SweepReport) -> str:
    parts = [f"# Sweep: {report.model} on `{report.data}`", "", _md_table(SWEEP_HEADERS, sweep_rows(report)), ""]
    if report.best is not None:
        parts.append(f"Best: learning rate {report.best.learning_rate:g}, batch size {report.best.batch_size} "
                     f"(validation loss {_fmt(report.best.valid_loss)}); learning rate / effective batch size "
                     f"= {report.best_lr_per_example:.3g}.")
    return "\n".join(parts) + "\n"


def heatmap_svg(report: SweepReport) -> Markup | None:
    """Validation loss per (learning rate, batch size): darker is lower; failed points are blank."""
    ok = [p for p in report.points if p.valid_loss is not None]
    if not ok:
        return None
    import matplotlib
    import numpy as np

    lrs = sorted({p.learning_rate for p in report.points})
    sizes = sorted({p.batch_size for p in report.points})
    grid = np.full((len(sizes), len(lrs)), np.nan)
    for p in ok:
        grid[sizes.index(p.batch_size), lrs.index(p.learning_rate)] = p.valid_loss
    with matplotlib.rc_context({"font.size": 9}):
        fig = _figure(1.6 + 1.1 * len(lrs), 1.2 + 0.6 * len(sizes))
        ax = fig.add_subplot()
        image = ax.imshow(grid, cmap="viridis_r", aspect="auto")
        ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs])
        ax.set_yticks(range(len(sizes)), [str(v) for v in sizes])
        ax.set_xlabel("learning rate")
        ax.set_ylabel("batch size")
        finite = grid[np.isfinite(grid)]
        middle = (finite.min() + finite.max()) / 2
        for (row, col), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(col, row, f"{value:.3f}", ha="center", va="center", fontsize=8,
                        color="white" if value > middle else "black")
        fig.colorbar(image, ax=ax, label="validation loss")
        return _svg(fig, "Validation loss per learning rate and batch size", "plot-sweep")


def write_sweep_report(report: SweepReport, folder: str | Path) -> None:
    folder = Path(folder)
    (folder / "sweep.md").write_text(render_sweep_markdown(report), encoding="utf-8")
    template = _environment().get_template("sweep.html.j2")
    (folder / "sweep.html").write_text(template.render(report=report, headers=SWEEP_HEADERS, rows=sweep_rows(report),
                                                       heatmap=heatmap_svg(report), fmt=_fmt), encoding="utf-8")
    (folder / "sweep.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
