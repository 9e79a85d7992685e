"""What a job kind declares: the request it accepts, the object it shows, the function a worker runs, its pool."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel

from assay.api.models import JobEventObject, JobObject

if TYPE_CHECKING:
    from assay.api.settings import Settings
    from assay.api.store import Store

DEFAULT_POOL = "default"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")


@dataclass(frozen=True)
class JobServices:
    """What a kind's `prepare` may use while checking a request (in the server process)."""

    store: Store
    settings: Settings


@dataclass(frozen=True)
class JobRequest:
    """A checked request, ready to queue: the job's parameters as shown back to clients, the input file (if
    any) that must not be deleted while the job is active, and secret values kept apart from `params`."""

    params: dict[str, Any]
    input_file_id: str | None = None
    secrets: list[tuple[list[str | int], str]] = field(default_factory=list)
    """(location in params, real value) pairs; `params` holds a mask there. See assay.api.secrets."""


@dataclass(frozen=True)
class JobKind:
    """Everything the service needs to offer one kind of job; `job_router(kind)` builds its routes.

    `run` is a "module:function" string, imported only in the worker process that runs a job, so the server
    never imports the heavy libraries behind a kind. The function gets a `JobContext` and returns the job's
    result (`{"outputs": ..., "result_files": [...]}` or any JSON object `render` understands).
    """

    name: str
    run: str
    create_model: type[BaseModel]
    job_model: type[JobObject]
    prepare: Callable[[Any, JobServices], JobRequest]
    render: Callable[[dict[str, Any]], dict[str, Any]]
    pool: str = DEFAULT_POOL
    """Worker pool that runs this kind: a long kind in its own pool never delays the kinds of another."""
    prefix: str = ""
    """Route prefix; empty means `/v1/<name>/jobs`."""
    title: str = ""
    """Words for the kind in errors and the OpenAPI document; empty means `<name> job`."""
    event_model: type[JobEventObject] | None = None
    """The kind's event object (e.g. OpenAI's `fine_tuning.job.event`); None derives one from the job model."""
    render_event: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Turns an event row's fields into the kind's event object fields (e.g. level `warning` -> `warn`)."""
    extra_routes: Callable[[APIRouter], None] | None = None
    """Adds the kind's own routes (e.g. `/{job_id}/checkpoints`) to its router."""
    resumable: bool = False
    """A running job whose server died goes back to the queue (its function resumes it) instead of failing."""
    timeout_s: float | None = None
    """The kind's default wall-clock limit (ASSAY_JOB_TIMEOUTS overrides it); None: the server's general one."""
    routes: bool = True
    """False: the kind has no `/v1/<name>/jobs` routes (its own routes create the jobs, e.g. eval runs)."""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"job kind name must be lower_snake_case, got {self.name!r}")
        if ":" not in self.run:
            raise ValueError(f"job kind {self.name}: run must be 'module:function', got {self.run!r}")
        if not _NAME.fullmatch(self.pool):
            raise ValueError(f"job kind {self.name}: pool must be lower_snake_case, got {self.pool!r}")

    @property
    def path(self) -> str:
        return self.prefix or f"/v1/{self.name}/jobs"

    @property
    def noun(self) -> str:
        return self.title or f"{self.name.replace('_', ' ')} job"

    @property
    def object_name(self) -> str:
        """The `object` value of this kind's jobs (e.g. `curation.job`), from the job model's default."""
        default = self.job_model.model_fields["object"].default
        return str(default) if isinstance(default, str) else f"{self.name}.job"
