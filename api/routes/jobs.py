"""The job router factory: `job_router(kind)` gives a job kind its create, list, retrieve, cancel and events
routes, with response models named after the kind (`CurationJob`, `CurationJobList`, `CurationJobEvent`, ...).

No `from __future__ import annotations` here: the create route's body type is the kind's own model, set on
the function at run time, and FastAPI must see it as a class, not as a string.
"""

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, create_model

from assay.api.auth import authorize
from assay.api.deps import get_runner, get_settings, get_store
from assay.api.errors import APIError, not_found
from assay.api.jobs.kind import JobKind, JobRequest, JobServices
from assay.api.models import ErrorResponse, JobEventObject, JobObject
from assay.api.routes.files import COMMON_ERRORS, NOT_FOUND
from assay.api.runner import Runner
from assay.api.settings import Settings
from assay.api.store import FINAL_STATUSES, CursorNotFound, Store


@dataclass(frozen=True)
class JobModels:
    """The response models of one kind, built from its job model."""

    job: type[JobObject]
    job_list: type[BaseModel]
    event: type[JobEventObject]
    event_list: type[BaseModel]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def job_models(kind: JobKind) -> JobModels:
    stem = _camel(kind.name)
    event_object = f"{kind.object_name}.event"
    base_event = kind.event_model or JobEventObject
    list_literal: Any = Literal["list"]
    event_literal: Any = Literal[event_object]  # type: ignore[valid-type]  # one value per kind, known at run time
    job_list = create_model(
        f"{stem}JobList", object=(list_literal, "list"), data=(list[kind.job_model], ...),  # type: ignore[name-defined]
        first_id=(str | None, None), last_id=(str | None, None), has_more=(bool, ...))
    event = (kind.event_model if kind.event_model is not None else
             create_model(f"{stem}JobEvent", __base__=base_event, object=(event_literal, event_object)))
    event_list = create_model(f"{stem}JobEventList", object=(list_literal, "list"),
                              data=(list[event], ...), has_more=(bool, ...))  # type: ignore[valid-type]
    return JobModels(kind.job_model, job_list, event, event_list)


def render_job(kind: JobKind, row: dict[str, Any]) -> JobObject:
    """A job row as the kind's job object: the fields every job has, then the kind's own."""
    result = row.get("result") or {}
    common = {
        "id": row["id"], "status": row["status"], "created_at": int(row["created_at"]),
        "started_at": None if row.get("started_at") is None else int(row["started_at"]),
        "finished_at": None if row.get("finished_at") is None else int(row["finished_at"]),
        "progress": row.get("progress"), "error": row.get("error"),
        "result_files": result.get("result_files", []) if isinstance(result, dict) else [],
    }
    return kind.job_model.model_validate({**common, **kind.render(row)})


def job_router(kind: JobKind) -> APIRouter:
    """The routes of one job kind under `kind.path`; every one needs the API key (when keys are on)."""
    models = job_models(kind)
    event_object = f"{kind.object_name}.event"
    noun = kind.noun
    snake = kind.name
    router = APIRouter(prefix=kind.path, tags=[f"{kind.name.replace('_', ' ')} jobs"],
                       dependencies=[Depends(authorize)], responses=COMMON_ERRORS)

    def job_row(store: Store, job_id: str) -> dict[str, Any]:
        row = store.get_job(job_id, kind=kind.name)
        if row is None:
            raise not_found(noun, job_id, param="job_id")
        return row

    def create(body: Any, store: Store = Depends(get_store), settings: Settings = Depends(get_settings),
               runner: Runner = Depends(get_runner),
               idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=256),
               retry_count: int = Header(0, alias="X-Stainless-Retry-Count", ge=0)) -> Any:
        request = kind.prepare(body, JobServices(store, settings))
        row = create_job(store, kind, request, body, idempotency_key=idempotency_key, retry_count=retry_count)
        runner.wake(kind.name)
        return render_job(kind, row)

    create.__annotations__["body"] = kind.create_model
    router.add_api_route("", create, methods=["POST"], response_model=models.job, name=f"create_{snake}_job",
                         summary=f"Create a {noun}",
                         description=f"Queue a {noun}; a worker process of the `{kind.pool}` pool runs it. "
                                     "Poll the job or its events for progress.")

    def list_jobs(request: Request, limit: int = Query(20, ge=1, le=100),
                  after: str | None = Query(None, max_length=200), store: Store = Depends(get_store)) -> Any:
        wanted = metadata_filter(request)
        rows, has_more = list_matching_jobs(store, kind.name, limit, after, wanted)
        data = [render_job(kind, r) for r in rows]
        return models.job_list(data=data, has_more=has_more, first_id=data[0].id if data else None,
                               last_id=data[-1].id if data else None)

    router.add_api_route("", list_jobs, methods=["GET"], response_model=models.job_list, name=f"list_{snake}_jobs",
                         summary=f"List {noun}s",
                         description="Jobs, newest first; page with `after` (the last id of the previous page). "
                                     "`metadata[KEY]=VALUE` keeps the jobs whose metadata has that value.")

    def retrieve(job_id: str, store: Store = Depends(get_store)) -> Any:
        return render_job(kind, job_row(store, job_id))

    router.add_api_route("/{job_id}", retrieve, methods=["GET"], response_model=models.job, responses=NOT_FOUND,
                         name=f"retrieve_{snake}_job", summary=f"Retrieve a {noun}")

    def cancel(job_id: str, store: Store = Depends(get_store)) -> Any:
        row = job_row(store, job_id)
        if row["status"] in FINAL_STATUSES:
            raise APIError(409, f"Job {job_id} has already finished with status '{row['status']}'.",
                           param="job_id", code="job_finished")
        updated = store.request_cancel(job_id)
        assert updated is not None
        if updated["status"] in ("cancelled", "cancelling") and row["status"] != updated["status"]:
            store.add_event(job_id, "cancellation requested")
        return render_job(kind, updated)

    router.add_api_route(
        "/{job_id}/cancel", cancel, methods=["POST"], response_model=models.job, name=f"cancel_{snake}_job",
        responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "The job has already finished"}},
        summary=f"Cancel a {noun}",
        description="Cancel a queued job at once, or ask a running one to stop (status `cancelling`, then "
                    "`cancelled`; its worker is stopped if it does not stop in time).")

    def events(job_id: str, limit: int = Query(100, ge=1, le=1000), after: str | None = Query(None, max_length=200),
               store: Store = Depends(get_store)) -> Any:
        job_row(store, job_id)
        try:
            rows, has_more = store.list_events(job_id, limit=limit, after=after)
        except CursorNotFound as exc:
            raise APIError(400, "'after' does not name an existing event.", param="after",
                           code="invalid_cursor") from exc
        shown = [{"id": r["id"], "object": event_object, "created_at": int(r["created_at"]), "level": r["level"],
                  "type": r["type"], "message": r["message"], "data": r.get("data")} for r in rows]
        if kind.render_event is not None:
            shown = [kind.render_event(event) for event in shown]
        data = [models.event.model_validate(event) for event in shown]
        return models.event_list(data=data, has_more=has_more)

    router.add_api_route("/{job_id}/events", events, methods=["GET"], response_model=models.event_list,
                         responses=NOT_FOUND, name=f"list_{snake}_job_events", summary=f"List a {noun}'s events",
                         description="Events oldest first; pass the last seen event id as `after` to follow a job.")
    if kind.extra_routes is not None:
        kind.extra_routes(router)
    return router


RETRY_WINDOW_S = 600.0
"""A client's automatic retry (X-Stainless-Retry-Count > 0) without an Idempotency-Key gets the job an
identical request made this recently, so a retried POST whose first answer was lost makes no second job."""


def create_job(store: Store, kind: JobKind, request: JobRequest, body: BaseModel, *, idempotency_key: str | None,
               retry_count: int = 0) -> dict[str, Any]:
    """Queue a checked request once per Idempotency-Key (409 when the key came with another request)."""
    digest = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    since = time.time() - RETRY_WINDOW_S if retry_count > 0 and idempotency_key is None else None
    try:
        row, created = store.insert_job_once(key=idempotency_key, digest=digest, since=since, kind=kind.name,
                                             params=request.params, input_file_id=request.input_file_id,
                                             secrets=request.secrets)
    except ValueError as exc:
        raise APIError(409, "This Idempotency-Key was already used with a different request.",
                       param="Idempotency-Key", code="idempotency_key_reused") from exc
    if created:
        store.add_event(row["id"], "job queued")
    return row


def metadata_filter(request: Request) -> dict[str, str]:
    """`metadata[KEY]=VALUE` query parameters (how the openai SDK sends a `metadata` filter)."""
    wanted: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name.startswith("metadata[") and name.endswith("]") and len(name) > len("metadata[]"):
            wanted[name[len("metadata["):-1]] = value
    return wanted


def list_matching_jobs(store: Store, kind: str, limit: int, after: str | None,
                       wanted: dict[str, str]) -> tuple[list[dict[str, Any]], bool]:
    """A page of jobs (newest first) whose `params.metadata` holds every wanted pair."""
    def matches(row: dict[str, Any]) -> bool:
        metadata = (row.get("params") or {}).get("metadata") or {}
        return all(metadata.get(key) == value for key, value in wanted.items())

    found: list[dict[str, Any]] = []
    cursor = after
    while True:
        try:
            rows, more = store.list_jobs(kind=kind, limit=max(limit, 100) if wanted else limit, after=cursor)
        except CursorNotFound as exc:
            raise APIError(400, "'after' does not name an existing job.", param="after",
                           code="invalid_cursor") from exc
        for row in rows:
            if matches(row):
                if len(found) == limit:
                    return found, True
                found.append(row)
        if not more:
            return found, False
        cursor = rows[-1]["id"]
