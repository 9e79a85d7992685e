"""The cycle pages: one run's report (run folder, report.md/html) and the cycle's history (data added and
removed by reason, champion against challenger per metric with intervals, the gate's rules, and trend plots
across runs) in data_dir/cycles/NAME/history.{md,html}."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from assay.schemas.cycle import CycleConfig

if TYPE_CHECKING:
    from assay.api.cycle_store import CycleStore


def _when(value: float | None) -> str:
    return "" if value is None else datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _signed(value: Any) -> str:
    return "–" if value is None else f"{value:+.4g}"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("assay.api.cycles", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, num=_num, signed=_signed)
    return env


def _markdown_environment() -> Environment:
    env = Environment(loader=PackageLoader("assay.api.cycles", "templates"), autoescape=False,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, num=_num, signed=_signed)
    return env


def run_view(run: dict[str, Any]) -> dict[str, Any]:
    """What the templates read of a run, with every key present."""
    summary = run.get("summary") or {}
    return {"number": run["number"], "id": run["id"], "status": run["status"], "trigger": run["trigger"],
            "decision": run.get("decision"), "reason": run.get("reason") or "", "challenger": run.get("challenger"),
            "champion_before": run.get("champion_before"), "champion_after": run.get("champion_after"),
            "created_at": run.get("created_at"), "finished_at": run.get("finished_at"),
            "data": summary.get("data") or {}, "metrics": summary.get("metrics") or [],
            "gate": summary.get("gate"), "judge": summary.get("judge") or [],
            "stages": run.get("stages") or {}, "folder": run.get("folder")}


def write_run_report(folder: Path, config: CycleConfig, run: dict[str, Any], summary: dict[str, Any],
                     stages: dict[str, Any], challenger: str, champion: str | None) -> list[Path]:
    """report.md and report.html of one run, written before its decision is committed."""
    passed = bool((summary.get("gate") or {}).get("passed"))
    view = run_view({**run, "summary": summary, "stages": stages, "status": "succeeded", "challenger": challenger,
                     "decision": "promoted" if passed else "kept",
                     "reason": (summary.get("gate") or {}).get("reason", "")})
    context: dict[str, Any] = {"cycle": config.name, "description": config.description, "runs": [view], "plots": {},
               "champion": challenger if passed else champion, "title": f"Cycle {config.name}: run {run['number']}"}
    html = _environment().get_template("history.html.j2").render(**context)
    markdown = _markdown_environment().get_template("history.md.j2").render(**context)
    pages = [folder / "report.html", folder / "report.md"]
    pages[0].write_text(html, encoding="utf-8")
    pages[1].write_text(markdown, encoding="utf-8")
    return pages


def write_history(cycles: CycleStore, name: str, data_dir: Path) -> list[Path]:
    """The cycle's history page from every run in the database (newest run first, plots oldest to newest)."""
    from assay.api.cycles.engine import cycle_folder

    cycle = cycles.get_cycle(name)
    if cycle is None:
        raise ValueError(f"no cycle named {name!r}")
    runs = [run_view(r) for r in cycles.list_runs(name)]
    context = {"cycle": name, "description": (cycle["config"] or {}).get("description", ""),
               "runs": list(reversed(runs)), "champion": cycle["champion"], "plots": trend_plots(runs),
               "title": f"Cycle {name}: history", "decisions": cycles.decisions(name)}
    folder = cycle_folder(data_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    pages = [folder / "history.html", folder / "history.md"]
    pages[0].write_text(_environment().get_template("history.html.j2").render(**context), encoding="utf-8")
    pages[1].write_text(_markdown_environment().get_template("history.md.j2").render(**context), encoding="utf-8")
    return pages


def trend_plots(runs: list[dict[str, Any]]) -> dict[str, Markup]:
    """Score (champion and challenger per metric), data size and removal rate per run, as inline SVG."""
    from assay.evaluation.report import _figure, _plot_style, _svg

    done = [r for r in runs if r["metrics"] or r["data"].get("corpus_records") is not None]
    if not done:
        return {}
    plots: dict[str, Markup] = {}
    keys = sorted({(m["task"], m["metric"]) for r in done for m in r["metrics"]})
    if keys:
        with _plot_style("plot-cycle-scores"):
            fig = _figure(7.5, 2.2 * len(keys))
            axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
            for ax, (task, metric) in zip(axes, keys, strict=True):
                points = [(r["number"], m) for r in done for m in r["metrics"]
                          if (m["task"], m["metric"]) == (task, metric)]
                xs = [n for n, _ in points]
                ax.plot(xs, [m["champion"] for _, m in points], marker="o", color="#5b6673", label="champion")
                # the challenger's value with the interval of its difference to the champion
                low = [max(0.0, m["challenger"] - (m["champion"] + m["ci_low"])) for _, m in points]
                high = [max(0.0, m["champion"] + m["ci_high"] - m["challenger"]) for _, m in points]
                ax.errorbar(xs, [m["challenger"] for _, m in points], yerr=[low, high], fmt="s", capsize=3,
                            color="#1f77b4", label="challenger")
                ax.set_title(f"{task}: {metric}", loc="left")
                ax.set_xlabel("run")
                ax.set_xticks(xs)
                ax.legend(loc="best", frameon=False)
            plots["scores"] = _svg(fig, "Champion and challenger per run")
    with _plot_style("plot-cycle-data"):
        fig = _figure(7.5, 2.4)
        size_ax, rate_ax = fig.subplots(1, 2)
        xs = [r["number"] for r in done]
        size_ax.bar(xs, [r["data"].get("corpus_records", 0) for r in done], color="#9ecae1", label="corpus")
        size_ax.bar(xs, [r["data"].get("added", 0) for r in done], color="#1f77b4", label="added")
        size_ax.set_title("curated records", loc="left")
        size_ax.set_xticks(xs)
        size_ax.legend(frameon=False)
        rates = [sum((r["data"].get("removed") or {}).values()) / r["data"]["curated_in"]
                 if r["data"].get("curated_in") else 0.0 for r in done]
        rate_ax.plot(xs, rates, marker="o", color="#d62728")
        rate_ax.set_ylim(0, max(1e-9, max(rates)) * 1.15 or 1)
        rate_ax.set_title("removal rate (curation)", loc="left")
        rate_ax.set_xticks(xs)
        plots["data"] = _svg(fig, "Corpus size, records added and removal rate per run")
    return plots
