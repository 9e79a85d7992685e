"""The `curation` job kind: run the curation pipeline on an uploaded file and publish its outputs as files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assay.api.errors import APIError
from assay.api.jobs.context import JobContext, JobFailed
from assay.api.jobs.kind import JobKind, JobRequest, JobServices
from assay.api.models import UPLOAD_PURPOSES, JobObject
from assay.api.remote_specs import check_remote_spec
from assay.api.secret_params import split_secrets
from assay.api.store import new_id
from assay.schemas.curation import CurationSpec

DATASET_PURPOSES = frozenset(UPLOAD_PURPOSES)


class CreateCurationJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_id: str = Field(..., min_length=1, max_length=64, description="An uploaded dataset file.")
    spec: CurationSpec = Field(default_factory=lambda: CurationSpec.model_validate({}),
                               description="Steps and their parameters.")


class CurationOutputs(BaseModel):
    curated_file_id: str
    rejected_file_id: str
    report_id: str = Field(..., description="The report's file id; GET /v1/reports/{report_id} renders it.")
    records_in: int
    records_out: int


class CurationJob(JobObject):
    object: Literal["curation.job"] = "curation.job"
    file_id: str | None
    spec: dict[str, Any] = Field(description="The spec as submitted, defaults filled in, secrets masked.")
    outputs: CurationOutputs | None = None


def prepare_curation_job(body: CreateCurationJob, services: JobServices) -> JobRequest:
    """Check the input file and the spec; the spec's secrets (pii.hash_salt) are kept apart from its display."""
    source = services.store.get_file(body.file_id)
    if source is None:
        raise APIError(400, f"No such file: '{body.file_id}'.", param="file_id", code="file_not_found")
    if source["purpose"] not in DATASET_PURPOSES:
        raise APIError(400, f"File {body.file_id} is a '{source['purpose']}' file, not a dataset.",
                       param="file_id", code="not_a_dataset")
    check_remote_spec(body.spec, "spec")
    spec, secrets = split_secrets(body.spec, ["spec"])
    return JobRequest(params={"file_id": body.file_id, "spec": spec}, input_file_id=body.file_id, secrets=secrets)


def render_curation_job(row: dict[str, Any]) -> dict[str, Any]:
    result = row.get("result") or {}
    return {"file_id": row.get("input_file_id"), "spec": row["params"].get("spec", {}),
            "outputs": result.get("outputs")}


CURATION_JOBS = JobKind(
    name="curation", run="assay.api.jobs.curation:run_curation_job", create_model=CreateCurationJob,
    job_model=CurationJob, prepare=prepare_curation_job, render=render_curation_job, title="curation job")


def _stem(filename: str) -> str:
    for suffix in (".jsonl.gz", ".json.gz", ".ndjson.gz", ".jsonl", ".ndjson", ".json", ".parquet"):
        if filename.lower().endswith(suffix):
            return filename[: -len(suffix)] or "dataset"
    return filename or "dataset"


def run_curation_job(ctx: JobContext) -> dict[str, Any]:
    from assay.curation.pipeline import PipelineError, run_pipeline
    from assay.curation.reader import InputFileError
    from assay.curation.report import write_reports
    from assay.curation.steps import StepConfigError

    params = ctx.params
    # The service publishes the curated set as a JSONL fine-tune file, whatever the spec's output format.
    spec = CurationSpec.model_validate({**params["spec"], "output_format": "jsonl"})
    source = ctx.store.get_file(params["file_id"])
    if source is None:
        raise JobFailed(f"input file {params['file_id']} was deleted before the job ran", "file_not_found")
    input_path = ctx.settings.files_dir / source["storage_name"]
    shown = source["filename"]
    out_dir = ctx.work_dir / "out"

    def on_progress(step: str, records_in: int, kept: int, seconds: float) -> None:
        ctx.check_cancelled()
        ctx.progress({"step": step, "records_in": records_in, "kept": kept, "seconds": round(seconds, 3)},
                     f"{step}: {records_in} records in, {kept} kept")

    ctx.event(f"curating {shown} with steps: {', '.join(spec.steps)}")
    try:
        report = run_pipeline(spec, input_path, out_dir, progress=on_progress, fail_on_empty_default=True)
    except InputFileError as exc:  # no_valid_records for an input that curates to nothing
        raise JobFailed(str(exc).replace(str(input_path), shown), exc.code) from exc
    except StepConfigError as exc:  # e.g. a PII model that is not installed on this server
        raise JobFailed(str(exc), "invalid_spec") from exc
    except PipelineError as exc:
        raise JobFailed(str(exc), "pipeline_error") from exc

    # The report must not reveal server paths: name the input as the client named it.
    report.input_path = shown
    report.output_dir = f"job {ctx.job_id}"
    if report.validation is not None:
        report.validation.path = shown
    write_reports(report, out_dir)

    stem = _stem(shown)
    curated_id = ctx.publish_file(out_dir / "curated.jsonl", filename=f"{stem}.curated.jsonl", purpose="fine-tune",
                                  suffix=".jsonl", file_format="chat")
    rejected_id = ctx.publish_file(out_dir / "rejected.jsonl", filename=f"{stem}.rejected.jsonl",
                                   purpose="curation-rejects", suffix=".jsonl")
    report_id = new_id("file")
    html_path: Path = out_dir / "report.html"
    from assay.api.artifacts import publish

    publish(html_path, ctx.settings.reports_dir / f"{report_id}.html")
    ctx.publish_file(out_dir / "report.json", filename=f"{stem}.report.json", purpose="curation-report",
                     suffix=".json", file_id=report_id)
    ctx.progress({"step": "done", "records_in": report.records_in, "kept": report.records_out,
                  "seconds": round(report.seconds, 3)},
                 f"done: {report.records_in} records in, {report.records_out} kept", force=True)
    return {
        "outputs": {"curated_file_id": curated_id, "rejected_file_id": rejected_id, "report_id": report_id,
                    "records_in": report.records_in, "records_out": report.records_out},
        "result_files": [curated_id, rejected_id, report_id],
    }
