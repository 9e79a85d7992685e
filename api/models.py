"""Request and response models of the REST API (files follow the OpenAI API's FileObject shape)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from assay.schemas.validation import ValidationSummary

JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
FileStatus = Literal["uploaded", "processed", "error"]
UPLOAD_PURPOSES: tuple[str, ...] = ("fine-tune", "curation", "evals", "user_data")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error the API returns, in the OpenAI API's shape."""

    error: ErrorBody


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: FileStatus
    status_details: str | None = None
    expires_at: int | None = None
    format: str | None = Field(None, description="Record format detected on upload (chat, instruction, ...).")
    validation: ValidationSummary | None = Field(
        None, description="What validation found on upload; `path` holds the uploaded file's name.")
    job_id: str | None = Field(None, description="The job that produced this file, for job outputs.")


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class JobError(BaseModel):
    message: str
    code: str


class JobObject(BaseModel):
    """Fields every job kind's object has; a kind subclasses it with its `object` name and its own fields."""

    id: str
    object: str
    status: JobStatus
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    progress: dict[str, Any] | None = Field(None, description="The latest progress the job reported.")
    error: JobError | None = None
    result_files: list[str] = Field(default_factory=list, description="Files the job produced.")


class JobEventObject(BaseModel):
    """One job event; each kind's event model narrows `object` to `<kind object>.event`."""

    id: str
    object: str
    created_at: int
    level: Literal["info", "warning", "error"]
    type: str = Field(description="`message`, `progress`, or a type of the kind's own (e.g. `metrics`).")
    message: str
    data: dict[str, Any] | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    workers_alive: int
    workers_expected: int
    detail: str | None = None
