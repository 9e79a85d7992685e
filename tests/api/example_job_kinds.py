"""Job kinds the tests register as a plugin (ASSAY_JOB_KINDS=example_job_kinds:KINDS): a whole kind is one file.

`echo` answers at once; with `block` it never returns and never looks at cancellation, a stand-in for a job
stuck in C code (a catastrophic regex, a hung library call); with `processes` it starts a process pool, as the
PII step does with `pii.workers`. The same function is offered as three kinds in three worker pools.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assay.api.jobs import JobKind, JobRequest, JobServices
from assay.api.jobs.context import JobContext
from assay.api.models import JobObject


class CreateEchoJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=200)
    block: bool = Field(False, description="Never return and never check for cancellation.")
    processes: int = Field(0, ge=0, le=4, description="Start a process pool of this size first.")


class EchoJob(JobObject):
    object: Literal["echo.job"] = "echo.job"
    message: str
    pids: list[int] | None = Field(None, description="Process ids of the pool the job started.")


def prepare_echo_job(body: CreateEchoJob, services: JobServices) -> JobRequest:
    return JobRequest(params=body.model_dump())


def render_echo_job(row: dict[str, Any]) -> dict[str, Any]:
    return {"message": row["params"]["message"], "pids": (row.get("result") or {}).get("pids")}


def _square(x: int) -> int:
    return x * x


def run_echo_job(ctx: JobContext) -> dict[str, Any]:
    params = ctx.params
    ctx.event(f"echo: {params['message']} (worker {os.getpid()})")
    if params["block"]:
        threading.Event().wait()
    pids: list[int] = []
    if params["processes"]:
        with multiprocessing.get_context("fork").Pool(params["processes"]) as pool:
            assert pool.map(_square, range(10)) == [x * x for x in range(10)]
            pids = sorted(child.pid for child in multiprocessing.active_children() if child.pid is not None)
    return {"pids": pids, "result_files": []}


def _echo_kind(name: str, pool: str) -> JobKind:
    return JobKind(name=name, run="example_job_kinds:run_echo_job", create_model=CreateEchoJob, job_model=EchoJob,
                   prepare=prepare_echo_job, render=render_echo_job, pool=pool)


ECHO = _echo_kind("echo", "default")
KINDS = [ECHO, _echo_kind("side_echo", "side"), _echo_kind("stall", "stall")]
