"""/v1/cycles: create (the cycle YAML as JSON) or replace a cycle, list, retrieve, its runs, trigger a run now,
pause and resume its schedule. Runs execute as `cycle_run` jobs in the training pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from assay.api.auth import authorize
from assay.api.cycle_store import CycleStore
from assay.api.deps import get_runner, get_settings, get_store
from assay.api.errors import APIError, not_found
from assay.api.remote_specs import check_remote_spec
from assay.api.routes.files import COMMON_ERRORS, NOT_FOUND
from assay.api.runner import Runner
from assay.api.settings import Settings
from assay.api.store import Store
from assay.schemas.cycle import CycleConfig, CycleError

router = APIRouter(prefix="/v1/cycles", tags=["cycles"], dependencies=[Depends(authorize)], responses=COMMON_ERRORS)
INBOX = "inbox"


class CycleRunObject(BaseModel):
    id: str
    object: Literal["cycle.run"] = "cycle.run"
    cycle: str
    number: int
    trigger: str
    status: str = Field(description="queued, running, succeeded, failed or skipped.")
    stage: str | None = None
    reason: str | None = None
    decision: Literal["promoted", "kept"] | None = None
    champion_before: str | None = None
    champion_after: str | None = None
    challenger: str | None = None
    job_id: str | None = None
    stages: dict[str, Any] = Field(default_factory=dict, description="Per stage: status, seconds and figures.")
    summary: dict[str, Any] = Field(default_factory=dict, description="Data counts, metrics, gate decision.")
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None


class CycleObject(BaseModel):
    id: str = Field(description="The cycle's name.")
    object: Literal["cycle"] = "cycle"
    status: Literal["active", "paused"]
    champion: str | None = Field(None, description="The champion model; null: the base model.")
    next_run_at: int | None = None
    config: dict[str, Any]
    created_at: int
    last_run: CycleRunObject | None = None


class CycleList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CycleObject]


class CycleRunList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CycleRunObject]


class TriggerCycle(BaseModel):
    force: bool = Field(False, description="Run even if no trigger fires (e.g. no new records).")


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def render_run(row: dict[str, Any]) -> CycleRunObject:
    return CycleRunObject(
        id=row["id"], cycle=row["cycle"], number=row["number"], trigger=row["trigger"], status=row["status"],
        stage=row.get("stage"), reason=row.get("reason"), decision=row.get("decision"),
        champion_before=row.get("champion_before"), champion_after=row.get("champion_after"),
        challenger=row.get("challenger"), job_id=row.get("job_id"), stages=row.get("stages") or {},
        summary=row.get("summary") or {}, created_at=int(row["created_at"]), started_at=_int(row.get("started_at")),
        finished_at=_int(row.get("finished_at")))


def render_cycle(cycles: CycleStore, row: dict[str, Any]) -> CycleObject:
    runs = cycles.list_runs(row["name"])
    return CycleObject(id=row["name"], status=row["status"], champion=row["champion"],
                       next_run_at=_int(row["next_run_at"]), config=row["config"], created_at=int(row["created_at"]),
                       last_run=render_run(runs[-1]) if runs else None)


def _inside_inbox(settings: Settings, value: str, param: str) -> str:
    """Server paths from a client: only inside the data folder's inbox/ (where operators put data to share)."""
    inbox = (settings.data_dir / INBOX).resolve()
    try:
        candidate = Path(value)
        resolved = (inbox / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
    except (ValueError, OSError) as exc:  # a NUL byte, a name too long
        raise APIError(400, f"{param}: not a usable path", param=param, code="path_not_allowed") from exc
    if not resolved.is_relative_to(inbox):
        raise APIError(400, f"{param}: paths are relative to the server's inbox folder and must stay inside it",
                       param=param, code="path_not_allowed")
    return str(resolved)


def checked_config(body: dict[str, Any], settings: Settings) -> CycleConfig:
    from assay.api.cycles.config import parse_config

    try:
        config = parse_config(body)
    except CycleError as exc:
        raise APIError(400, str(exc), code="invalid_cycle") from exc
    check_remote_spec(config.curation, "curation")
    if config.data.path is not None:
        config.data.path = _inside_inbox(settings, config.data.path, "data.path")
    for i, task in enumerate(config.evaluation.tasks):
        if task.path is not None:
            task.path = _inside_inbox(settings, task.path, f"evaluation.tasks.{i}.path")
    if config.evaluation.judge is not None and config.evaluation.judge.prompts is not None:
        config.evaluation.judge.prompts = _inside_inbox(settings, config.evaluation.judge.prompts,
                                                        "evaluation.judge.prompts")
    return config


def _cycle(cycles: CycleStore, name: str) -> dict[str, Any]:
    row = cycles.get_cycle(name)
    if row is None:
        raise not_found("cycle", name, param="name")
    return row


@router.post("", response_model=CycleObject, summary="Create or replace a cycle",
             description="The cycle definition (the YAML of docs/cycles.md as JSON). A cycle with this name gets the "
                         "new definition; its champion, runs and status stay. Paths (data.path, task files) are "
                         "relative to the server's `inbox/` folder; `data.file_ids` name uploaded files.")
def create_cycle(body: dict[str, Any] = Body(...), store: Store = Depends(get_store),
                 settings: Settings = Depends(get_settings)) -> CycleObject:
    config = checked_config(body, settings)
    cycles = CycleStore(store)
    for file_id in config.data.file_ids:
        if store.get_file(file_id) is None:
            raise APIError(400, f"No such file: '{file_id}'.", param="data.file_ids", code="file_not_found")
    row = cycles.upsert_cycle(config.name, config.model_dump(mode="json"))
    return render_cycle(cycles, row)


@router.get("", response_model=CycleList, summary="List cycles")
def list_cycles(store: Store = Depends(get_store)) -> CycleList:
    cycles = CycleStore(store)
    return CycleList(data=[render_cycle(cycles, row) for row in cycles.list_cycles()])


@router.get("/{name}", response_model=CycleObject, responses=NOT_FOUND, summary="Retrieve a cycle")
def retrieve_cycle(name: str, store: Store = Depends(get_store)) -> CycleObject:
    cycles = CycleStore(store)
    return render_cycle(cycles, _cycle(cycles, name))


@router.get("/{name}/runs", response_model=CycleRunList, responses=NOT_FOUND, summary="List a cycle's runs",
            description="Runs oldest first, each with its stages, data counts, metrics and gate decision.")
def list_runs(name: str, store: Store = Depends(get_store)) -> CycleRunList:
    cycles = CycleStore(store)
    _cycle(cycles, name)
    return CycleRunList(data=[render_run(r) for r in cycles.list_runs(name)])


@router.post("/{name}/trigger", response_model=CycleRunObject, responses=NOT_FOUND, summary="Run a cycle now",
             description="Queue one run (a `cycle_run` job in the training pool). A run that finds another run of "
                         "the cycle in progress ends as skipped.")
async def trigger_cycle(name: str, body: TriggerCycle | None = None, store: Store = Depends(get_store),
                        runner: Runner = Depends(get_runner)) -> CycleRunObject:
    from assay.api.cycles.jobs import CYCLE_RUNS, queue_run

    cycles = CycleStore(store)
    await run_in_threadpool(_cycle, cycles, name)
    run, _ = await run_in_threadpool(queue_run, store, name, "api", force=bool(body and body.force))
    runner.wake(CYCLE_RUNS.name)
    return render_run(run)


def _set_status(name: str, status: str, store: Store) -> CycleObject:
    cycles = CycleStore(store)
    _cycle(cycles, name)
    row = cycles.set_status(name, status)
    assert row is not None
    if status == "active":  # ticks that passed while paused are not owed: the next one counts from now
        cycles.claim_tick(name, row["next_run_at"], None)
        row = cycles.get_cycle(name)
        assert row is not None
    return render_cycle(cycles, row)


@router.post("/{name}/pause", response_model=CycleObject, responses=NOT_FOUND, summary="Pause a cycle's schedule")
def pause_cycle(name: str, store: Store = Depends(get_store)) -> CycleObject:
    return _set_status(name, "paused", store)


@router.post("/{name}/resume", response_model=CycleObject, responses=NOT_FOUND, summary="Resume a cycle's schedule")
def resume_cycle(name: str, store: Store = Depends(get_store)) -> CycleObject:
    return _set_status(name, "active", store)
