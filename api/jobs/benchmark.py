"""The `benchmark` job kind: `assay eval` as a service job (/v1/benchmark/jobs). A base model and fine-tuned
models of this server are scored on the same items of each task (uploaded task files, or lm-eval task names
the server can reach); with `fine_tuning_job` and `curation_job` the report joins what the data lost, how
training went and whether the model got better. The joined report is the job's output (/v1/reports/{id})."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assay.api.errors import APIError
from assay.api.jobs.context import JobContext, JobFailed
from assay.api.jobs.kind import JobKind, JobRequest, JobServices
from assay.api.models import JobObject

BENCHMARK_TIMEOUT_S = 24 * 3600.0


class BenchmarkTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["arc_easy", "arc_challenge", "gsm8k", "logiqa-en", "sat-math", "aqua-rat", "mmlu", "mc", "gen",
                    "ppl", "lm_eval"]
    file_id: str | None = Field(None, max_length=64, description="The uploaded task file (every format but lm_eval).")
    name: str | None = Field(None, max_length=120, description="lm_eval: the task's registered name; else a label.")
    num_fewshot: int | None = Field(None, ge=0, le=25)


class CreateBenchmarkJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, max_length=255, description="A base model GET /v1/models lists.")
    fine_tuned_models: list[str] = Field(default_factory=list, max_length=8,
                                         description="Fine-tuned models of that base, each compared with it.")
    tasks: list[BenchmarkTask] = Field(..., min_length=1, max_length=20)
    limit: int | None = Field(None, gt=0, le=100_000, description="A seeded sample of this many items per task.")
    seed: int = 1234
    max_gen_toks: int | None = Field(None, gt=0, le=4096)
    fine_tuning_job: str | None = Field(None, max_length=64,
                                        description="Joins its training report; its data are checked for task items.")
    curation_job: str | None = Field(None, max_length=64, description="Joins its quality report.")


class BenchmarkOutputs(BaseModel):
    report_id: str = Field(..., description="GET /v1/reports/{report_id} renders the joined report.")
    verdicts: dict[str, dict[str, str]] = Field(default_factory=dict,
                                                description="Per task, per fine-tuned model: better / worse / "
                                                            "no_significant_difference.")


class BenchmarkJob(JobObject):
    object: Literal["benchmark.job"] = "benchmark.job"
    model: str
    fine_tuned_models: list[str]
    tasks: list[dict[str, Any]]
    outputs: BenchmarkOutputs | None = None


def prepare_benchmark_job(body: CreateBenchmarkJob, services: JobServices) -> JobRequest:
    from assay.api.serving import base_model_names

    store = services.store
    if body.model not in base_model_names(services.settings):
        raise APIError(400, f"'{body.model}' is not a base model this server serves.", param="model",
                       code="model_not_available")
    for index, name in enumerate(body.fine_tuned_models):
        row = store.get_model(name)
        if row is None or row["base"] != body.model:
            raise APIError(400, f"'{name}' is not a fine-tuned model of {body.model} on this server.",
                           param=f"fine_tuned_models[{index}]", code="model_not_found")
    for index, task in enumerate(body.tasks):
        if task.format == "lm_eval":
            if not task.name or task.file_id:
                raise APIError(400, "an lm_eval task gives its registered `name` and no file",
                               param=f"tasks[{index}]", code="invalid_task")
        elif task.file_id is None or store.get_file(task.file_id) is None:
            raise APIError(400, f"a {task.format} task needs the `file_id` of an uploaded task file",
                           param=f"tasks[{index}].file_id", code="file_not_found")
    for param, job_id, kind in (("fine_tuning_job", body.fine_tuning_job, "fine_tuning"),
                                ("curation_job", body.curation_job, "curation")):
        if job_id is not None:
            job = store.get_job(job_id, kind=kind)
            if job is None or job["status"] != "succeeded":
                raise APIError(400, f"{param} {job_id} is not a succeeded {kind.replace('_', '-')} job.", param=param,
                               code="job_not_found")
    return JobRequest(params=body.model_dump(mode="json"))


def render_benchmark_job(row: dict[str, Any]) -> dict[str, Any]:
    params = row["params"]
    result = row.get("result") or {}
    return {"model": params["model"], "fine_tuned_models": params.get("fine_tuned_models") or [],
            "tasks": params["tasks"], "outputs": result.get("outputs")}


BENCHMARK_JOBS = JobKind(
    name="benchmark", run="assay.api.jobs.benchmark:run_benchmark_job", create_model=CreateBenchmarkJob,
    job_model=BenchmarkJob, prepare=prepare_benchmark_job, render=render_benchmark_job, title="benchmark job",
    timeout_s=BENCHMARK_TIMEOUT_S)


def run_benchmark_job(ctx: JobContext) -> dict[str, Any]:
    from assay.api.artifacts import publish
    from assay.api.store import new_id
    from assay.evaluation.errors import EvalInputError
    from assay.evaluation.report import primary_comparisons
    from assay.evaluation.run import evaluate
    from assay.schemas.evaluation import EvalSpec, TaskSpec

    params = ctx.params
    store, settings = ctx.store, ctx.settings
    tasks = []
    for task in params["tasks"]:
        if task["format"] == "lm_eval":
            tasks.append(TaskSpec(format="lm_eval", name=task["name"], num_fewshot=task.get("num_fewshot")))
            continue
        row = store.get_file(task["file_id"])
        if row is None:
            raise JobFailed(f"task file {task['file_id']} was deleted before the job ran", "file_not_found")
        tasks.append(TaskSpec(format=task["format"], path=str(settings.files_dir / row["storage_name"]),
                              name=task.get("name") or str(row["filename"]).rsplit(".", 1)[0],
                              num_fewshot=task.get("num_fewshot")))
    adapters = []
    for name in params.get("fine_tuned_models") or []:
        model = store.get_model(name)
        if model is None:
            raise JobFailed(f"fine-tuned model {name} was deleted before the job ran", "model_not_found")
        adapters.append(f"{name}={settings.data_dir / model['adapter_dir']}")
    training_run = None
    if params.get("fine_tuning_job"):
        training_run = str(settings.training_dir / params["fine_tuning_job"].replace("/", "_"))
    curation_report = None
    if params.get("curation_job"):
        job = store.get_job(params["curation_job"]) or {}
        stored = store.get_file(((job.get("result") or {}).get("outputs") or {}).get("report_id", ""))
        if stored is not None:
            curation_report = str(settings.files_dir / stored["storage_name"])
    spec = EvalSpec(model=params["model"], adapters=adapters, tasks=tasks, limit=params.get("limit"),
                    seed=params.get("seed", 1234), max_gen_toks=params.get("max_gen_toks"),
                    training_run=training_run, curation_report=curation_report)
    out = ctx.work_dir / "eval"

    def on_event(event: dict[str, Any]) -> None:
        shown = {k: v for k, v in event.items() if k != "report"}  # no server paths
        ctx.progress(shown, str(event.get("event", "progress")), force=True)

    try:
        report = evaluate(spec, out, on_event=on_event, should_stop=ctx.should_stop)
    except EvalInputError as exc:
        raise JobFailed(str(exc).replace(str(settings.files_dir) + "/", ""), "invalid_task") from exc
    ctx.check_cancelled()
    report_id = new_id("file")
    publish(out / "eval_report.html", settings.reports_dir / f"{report_id}.html")
    ctx.publish_file(out / "eval_report.json", filename=f"{ctx.job_id}.eval_report.json", purpose="benchmark-report",
                     suffix=".json", file_id=report_id)
    verdicts: dict[str, dict[str, str]] = {}
    for task, comparison in primary_comparisons(report):
        verdicts.setdefault(task.name, {})[comparison.model] = comparison.verdict
    return {"outputs": {"report_id": report_id, "verdicts": verdicts}, "result_files": [report_id]}
