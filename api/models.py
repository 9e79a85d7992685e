"""Request and response models of the REST API (files follow the OpenAI API's FileObject shape)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from assay.schemas.curation import CurationSpec
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


SERVER_PATH_SETTINGS = ("dedup.against", "dedup.decontaminate", "dedup.save_index", "report.tokenizer")
"""Spec settings that name files on the machine running the pipeline: fine on the CLI, never over HTTP
(a client could read or overwrite any folder the server can)."""


class CreateCurationJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_id: str = Field(..., min_length=1, max_length=64, description="An uploaded dataset file.")
    spec: CurationSpec = Field(default_factory=lambda: CurationSpec.model_validate({}), description="Steps and their parameters.")

    @field_validator("spec")
    @classmethod
    def _no_server_paths(cls, spec: CurationSpec) -> CurationSpec:
        for dotted in SERVER_PATH_SETTINGS:
            section, key = dotted.split(".")
            if getattr(getattr(spec, section), key):
                raise ValueError(f"spec.{dotted} names a path on the server and is not accepted over the API")
        return spec


class JobError(BaseModel):
    message: str
    code: str


class CurationOutputs(BaseModel):
    curated_file_id: str
    rejected_file_id: str
    report_id: str = Field(..., description="The report's file id; GET /v1/reports/{report_id} renders it.")
    records_in: int
    records_out: int


class CurationJob(BaseModel):
    id: str
    object: Literal["curation.job"] = "curation.job"
    status: JobStatus
    file_id: str | None
    spec: dict[str, Any]
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    progress: dict[str, Any] | None = Field(None, description="Latest progress: step, records_in, kept, seconds.")
    error: JobError | None = None
    outputs: CurationOutputs | None = None
    result_files: list[str] = Field(default_factory=list)


class CurationJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CurationJob]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class JobEvent(BaseModel):
    id: str
    object: Literal["curation.job.event"] = "curation.job.event"
    created_at: int
    level: Literal["info", "warning", "error"]
    type: Literal["message", "progress"]
    message: str
    data: dict[str, Any] | None = None


class JobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEvent]
    has_more: bool


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    workers_alive: int
    workers_expected: int
    detail: str | None = None
