"""The `curation` job kind: run the curation pipeline on an uploaded file and publish its outputs as files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assay.api.jobs.context import JobContext, JobFailed
from assay.api.store import new_id


def _stem(filename: str) -> str:
    for suffix in (".jsonl.gz", ".json.gz", ".ndjson.gz", ".jsonl", ".ndjson", ".json"):
        if filename.lower().endswith(suffix):
            return filename[: -len(suffix)] or "dataset"
    return filename or "dataset"


def run_curation_job(ctx: JobContext) -> dict[str, Any]:
    from assay.curation.pipeline import PipelineError, run_pipeline
    from assay.curation.reader import InputFileError
    from assay.curation.report import write_reports
    from assay.curation.steps import StepConfigError
    from assay.schemas.curation import CurationSpec

    params = ctx.params
    spec = CurationSpec.model_validate(params["spec"])
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
