"""/v1/curation/jobs: submit, inspect, list and cancel curation jobs, and read their events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from assay.api.auth import authorize
from assay.api.deps import get_runner, get_store
from assay.api.errors import APIError, not_found
from assay.api.models import (
    UPLOAD_PURPOSES,
    CreateCurationJob,
    CurationJob,
    CurationJobList,
    ErrorResponse,
    JobEvent,
    JobEventList,
)
from assay.api.routes.files import COMMON_ERRORS, NOT_FOUND
from assay.api.runner import Runner
from assay.api.store import FINAL_STATUSES, CursorNotFound, Store

KIND = "curation"
DATASET_PURPOSES = frozenset(UPLOAD_PURPOSES)

router = APIRouter(prefix="/v1/curation", tags=["curation"], dependencies=[Depends(authorize)],
                   responses=COMMON_ERRORS)


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


def to_job(row: dict[str, Any]) -> CurationJob:
    result = row.get("result") or {}
    return CurationJob(
        id=row["id"], status=row["status"], file_id=row.get("input_file_id"), spec=row["params"].get("spec", {}),
        created_at=int(row["created_at"]), started_at=_ts(row.get("started_at")),
        finished_at=_ts(row.get("finished_at")), progress=row.get("progress"), error=row.get("error"),
        outputs=result.get("outputs"), result_files=result.get("result_files", []))


def _job_row(store: Store, job_id: str) -> dict[str, Any]:
    row = store.get_job(job_id, kind=KIND)
    if row is None:
        raise not_found("curation job", job_id, param="job_id")
    return row


@router.post("/jobs", response_model=CurationJob)
def create_curation_job(body: CreateCurationJob, store: Store = Depends(get_store),
                        runner: Runner = Depends(get_runner)) -> CurationJob:
    """Queue a curation job; a worker process runs it. Poll the job or its events for progress."""
    source = store.get_file(body.file_id)
    if source is None:
        raise APIError(400, f"No such file: '{body.file_id}'.", param="file_id", code="file_not_found")
    if source["purpose"] not in DATASET_PURPOSES:
        raise APIError(400, f"File {body.file_id} is a '{source['purpose']}' file, not a dataset.",
                       param="file_id", code="not_a_dataset")
    params = {"file_id": body.file_id, "spec": body.spec.model_dump(mode="json", by_alias=True)}
    row = store.insert_job(kind=KIND, params=params, input_file_id=body.file_id)
    store.add_event(row["id"], "job queued")
    runner.wake()
    return to_job(row)


@router.get("/jobs", response_model=CurationJobList)
def list_curation_jobs(limit: int = Query(20, ge=1, le=100), after: str | None = Query(None, max_length=200),
                       store: Store = Depends(get_store)) -> CurationJobList:
    """Jobs, newest first; page with `after` (the last id of the previous page)."""
    try:
        rows, has_more = store.list_jobs(kind=KIND, limit=limit, after=after)
    except CursorNotFound as exc:
        raise APIError(400, "'after' does not name an existing job.", param="after", code="invalid_cursor") from exc
    data = [to_job(r) for r in rows]
    return CurationJobList(data=data, has_more=has_more, first_id=data[0].id if data else None,
                           last_id=data[-1].id if data else None)


@router.get("/jobs/{job_id}", response_model=CurationJob, responses=NOT_FOUND)
def retrieve_curation_job(job_id: str, store: Store = Depends(get_store)) -> CurationJob:
    return to_job(_job_row(store, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=CurationJob, responses={
    **NOT_FOUND, 409: {"model": ErrorResponse, "description": "The job has already finished"}})
def cancel_curation_job(job_id: str, store: Store = Depends(get_store)) -> CurationJob:
    """Cancel a queued job at once, or ask a running one to stop (status `cancelling`, then `cancelled`)."""
    row = _job_row(store, job_id)
    if row["status"] in FINAL_STATUSES:
        raise APIError(409, f"Job {job_id} has already finished with status '{row['status']}'.",
                       param="job_id", code="job_finished")
    updated = store.request_cancel(job_id)
    assert updated is not None
    if updated["status"] in ("cancelled", "cancelling") and row["status"] != updated["status"]:
        store.add_event(job_id, "cancellation requested")
    return to_job(updated)


@router.get("/jobs/{job_id}/events", response_model=JobEventList, responses=NOT_FOUND)
def list_curation_job_events(job_id: str, limit: int = Query(100, ge=1, le=1000),
                             after: str | None = Query(None, max_length=200),
                             store: Store = Depends(get_store)) -> JobEventList:
    """Events oldest first; pass the last seen event id as `after` to follow a running job."""
    _job_row(store, job_id)
    try:
        rows, has_more = store.list_events(job_id, limit=limit, after=after)
    except CursorNotFound as exc:
        raise APIError(400, "'after' does not name an existing event.", param="after", code="invalid_cursor") from exc
    data = [JobEvent(id=r["id"], created_at=int(r["created_at"]), level=r["level"], type=r["type"],
                     message=r["message"], data=r.get("data")) for r in rows]
    return JobEventList(data=data, has_more=has_more)
