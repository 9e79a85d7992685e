"""The `fine_tuning` job kind in OpenAI's shape: /v1/fine_tuning/jobs (create, list, retrieve, cancel, events,
checkpoints), run by `assay.training.trainer.finetune` in the `training` worker pool.

Hyperparameters come as OpenAI's `hyperparameters` or `method.supervised.hyperparameters` ("auto" or numbers);
every other training setting (LoRA rank, max_steps, max_seq_len, ...) as `settings` in the body (the SDK's
`extra_body={"settings": {...}}`), checked against `FineTuneSpec`. The run folder lives under the data
folder's `fine_tuning/`, not the job's work folder, so a server killed mid-training resumes the job from its
last checkpoint (the kind is `resumable`). The fine-tuned model is registered only once its adapter folder
is complete, so a partial adapter never appears in /v1/models.
"""

from __future__ import annotations

import csv
import json
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from assay.api.deps import get_store
from assay.api.errors import APIError, not_found
from assay.api.jobs.context import JobCancelled, JobContext, JobFailed
from assay.api.jobs.kind import JobKind, JobRequest, JobServices
from assay.api.models import JobEventObject, JobObject
from assay.api.routes.files import NOT_FOUND
from assay.api.store import Store

DEFAULT_LEARNING_RATE = 2e-4
DEFAULT_BATCH_SIZE = 8
KEEP_CHECKPOINTS = 3  # as OpenAI: the last three checkpoints stay usable as models
TRAINING_TIMEOUT_S = 7 * 24 * 3600.0
MAX_METADATA = 16


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: Literal["auto"] | int | None = Field(None, description="Passes over the training file.")
    batch_size: Literal["auto"] | int | None = Field(None, description="Examples per optimizer step.")
    learning_rate_multiplier: Literal["auto"] | float | None = Field(
        None, description=f"Multiplies the default learning rate ({DEFAULT_LEARNING_RATE:g}).")

    @field_validator("n_epochs")
    @classmethod
    def _epochs(cls, value: Any) -> Any:
        if isinstance(value, int) and not 1 <= value <= 50:
            raise ValueError("n_epochs must be between 1 and 50")
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        if isinstance(value, int) and not 1 <= value <= 256:
            raise ValueError("batch_size must be between 1 and 256")
        return value

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _multiplier(cls, value: Any) -> Any:
        if isinstance(value, float) and not 0 < value <= 100:
            raise ValueError("learning_rate_multiplier must be above 0 and at most 100")
        return value


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None


class CreateFineTuningJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, max_length=255, description="A base model GET /v1/models lists.")
    training_file: str = Field(..., min_length=1, max_length=64,
                               description="An uploaded file with purpose `fine-tune` that validated cleanly.")
    validation_file: str | None = Field(None, max_length=64)
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]*$",
                               description="Part of the fine-tuned model's name.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    integrations: list[dict[str, Any]] | None = None
    settings: dict[str, Any] | None = Field(
        None, description="Assay's own training settings (FineTuneSpec fields: lora, max_steps, max_seq_len, "
                          "packing, learning_rate, ...); `extra_body={'settings': {...}}` in the openai SDK.")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > MAX_METADATA:
            raise ValueError(f"metadata holds at most {MAX_METADATA} pairs")
        for key, item in value.items():
            if len(key) > 64 or len(item) > 512:
                raise ValueError("metadata keys are at most 64 characters and values at most 512")
        return value


class ShownHyperparameters(BaseModel):
    n_epochs: int | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None


class FineTuningJob(JobObject):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]  # type: ignore[assignment]
    model: str
    training_file: str
    validation_file: str | None = None
    fine_tuned_model: str | None = None
    hyperparameters: ShownHyperparameters
    method: dict[str, Any] | None = None
    seed: int
    suffix: str | None = None
    metadata: dict[str, str] | None = None
    organization_id: str = "assay"
    trained_tokens: int | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    settings: dict[str, Any] = Field(default_factory=dict, description="The full training settings used.")


class FineTuningJobEvent(JobEventObject):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    level: Literal["info", "warn", "error"]  # type: ignore[assignment]


class FineTuningCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float | None]


class FineTuningCheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningCheckpoint]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


# -- the server side -------------------------------------------------------------------------------------
def _bad(message: str, param: str, code: str = "invalid_request") -> APIError:
    return APIError(400, message, param=param, code=code)


def _check_file(services: JobServices, file_id: str, param: str) -> dict[str, Any]:
    row = services.store.get_file(file_id)
    if row is None:
        raise _bad(f"No such file: '{file_id}'.", param, "file_not_found")
    if row["purpose"] != "fine-tune":
        raise _bad(f"File {file_id} has purpose '{row['purpose']}'; fine-tuning needs a file uploaded with purpose "
                   "'fine-tune'.", param, "invalid_file_purpose")
    if row["status"] != "processed":
        raise _bad(f"File {file_id} is not ready (status '{row['status']}'"
                   + (f": {row['status_details']}" if row.get("status_details") else "") + ").", param,
                   "invalid_file_status")
    summary = row.get("validation") or {}
    if summary.get("rejected"):
        first = (summary.get("first_errors") or [{}])[0]
        where = f"line {first.get('line')}" if first.get("line") else "a record"
        field = f", field {first['field']}" if first.get("field") else ""
        raise _bad(f"File {file_id} ({row['filename']}) has {summary['rejected']} invalid record(s); the first is "
                   f"at {where}{field}: {first.get('message', first.get('code', 'invalid'))}. Curate it first "
                   "(POST /v1/curation/jobs) and train on the curated file.", param, "invalid_training_file")
    if summary.get("prompt_only"):
        raise _bad(f"File {file_id} has prompts but no responses to learn; fine-tuning needs chat records with an "
                   "assistant turn.", param, "invalid_training_file")
    if not summary.get("valid"):
        raise _bad(f"File {file_id} holds no valid records.", param, "invalid_training_file")
    return row


def _hyperparameters(body: CreateFineTuningJob) -> tuple[Hyperparameters, dict[str, Any]]:
    """The effective OpenAI hyperparameters and the method as shown back."""
    if body.method is not None:
        if body.method.type != "supervised":
            raise _bad(f"method '{body.method.type}' is not supported; Assay fine-tunes with supervised LoRA.",
                       "method.type", "unsupported_method")
        if body.hyperparameters is not None:
            raise _bad("give hyperparameters either at the top level or in method.supervised, not both",
                       "hyperparameters")
        chosen = (body.method.supervised.hyperparameters if body.method.supervised else None) or Hyperparameters()
    else:
        chosen = body.hyperparameters or Hyperparameters()
    return chosen, {"type": "supervised"}


def _training_spec(body: CreateFineTuningJob, seed: int) -> tuple[dict[str, Any], ShownHyperparameters]:
    """FineTuneSpec settings from OpenAI's hyperparameters and Assay's `settings` (400 naming the field)."""
    from assay.schemas.training import FineTuneSpec

    chosen, _ = _hyperparameters(body)
    settings = dict(body.settings or {})
    for forbidden in ("model", "device"):
        if forbidden in settings:
            raise _bad(f"settings.{forbidden} cannot be set here; the model is the job's `model` and the server "
                       "chooses the device", f"settings.{forbidden}")
    if isinstance(chosen.n_epochs, int):
        settings["epochs"] = chosen.n_epochs
    if isinstance(chosen.batch_size, int):
        if "grad_accum" in settings:
            raise _bad("give the batch size either as hyperparameters.batch_size or as settings.batch_size and "
                       "settings.grad_accum, not both", "hyperparameters.batch_size")
        settings["batch_size"] = chosen.batch_size
    multiplier = chosen.learning_rate_multiplier
    if isinstance(multiplier, (int, float)):
        if "learning_rate" in settings:
            raise _bad("give either hyperparameters.learning_rate_multiplier or settings.learning_rate, not both",
                       "hyperparameters.learning_rate_multiplier")
        settings["learning_rate"] = DEFAULT_LEARNING_RATE * float(multiplier)
    elif "learning_rate" not in settings and isinstance(chosen.batch_size, int):
        # "auto" keeps the learning rate / batch size ratio of the defaults: the ratio, not either value alone,
        # is what small models are sensitive to (docs/api.md).
        settings["learning_rate"] = DEFAULT_LEARNING_RATE * chosen.batch_size / DEFAULT_BATCH_SIZE
    settings["seed"] = seed
    try:
        spec = FineTuneSpec.model_validate({**settings, "model": body.model})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise _bad(f"settings.{where}: {first['msg']}", f"settings.{where}", "invalid_settings") from exc
    dumped = spec.model_dump(mode="json")
    shown = ShownHyperparameters(n_epochs=spec.epochs if spec.max_steps is None else "auto",
                                 batch_size=spec.effective_batch_size(),
                                 learning_rate_multiplier=round(spec.learning_rate / DEFAULT_LEARNING_RATE, 6))
    return dumped, shown


def prepare_fine_tuning_job(body: CreateFineTuningJob, services: JobServices) -> JobRequest:
    from assay.api.serving import base_model_names

    if body.integrations:
        raise _bad("integrations (e.g. wandb) are not supported; follow the job's events or its report instead",
                   "integrations", "unsupported_integration")
    bases = base_model_names(services.settings)
    if body.model not in bases:
        raise _bad(f"'{body.model}' is not a base model this server trains; base models: {', '.join(bases) or 'none'}",
                   "model", "model_not_available")
    _check_file(services, body.training_file, "training_file")
    if body.validation_file is not None:
        _check_file(services, body.validation_file, "validation_file")
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31 - 1)
    spec, shown = _training_spec(body, seed)
    _, method = _hyperparameters(body)
    params = {
        "model": body.model, "training_file": body.training_file, "validation_file": body.validation_file,
        "suffix": body.suffix, "seed": seed, "metadata": body.metadata, "spec": spec,
        "hyperparameters": shown.model_dump(), "method": {**method, "supervised": {"hyperparameters":
                                                                                   shown.model_dump()}},
    }
    return JobRequest(params=params, input_file_id=body.training_file)


def fine_tuned_name(params: dict[str, Any], job_id: str) -> str:
    return f"ft:{params['model']}:{params.get('suffix') or ''}:{job_id}"


def render_fine_tuning_job(row: dict[str, Any]) -> dict[str, Any]:
    params = row["params"]
    result = row.get("result") or {}
    progress = row.get("progress") or {}
    status = {"cancelling": "running"}.get(row["status"], row["status"])
    estimated = progress.get("estimated_finish") if status == "running" else None
    return {
        "status": status, "model": params["model"], "training_file": params["training_file"],
        "validation_file": params.get("validation_file"), "fine_tuned_model": result.get("fine_tuned_model"),
        "hyperparameters": params.get("hyperparameters") or {}, "method": params.get("method"),
        "seed": params["seed"], "suffix": params.get("suffix"), "metadata": params.get("metadata"),
        "trained_tokens": result.get("trained_tokens", progress.get("trained_tokens")),
        "estimated_finish": estimated, "settings": params.get("spec") or {},
    }


def render_fine_tuning_event(event: dict[str, Any]) -> dict[str, Any]:
    shown = dict(event, level={"warning": "warn"}.get(event["level"], event["level"]))
    if shown["type"] not in ("message", "metrics"):
        shown["type"] = "message"
    return shown


def _checkpoint_routes(router: APIRouter) -> None:
    def list_checkpoints(job_id: str, limit: int = Query(10, ge=1, le=100),
                         after: str | None = Query(None, max_length=300),
                         store: Store = Depends(get_store)) -> Any:
        if store.get_job(job_id, kind="fine_tuning") is None:
            raise not_found("fine-tuning job", job_id, param="fine_tuning_job_id")
        rows = sorted(store.list_models(kind="checkpoint", job_id=job_id), key=lambda r: -int(r["step"] or 0))
        shown = [FineTuningCheckpoint(
            id=str((r.get("lineage") or {}).get("checkpoint_id", r["id"])), created_at=int(r["created_at"]),
            fine_tuned_model_checkpoint=r["id"], fine_tuning_job_id=job_id, step_number=int(r["step"] or 0),
            metrics=r.get("metrics") or {}) for r in rows]
        if after is not None:
            ids = [c.id for c in shown]
            if after not in ids:
                raise APIError(400, "'after' does not name a checkpoint of this job.", param="after",
                               code="invalid_cursor")
            shown = shown[ids.index(after) + 1:]
        page = shown[:limit]
        return FineTuningCheckpointList(data=page, has_more=len(shown) > limit,
                                        first_id=page[0].id if page else None, last_id=page[-1].id if page else None)

    router.add_api_route("/{job_id}/checkpoints", list_checkpoints, methods=["GET"],
                         response_model=FineTuningCheckpointList, name="list_fine_tuning_checkpoints",
                         responses=NOT_FOUND,
                         summary="List a fine-tuning job's checkpoints",
                         description="The last three checkpoints, newest first; each is a model "
                                     "(`fine_tuned_model_checkpoint`) usable for chat and evals.")


FINE_TUNING_JOBS = JobKind(
    name="fine_tuning", run="assay.api.jobs.fine_tuning:run_fine_tuning_job", create_model=CreateFineTuningJob,
    job_model=FineTuningJob, prepare=prepare_fine_tuning_job, render=render_fine_tuning_job, pool="training",
    title="fine-tuning job", event_model=FineTuningJobEvent, render_event=render_fine_tuning_event,
    extra_routes=_checkpoint_routes, resumable=True, timeout_s=TRAINING_TIMEOUT_S)


# -- the worker side -------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _copy_adapter(src: Path, dest: Path) -> None:
    """Copy an adapter folder (no optimizer state) into place in one rename."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for item in src.iterdir():
        if item.is_file() and item.suffix in (".json", ".safetensors", ".model", ".txt", ".jinja"):
            shutil.copy2(item, tmp / item.name)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)


class _Events:
    """Training events -> job events (`metrics` for steps), progress, and checkpoint models."""

    def __init__(self, ctx: JobContext, model_name: str, base: str) -> None:
        self.ctx = ctx
        self.model_name = model_name
        self.base = base
        self.last_progress = 0.0

    def __call__(self, event: Any) -> None:
        ctx = self.ctx
        if event.type == "train":
            data = {"step": event.step, "train_loss": event.loss, "learning_rate": event.learning_rate,
                    "tokens_per_s": event.tokens_per_s, "total_steps": event.total_steps}
            ctx.store.add_event(ctx.job_id, f"Step {event.step}/{event.total_steps}: training loss={event.loss:.4f}",
                                type_="metrics", data={k: v for k, v in data.items() if v is not None})
            now = time.monotonic()
            if now - self.last_progress >= ctx.settings.progress_interval_s or event.step == event.total_steps:
                self.last_progress = now
                eta = event.eta_s
                ctx.store.set_progress(ctx.job_id, {
                    "step": event.step, "total_steps": event.total_steps, "trained_tokens": event.tokens,
                    "tokens_per_s": event.tokens_per_s,
                    "estimated_finish": int(time.time() + eta) if eta is not None else None})
        elif event.type == "eval":
            data = {"step": event.step, "valid_loss": event.valid_loss}
            ctx.store.add_event(ctx.job_id, f"Step {event.step}: validation loss={event.valid_loss:.4f}",
                                type_="metrics", data=data)
        elif event.type == "checkpoint":
            self._checkpoint(event)
        elif event.type == "status" and event.message:
            level = "error" if event.status == "failed" else "info"
            ctx.store.add_event(ctx.job_id, event.message, level=level)

    def _checkpoint(self, event: Any) -> None:
        ctx = self.ctx
        name = f"{self.model_name}:ckpt-step-{event.step}"
        folder = ctx.settings.models_dir / _safe(ctx.job_id) / f"checkpoint-{event.step}"
        _copy_adapter(Path(str(event.path)), folder)
        if ctx.store.get_model(name, include_deleted=True) is None:
            ctx.store.add_model(
                id=name, kind="checkpoint", base=self.base, job_id=ctx.job_id, step=event.step,
                adapter_dir=str(folder.relative_to(ctx.settings.data_dir)),
                metrics={"step": float(event.step), "train_loss": event.loss, "valid_loss": event.valid_loss},
                lineage={"checkpoint_id": f"ftckpt-{secrets.token_hex(8)}", "fine_tuning_job": ctx.job_id})
        ctx.store.add_event(ctx.job_id, f"Checkpoint created at step {event.step}: {name}")
        old = sorted(ctx.store.list_models(kind="checkpoint", job_id=ctx.job_id), key=lambda r: int(r["step"] or 0))
        for row in old[:-KEEP_CHECKPOINTS]:
            if not ctx.store.active_jobs_mentioning(row["id"]) and ctx.store.delete_model(row["id"]):
                shutil.rmtree(ctx.settings.data_dir / row["adapter_dir"], ignore_errors=True)


def _write_metrics_csv(events_path: Path, dest: Path) -> None:
    """OpenAI's result file: one row per step with train and validation loss."""
    rows: dict[int, dict[str, Any]] = {}
    if events_path.is_file():
        for line in events_path.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if event.get("type") == "train":
                rows.setdefault(event["step"], {})["train_loss"] = event.get("loss")
            elif event.get("type") == "eval":
                rows.setdefault(event["step"], {})["valid_loss"] = event.get("valid_loss")
    with dest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["step", "train_loss", "valid_loss"])
        for step in sorted(rows):
            writer.writerow([step, rows[step].get("train_loss", ""), rows[step].get("valid_loss", "")])


def run_fine_tuning_job(ctx: JobContext) -> dict[str, Any]:
    from assay.api.artifacts import publish
    from assay.schemas.training import FineTuneSpec, TrainingReport
    from assay.training.trainer import REPORT_FILE, SPEC_FILE, FineTuneError, TrainingDiverged, finetune

    params = ctx.params
    settings = ctx.settings
    model_name = fine_tuned_name(params, ctx.job_id)
    out = settings.training_dir / _safe(ctx.job_id)
    data = _stored(ctx, params["training_file"], "training_file")
    validation = _stored(ctx, params["validation_file"], "validation_file") if params.get("validation_file") else None
    spec = FineTuneSpec.model_validate(params["spec"])
    resume = (out / SPEC_FILE).is_file() and not (out / REPORT_FILE).is_file()
    ctx.event(("resuming" if resume else "starting") + f" fine-tuning of {params['model']} into {model_name}")

    try:
        if (out / REPORT_FILE).is_file():  # trained before the server died; only the publishing is left
            report = TrainingReport.model_validate_json((out / REPORT_FILE).read_text(encoding="utf-8"))
        else:
            report = finetune(spec, data, out, validation=validation, should_stop=ctx.should_stop, resume=resume,
                              on_event=_Events(ctx, model_name, params["model"]), overwrite=not resume)
    except FineTuneError as exc:
        raise JobFailed(str(exc).replace(str(data), params["training_file"]), "invalid_training_data") from exc
    except TrainingDiverged as exc:
        raise JobFailed(str(exc), "training_diverged") from exc
    if report.status == "stopped":
        raise JobCancelled(ctx.job_id)

    _write_metrics_csv(out / "events.jsonl", out / "step_metrics.csv")
    metrics_id = ctx.publish_file(out / "step_metrics.csv", filename=f"{ctx.job_id}.step_metrics.csv",
                                  purpose="fine-tune-results", suffix=".csv")
    from assay.api.store import new_id

    report_id = new_id("file")
    shutil.copy2(out / "training_report.html", out / ".report.html")
    publish(out / ".report.html", settings.reports_dir / f"{report_id}.html")
    shutil.copy2(out / REPORT_FILE, out / ".report.json")
    ctx.publish_file(out / ".report.json", filename=f"{ctx.job_id}.training_report.json",
                     purpose="fine-tune-results", suffix=".json", file_id=report_id)
    folder = settings.models_dir / _safe(ctx.job_id) / "final"
    _copy_adapter(out / "adapter", folder)
    if ctx.store.get_model(model_name, include_deleted=True) is None:
        ctx.store.add_model(
            id=model_name, kind="fine_tuned", base=params["model"], job_id=ctx.job_id,
            adapter_dir=str(folder.relative_to(settings.data_dir)), adapter_hash=report.adapter_sha256,
            metrics={"final_valid_loss": report.final_valid_loss, "valid_loss_before": report.valid_loss_before},
            lineage={"base": params["model"], "adapter_sha256": report.adapter_sha256,
                     "training_file": params["training_file"], "training_file_sha256": report.data.sha256,
                     "validation_file": params.get("validation_file"),
                     "validation_file_sha256": report.data.validation_sha256, "fine_tuning_job": ctx.job_id,
                     "training_report": report_id, "settings": params["spec"]})

    return {"fine_tuned_model": model_name, "trained_tokens": report.tokens_trained,
            "report_id": report_id, "result_files": [metrics_id, report_id]}


def _stored(ctx: JobContext, file_id: str, param: str) -> Path:
    row = ctx.store.get_file(file_id)
    if row is None:
        raise JobFailed(f"{param} {file_id} was deleted before the job ran", "file_not_found")
    return ctx.settings.files_dir / str(row["storage_name"])
