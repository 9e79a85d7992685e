"""The `cycle_run` job kind: one run of a retrain cycle in a worker of the `training` pool (so curation jobs
never wait behind it). Runs are queued by `POST /v1/cycles/{name}/trigger`, by the scheduler, or directly at
`/v1/cycle_run/jobs`; the job's events follow the run's stages and cancelling the job stops the run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assay.api.cycle_store import CycleStore
from assay.api.errors import APIError
from assay.api.jobs.context import JobCancelled, JobContext, JobFailed
from assay.api.jobs.kind import JobKind, JobRequest, JobServices
from assay.api.models import JobObject
from assay.api.store import Store

CYCLE_POOL = "training"


class CreateCycleRunJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cycle: str = Field(min_length=1, max_length=64, description="The cycle's name.")
    force: bool = Field(False, description="Run even if no trigger fires.")


class CycleRunJob(JobObject):
    object: Literal["cycle_run.job"] = "cycle_run.job"
    cycle: str
    run_id: str
    force: bool = False


def queue_run(store: Store, name: str, trigger: str, *, force: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """A queued run row and its job (the caller wakes the pool); returns (run, job)."""
    cycles = CycleStore(store)
    run = cycles.create_run(name, trigger)
    job = store.insert_job(kind=CYCLE_RUNS.name, input_file_id=None,
                           params={"cycle": name, "run_id": run["id"], "trigger": trigger, "force": force})
    store.add_event(job["id"], f"run {run['number']} of cycle {name} queued ({trigger})")
    cycles.update_run(run["id"], job_id=job["id"])
    return {**run, "job_id": job["id"]}, job


def prepare_cycle_run(body: CreateCycleRunJob, services: JobServices) -> JobRequest:
    cycles = CycleStore(services.store)
    if cycles.get_cycle(body.cycle) is None:
        raise APIError(400, f"No such cycle: '{body.cycle[:64]}'.", param="cycle", code="cycle_not_found")
    run = cycles.create_run(body.cycle, "api")
    return JobRequest(params={"cycle": body.cycle, "run_id": run["id"], "trigger": "api", "force": body.force})


def render_cycle_run(row: dict[str, Any]) -> dict[str, Any]:
    params = row["params"]
    return {"cycle": params["cycle"], "run_id": params["run_id"], "force": bool(params.get("force"))}


CYCLE_RUNS = JobKind(name="cycle_run", run="assay.api.cycles.jobs:run_cycle_job", create_model=CreateCycleRunJob,
                     job_model=CycleRunJob, prepare=prepare_cycle_run, render=render_cycle_run, pool=CYCLE_POOL,
                     title="cycle run job")


def run_cycle_job(ctx: JobContext) -> dict[str, Any]:
    from assay.api.cycles.config import parse_config
    from assay.api.cycles.engine import run_cycle
    from assay.schemas.cycle import CycleError

    params = ctx.params
    cycles = CycleStore(ctx.store)
    cycles.update_run(params["run_id"], job_id=ctx.job_id)
    cycle = cycles.get_cycle(params["cycle"])
    if cycle is None:
        cycles.finish_run(params["run_id"], "failed", reason="the cycle was deleted before the run started")
        raise JobFailed(f"no cycle named {params['cycle']!r}", "cycle_not_found")
    try:
        config = parse_config(cycle["config"], where=params["cycle"])
    except CycleError as exc:
        cycles.finish_run(params["run_id"], "failed", reason=str(exc))
        raise JobFailed(str(exc), "invalid_cycle") from exc

    def stop() -> bool:
        return ctx.store.cancel_requested(ctx.job_id)

    run = run_cycle(cycles, config, ctx.settings.data_dir, trigger=params["trigger"], force=bool(params["force"]),
                    run_id=params["run_id"], files_dir=ctx.settings.files_dir, emit=ctx.event, should_stop=stop)
    if run["status"] == "failed":
        if (run.get("reason") or "").startswith("cancelled"):
            raise JobCancelled(ctx.job_id)
        raise JobFailed(run.get("reason") or "the run failed", "cycle_run_failed")
    return {"outputs": {"run_id": run["id"], "status": run["status"], "decision": run.get("decision"),
                        "champion": run.get("champion_after")}, "result_files": []}


__all__ = ["CYCLE_RUNS", "queue_run", "run_cycle_job"]
