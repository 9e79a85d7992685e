"""/v1/files: upload, list, inspect, download and delete dataset files, in the OpenAI Files API's shape."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from assay.api.artifacts import publish
from assay.api.auth import authorize
from assay.api.deps import get_settings, get_store
from assay.api.errors import APIError, not_found
from assay.api.models import UPLOAD_PURPOSES, ErrorResponse, FileDeleted, FileList, FileObject
from assay.api.settings import Settings
from assay.api.store import CursorNotFound, Store, new_id
from assay.api.upload_check import UploadChecker
from assay.api.uploads import GZIP_MAGIC, receive_upload

COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request"},
    401: {"model": ErrorResponse, "description": "Missing or invalid API key"},
    403: {"model": ErrorResponse, "description": "Without API keys: a foreign Host header or a cross-site request"},
    429: {"model": ErrorResponse, "description": "Rate limit reached"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No such object"}}

router = APIRouter(prefix="/v1", tags=["files"], dependencies=[Depends(authorize)], responses=COMMON_ERRORS)

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "A .jsonl, .json, .jsonl.gz or .json.gz dataset."},
        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
    }}}}}}


def to_file_object(row: dict[str, Any]) -> FileObject:
    return FileObject(id=row["id"], bytes=row["bytes"], created_at=int(row["created_at"]), filename=row["filename"],
                      purpose=row["purpose"], status=row["status"], status_details=row.get("status_details"),
                      format=row.get("format"), validation=row.get("validation"), job_id=row.get("job_id"))


def stored_path(settings: Settings, row: dict[str, Any]) -> Path:
    path = (settings.files_dir / row["storage_name"]).resolve()
    if path.parent != settings.files_dir:  # storage names are ours, but never trust a path blindly
        raise APIError(500, "stored file path is invalid", type_="server_error", code="internal_error")
    return path


def _first_bytes(path: Path, n: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(n)


@router.post("/files", response_model=FileObject, openapi_extra=UPLOAD_BODY,
             responses={413: {"model": ErrorResponse, "description": "File too large, or expands to more than "
                                                                  "the server allows when decompressed"},
                        415: {"model": ErrorResponse, "description": "Unsupported media type"}})
async def create_file(request: Request, store: Store = Depends(get_store),
                      settings: Settings = Depends(get_settings)) -> FileObject:
    """Upload a dataset (streamed to disk); it is validated before the response, which reports what was found."""
    upload = await receive_upload(request, settings.tmp_dir, settings.max_upload_bytes)
    file_id = new_id("file")
    checked_path = settings.tmp_dir / f"{file_id}{upload.suffix}"
    try:
        purpose = upload.fields.get("purpose", "").strip()
        if not purpose:
            raise APIError(400, "Missing the 'purpose' field.", param="purpose", code="missing_purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise APIError(400, f"Invalid purpose '{purpose[:40]}'; expected one of {', '.join(UPLOAD_PURPOSES)}.",
                           param="purpose", code="invalid_purpose")
        if upload.size == 0:
            raise APIError(400, "The file is empty.", param="file", code="empty_file")
        if upload.suffix.endswith(".gz") and await run_in_threadpool(_first_bytes, upload.temp_path, 2) != GZIP_MAGIC:
            raise APIError(400, f"'{upload.filename}' is named .gz but is not gzip data.", param="file",
                           code="invalid_file")
        # The validator picks JSON array vs JSON Lines by suffix, so the file keeps its canonical one.
        upload.temp_path.replace(checked_path)
        checker: UploadChecker = request.app.state.upload_checker
        checked = await checker.check(str(checked_path), upload.filename)
        if "error" in checked:
            raise APIError(checked["status"], checked["error"], param="file", code=checked["code"])
        summary = checked["summary"]
        storage_name = checked_path.name
        await run_in_threadpool(publish, checked_path, settings.files_dir / storage_name)
        row = await run_in_threadpool(store.insert_file, {
            "id": file_id, "filename": upload.filename, "purpose": purpose, "bytes": upload.size,
            "created_at": time.time(), "status": "processed", "status_details": None,
            "format": summary.get("format"), "validation": summary, "storage_name": storage_name, "job_id": None,
        })
    finally:
        upload.discard()
        checked_path.unlink(missing_ok=True)
    return to_file_object(row)


@router.get("/files", response_model=FileList)
def list_files(purpose: str | None = Query(None, max_length=64), limit: int = Query(10000, ge=1, le=10000),
               order: Literal["asc", "desc"] = "desc", after: str | None = Query(None, max_length=200),
               store: Store = Depends(get_store)) -> FileList:
    """Files, newest first by default; page with `after` (the last id of the previous page)."""
    try:
        rows, has_more = store.list_files(purpose=purpose, limit=limit, after=after, descending=order == "desc")
    except CursorNotFound as exc:
        raise APIError(400, "'after' does not name an existing file.", param="after", code="invalid_cursor") from exc
    data = [to_file_object(r) for r in rows]
    return FileList(data=data, has_more=has_more, first_id=data[0].id if data else None,
                    last_id=data[-1].id if data else None)


def _get_row(store: Store, file_id: str) -> dict[str, Any]:
    row = store.get_file(file_id)
    if row is None:
        raise not_found("file", file_id, param="file_id")
    return row


@router.get("/files/{file_id}", response_model=FileObject, responses=NOT_FOUND)
def retrieve_file(file_id: str, store: Store = Depends(get_store)) -> FileObject:
    return to_file_object(_get_row(store, file_id))


@router.get("/files/{file_id}/content", response_class=FileResponse, responses={
    **NOT_FOUND, 200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                       "description": "The file's bytes"}})
def retrieve_file_content(file_id: str, store: Store = Depends(get_store),
                          settings: Settings = Depends(get_settings)) -> FileResponse:
    row = _get_row(store, file_id)
    path = stored_path(settings, row)
    if not path.is_file():
        raise not_found("file", file_id, param="file_id")
    return FileResponse(path, media_type="application/octet-stream", filename=row["filename"])


@router.delete("/files/{file_id}", response_model=FileDeleted, responses={
    **NOT_FOUND, 409: {"model": ErrorResponse, "description": "The file is the input of an active job"}})
def delete_file(file_id: str, store: Store = Depends(get_store),
                settings: Settings = Depends(get_settings)) -> FileDeleted:
    _get_row(store, file_id)
    active = store.active_jobs_using(file_id)
    if active:
        raise APIError(409, f"File is the input of active job {active[0]}; cancel it first.", param="file_id",
                       code="file_in_use")
    row = store.delete_file(file_id)
    if row is None:
        raise not_found("file", file_id, param="file_id")
    stored_path(settings, row).unlink(missing_ok=True)
    (settings.reports_dir / f"{row['id']}.html").unlink(missing_ok=True)
    return FileDeleted(id=file_id, deleted=True)
