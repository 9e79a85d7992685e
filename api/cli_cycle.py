"""`assay cycle run|history` and the registry commands `assay models promote|rollback` and `models list
--lineage`: they share the service's database (--data-dir, like `assay serve`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from assay.api.cli_serve import DATA_DIR_HELP

if TYPE_CHECKING:
    from assay.api.cycle_store import CycleStore
    from assay.api.settings import Settings

DataDir = Annotated[Path | None, typer.Option("--data-dir", help=DATA_DIR_HELP)]
DatabaseUrl = Annotated[str | None, typer.Option("--database-url", envvar="ASSAY_DATABASE_URL",
                                                 help="SQLAlchemy URL of the database (default: SQLite in the data "
                                                      "folder).")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def register(app: typer.Typer, models: typer.Typer) -> None:
    cycle = typer.Typer(help="Retrain-and-evaluate cycles: collect, curate, train, evaluate, gate, promote.",
                        no_args_is_help=True)
    cycle.command("run")(cycle_run)
    cycle.command("history")(cycle_history)
    app.add_typer(cycle, name="cycle")
    models.command("promote")(models_promote)
    models.command("rollback")(models_rollback)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def open_registry(data_dir: Path | None, database_url: str | None = None) -> tuple[Settings, CycleStore]:
    from assay.api.cli_serve import _store_for
    from assay.api.cycle_store import CycleStore

    try:
        settings, store = _store_for(data_dir, database_url)
    except ValueError as exc:
        _fail(str(exc))
        raise
    return settings, CycleStore(store)


def cycle_run(
    config: Annotated[Path, typer.Argument(help="The cycle's YAML file (docs/cycles.md).")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    force: Annotated[bool, typer.Option("--force", help="Run even if no trigger fires (no new records).")] = False,
    as_json: AsJson = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No stage messages.")] = False,
) -> None:
    """Run the cycle once now. Exit 0: the run finished (challenger promoted or kept, or skipped because no
    trigger fired); 1: a stage failed (the champion is unchanged); 2: a bad cycle file or settings."""
    from assay.api.cycles.config import load_config
    from assay.api.cycles.engine import run_cycle
    from assay.schemas.cycle import CycleError

    try:
        loaded = load_config(config)
    except CycleError as exc:
        _fail(str(exc))
        return
    settings, cycles = open_registry(data_dir, database_url)
    cycles.upsert_cycle(loaded.name, loaded.model_dump(mode="json"))

    def emit(message: str) -> None:
        if not quiet:
            typer.echo(f"[{time.strftime('%H:%M:%S')}] {loaded.name}: {message}", err=True)

    run = run_cycle(cycles, loaded, settings.data_dir, trigger="manual", force=force, emit=emit,
                    files_dir=settings.files_dir)
    if as_json:
        typer.echo(json.dumps(run_json(run), indent=2, default=str))
    else:
        typer.echo(f"run {run['number']} of {loaded.name}: {run['status']}"
                   + (f", {run['decision']}" if run.get("decision") else "") + f": {run.get('reason') or ''}")
        if run.get("folder"):
            typer.echo(f"run folder: {run['folder']}")
    if run["status"] == "failed":
        raise typer.Exit(1)


def run_json(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "cycle", "number", "trigger", "status", "stage", "reason", "decision", "champion_before",
            "champion_after", "challenger", "folder", "stages", "summary", "job_id", "created_at", "started_at",
            "finished_at")
    return {k: run.get(k) for k in keys}


def cycle_history(
    name: Annotated[str, typer.Argument(help="The cycle's name.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Every run of the cycle with its decision, and the history page (trend plots) written anew."""
    from assay.api.cycles.report import write_history

    settings, cycles = open_registry(data_dir, database_url)
    cycle = cycles.get_cycle(name)
    if cycle is None:
        _fail(f"no cycle named {name!r} in {settings.data_dir}")
        return
    runs = cycles.list_runs(name)
    pages = write_history(cycles, name, settings.data_dir)
    if as_json:
        typer.echo(json.dumps({"cycle": name, "champion": cycle["champion"], "status": cycle["status"],
                               "runs": [run_json(r) for r in runs], "decisions": cycles.decisions(name),
                               "pages": [str(p) for p in pages]}, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "trigger", "status", "decision", "challenger", "new", "added", "seconds", "reason",
                  title=f"cycle {name}: champion {cycle['champion'] or 'base model'} ({cycle['status']})")
    for run in runs:
        data = (run.get("summary") or {}).get("data") or {}
        seconds = sum(s.get("seconds", 0) for s in (run.get("stages") or {}).values())
        table.add_row(str(run["number"]), run["trigger"], run["status"], run.get("decision") or "",
                      run.get("challenger") or "", str(data.get("new_records", "")), str(data.get("added", "")),
                      f"{seconds:.1f}", (run.get("reason") or "")[:100])
    Console(width=200).print(table)
    typer.echo(f"history page: {pages[0]}")


def models_promote(
    name: Annotated[str, typer.Argument(help="A model a cycle trained (see `assay models list --lineage`).")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    reason: Annotated[str, typer.Option(help="Why, recorded with the decision.")] = "promoted by hand",
) -> None:
    """Make NAME its cycle's champion (recorded as a decision)."""
    _, cycles = open_registry(data_dir, database_url)
    model = cycles.store.get_model(name)
    if model is None:
        _fail(f"no model named {name!r}")
        return
    cycle = (model.get("lineage") or {}).get("cycle")
    if model["kind"] != "cycle" or not cycle or cycles.get_cycle(cycle) is None:
        _fail(f"{name} was not trained by a cycle: only cycle models have a champion alias to move")
        return
    if cycles.get_cycle(cycle)["champion"] == name:  # type: ignore[index]
        _fail(f"{name} is already the champion of cycle {cycle}", 1)
    decision = cycles.set_champion(cycle, name, action="manual_promote", reason=reason)
    typer.echo(f"cycle {cycle}: champion {decision['previous'] or 'base model'} -> {name}")


def models_rollback(
    cycle: Annotated[str, typer.Argument(help="The cycle whose previous champion comes back.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    reason: Annotated[str, typer.Option(help="Why, recorded with the decision.")] = "rolled back by hand",
) -> None:
    """Put the cycle's previous champion back (recorded as a decision)."""
    _, cycles = open_registry(data_dir, database_url)
    if cycles.get_cycle(cycle) is None:
        _fail(f"no cycle named {cycle!r}")
        return
    history = cycles.champion_history(cycle)
    if len(history) < 2:
        _fail(f"cycle {cycle} has no previous champion to roll back to", 1)
    target = history[-2]
    decision = cycles.set_champion(cycle, target, action="rollback", reason=reason)
    typer.echo(f"cycle {cycle}: champion {decision['previous'] or 'base model'} -> {target or 'base model'}")


def models_with_lineage(data_dir: Path | None, database_url: str | None, as_json: bool) -> None:
    """`assay models list --lineage`: the registered models (fine-tuned, cycle) with their history."""
    _, cycles = open_registry(data_dir, database_url)
    champions = {c["champion"]: c["name"] for c in cycles.list_cycles() if c["champion"]}
    models = cycles.store.list_models()
    if as_json:
        typer.echo(json.dumps([{**m, "champion_of": champions.get(m["id"])} for m in models], indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("model", "kind", "base", "champion of", "adapter sha256", "trained on", "evaluation", "promoted")
    for model in models:
        lineage = model.get("lineage") or {}
        data = (lineage.get("datasets") or {}).get("training_data") or {}
        metrics = (lineage.get("evaluation") or {}).get("metrics") or []
        shown = ", ".join(f"{m['task']}/{m['metric']} {m['challenger']:.4g} ({m['difference']:+.3g})"
                          for m in metrics[:2])
        promoted = lineage.get("promoted_at")
        table.add_row(model["id"], model["kind"], str(model["base"]), champions.get(model["id"], ""),
                      (model.get("adapter_hash") or "")[:12], (data.get("sha256") or "")[:12], shown,
                      time.strftime("%Y-%m-%d %H:%M", time.gmtime(promoted)) if promoted else "")
    Console(width=220).print(table)
