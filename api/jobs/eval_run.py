"""The `eval_run` job kind: one run of an OpenAI-shaped eval (routes in api/routes/evals.py).

A run reads its items (a JSONL file id or inline content, each line `{"item": ..., "sample": ...}` or a bare
item), checks each item against the eval's `item_schema`, takes the sample from the data or generates it
with a listed model (`completions` data source, a chat template rendered per item), grades every sample with
every testing criterion (assay.evaluation.graders; model graders ask any listed model through the service's
inference engines) and publishes the output items (JSONL) and a report (JSON + HTML at /v1/reports/{id}).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from assay.api.jobs.context import JobContext, JobFailed
from assay.api.jobs.kind import JobKind, JobRequest, JobServices
from assay.api.models import JobObject

MAX_ITEMS = 100_000
STATUS = {"queued": "queued", "running": "in_progress", "cancelling": "in_progress", "succeeded": "completed",
          "failed": "failed", "cancelled": "canceled"}


class EvalRunJob(JobObject):
    """Not served by the job router (routes=False): api/routes/evals.py renders runs in OpenAI's shape."""

    object: Literal["eval.run"] = "eval.run"


def _unused_prepare(body: BaseModel, services: JobServices) -> JobRequest:
    raise NotImplementedError("eval runs are created by POST /v1/evals/{eval_id}/runs")


EVAL_RUNS = JobKind(
    name="eval_run", run="assay.api.jobs.eval_run:run_eval_run", create_model=BaseModel, job_model=EvalRunJob,
    prepare=_unused_prepare, render=lambda row: {}, routes=False, title="eval run")


# -- the worker side -------------------------------------------------------------------------------------
def _read_items(ctx: JobContext, source: dict[str, Any]) -> list[dict[str, Any]]:
    """[{item, sample?}] from inline content or a stored JSONL file; a bad line fails the run naming it."""
    if source["type"] == "file_content":
        rows = source["content"]
        where = "content"
    else:
        row = ctx.store.get_file(source["id"])
        if row is None:
            raise JobFailed(f"file {source['id']} was deleted before the run started", "file_not_found")
        where = str(row["filename"])
        rows = []
        path = ctx.settings.files_dir / str(row["storage_name"])
        opener: Any = open
        if path.suffix == ".gz":
            import gzip

            opener = gzip.open
        with opener(path, "rt", encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise JobFailed(f"{where} line {number}: not JSON ({exc.msg})", "invalid_data_source") from exc
                if len(rows) > MAX_ITEMS:
                    raise JobFailed(f"{where}: more than {MAX_ITEMS} items", "invalid_data_source")
    items = []
    for number, entry in enumerate(rows, start=1):
        if not isinstance(entry, dict):
            raise JobFailed(f"{where} item {number}: expected a JSON object", "invalid_data_source")
        if "item" in entry:
            if not isinstance(entry["item"], dict):
                raise JobFailed(f"{where} item {number}: 'item' must be an object", "invalid_data_source")
            items.append({"item": entry["item"], "sample": entry.get("sample")})
        else:
            items.append({"item": entry, "sample": None})
    return items


def _schema_error(validator: Any, item: dict[str, Any]) -> str | None:
    errors = sorted(validator.iter_errors(item), key=lambda e: list(e.path))
    if not errors:
        return None
    first = errors[0]
    where = ".".join(str(p) for p in first.path) or "item"
    return f"item_schema: {where}: {first.message}"


def _messages(template: list[dict[str, Any]], context: dict[str, Any]) -> list[dict[str, str]]:
    from assay.evaluation.graders import render

    return [{"role": "system" if m["role"] == "developer" else m["role"], "content": render(m["content"], context)}
            for m in template]


class _Models:
    """The service's inference engines inside a worker: generation for samples and model graders."""

    def __init__(self, ctx: JobContext) -> None:
        from assay.api.serving import ServiceCatalog

        self.catalog = ServiceCatalog(ctx.settings)
        self.catalog.bind(ctx.store)
        self.usage: dict[str, dict[str, int]] = {}

    def submit(self, model: str, messages: list[dict[str, str]], sampling: dict[str, Any] | None,
               default_tokens: int) -> tuple[Future[Any], int]:
        from assay.evaluation.inference import SamplingParams

        try:
            engine, adapter = self.catalog.acquire(model)
        except KeyError:
            raise JobFailed(f"model '{model}' is not listed by GET /v1/models", "model_not_found") from None
        try:
            prompt = engine.chat_prompt_ids(messages)
            sampling = sampling or {}
            room = max(1, engine.context_length - len(prompt))
            params = SamplingParams(max_tokens=min(room, sampling.get("max_completion_tokens") or default_tokens),
                                    temperature=sampling.get("temperature") or 0.0, top_p=sampling.get("top_p") or 1.0,
                                    seed=sampling.get("seed"))
            return engine.submit(prompt, params, adapter=adapter).future, len(prompt)
        finally:
            self.catalog.release(model)

    def ask(self, model: str, messages: list[dict[str, str]], sampling: Any) -> str:
        future, prompt_tokens = self.submit(model, messages, sampling.model_dump() if sampling else None, 256)
        completion = future.result()[0]
        self._count(model, prompt_tokens, completion)
        return str(completion.text)

    def _count(self, model: str, prompt_tokens: int, completion: Any) -> None:
        usage = self.usage.setdefault(model, {"invocation_count": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                              "total_tokens": 0, "cached_tokens": 0})
        generated = int(completion.completion_tokens)
        usage["invocation_count"] += 1
        usage["prompt_tokens"] += prompt_tokens
        usage["completion_tokens"] += generated
        usage["total_tokens"] += prompt_tokens + generated

    def close(self) -> None:
        self.catalog.close()


def run_eval_run(ctx: JobContext) -> dict[str, Any]:
    import jsonschema
    from pydantic import TypeAdapter

    from assay.evaluation.graders import Grader, GraderError, grade

    params = ctx.params
    evaluation = ctx.store.get_eval(params["eval_id"])
    if evaluation is None:
        raise JobFailed(f"eval {params['eval_id']} was deleted before the run started", "eval_not_found")
    graders = [TypeAdapter(Grader).validate_python(c) for c in evaluation["testing_criteria"]]
    schema = evaluation["data_source_config"].get("item_schema") or {"type": "object"}
    validator = jsonschema.Draft202012Validator(schema)
    source = params["data_source"]
    rows = _read_items(ctx, source["source"])
    ctx.event(f"grading {len(rows)} items with {len(graders)} testing criteria")
    models = _Models(ctx)
    outputs: list[dict[str, Any]] = []
    try:
        # Samples first: a completions source submits every generation at once so the engine batches them.
        pending: list[tuple[Future[Any], int] | None] = []
        errors: list[str | None] = []
        for row in rows:
            error = _schema_error(validator, row["item"])
            errors.append(error)
            if error is None and source["type"] == "completions":
                template = source["input_messages"]
                try:
                    messages = (_messages(template["template"], {"item": row["item"]})
                                if template["type"] == "template" else _referenced(row["item"], template))
                except (GraderError, ValueError) as exc:
                    errors[-1] = str(exc)
                    pending.append(None)
                    continue
                row["input"] = messages
                pending.append(models.submit(source["model"], messages, source.get("sampling_params"), 256))
            else:
                pending.append(None)
        for index, (row, waiting) in enumerate(zip(rows, pending, strict=True)):
            ctx.check_cancelled()
            sample = row["sample"] or {}
            if waiting is not None:
                future, prompt_tokens = waiting
                completion = future.result()[0]
                models._count(source["model"], prompt_tokens, completion)
                sample = {"input": row["input"], "output": [{"role": "assistant", "content": completion.text}],
                          "output_text": completion.text, "finish_reason": completion.finish_reason,
                          "model": source["model"], "error": None}
            elif "output_text" not in sample and sample.get("output"):
                sample = {**sample, "output_text": str((sample["output"] or [{}])[-1].get("content", ""))}
            results = [] if errors[index] else [grade(g, row["item"], sample, models.ask).to_json() for g in graders]
            errored = errors[index] is not None or any(r.get("error") for r in results)
            passed = not errored and all(r["passed"] for r in results)
            outputs.append({
                "object": "eval.run.output_item", "id": f"outputitem-{ctx.job_id[4:]}-{index}", "run_id": ctx.job_id,
                "eval_id": params["eval_id"], "created_at": int(time.time()),
                "status": "error" if errors[index] else ("pass" if passed else "fail"),
                "datasource_item_id": index, "datasource_item": row["item"], "results": results,
                "sample": {**sample, "error": {"code": "invalid_item", "message": errors[index]}}
                if errors[index] else sample})
            ctx.progress({"items_done": index + 1, "items": len(rows)}, f"{index + 1}/{len(rows)} items graded")
    finally:
        models.close()
    return _publish(ctx, params, graders, outputs, models.usage)


def _referenced(item: dict[str, Any], template: dict[str, Any]) -> list[dict[str, str]]:
    """`item_reference: "item.messages"`: the item's own list of messages."""
    value: Any = {"item": item}
    for part in str(template["item_reference"]).split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"item_reference {template['item_reference']!r}: no '{part}' in the item")
        value = value[part]
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m for m in value):
        raise ValueError(f"item_reference {template['item_reference']!r} is not a list of messages")
    return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in value]


def _publish(ctx: JobContext, params: dict[str, Any], graders: list[Any], outputs: list[dict[str, Any]],
             usage: dict[str, dict[str, int]]) -> dict[str, Any]:
    from assay.api.artifacts import publish
    from assay.api.store import new_id
    from assay.evaluation.report import render_eval_run_html

    counts = {"total": len(outputs), "passed": sum(o["status"] == "pass" for o in outputs),
              "failed": sum(o["status"] == "fail" for o in outputs),
              "errored": sum(o["status"] == "error" for o in outputs)}
    per_criterion = []
    for grader in graders:
        scored = [r for o in outputs for r in o["results"] if r["name"] == grader.name]
        per_criterion.append({"testing_criteria": grader.name, "passed": sum(r["passed"] for r in scored),
                              "failed": sum(not r["passed"] for r in scored),
                              "mean_score": sum(r["score"] for r in scored) / len(scored) if scored else None})
    per_model = [{"model_name": name, **numbers} for name, numbers in usage.items()]
    work = ctx.work_dir
    items_path = work / "output_items.jsonl"
    with items_path.open("w", encoding="utf-8") as handle:
        for output in outputs:
            handle.write(json.dumps(output, ensure_ascii=False) + "\n")
    items_id = ctx.publish_file(items_path, filename=f"{ctx.job_id}.output_items.jsonl", purpose="eval-output",
                                suffix=".jsonl")
    summary = {"eval_id": params["eval_id"], "run_id": ctx.job_id, "name": params.get("name"),
               "data_source": params["data_source"]["type"], "model": params["data_source"].get("model"),
               "result_counts": counts, "per_testing_criteria_results": per_criterion, "per_model_usage": per_model,
               "examples": outputs[:20]}
    report_id = new_id("file")
    html_path = work / "report.html"
    html_path.write_text(render_eval_run_html(summary), encoding="utf-8")
    publish(html_path, ctx.settings.reports_dir / f"{report_id}.html")
    json_path = work / "report.json"
    json_path.write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    ctx.publish_file(json_path, filename=f"{ctx.job_id}.eval_report.json", purpose="eval-report", suffix=".json",
                     file_id=report_id)
    return {"result_counts": counts, "per_testing_criteria_results": per_criterion, "per_model_usage": per_model,
            "output_items_file_id": items_id, "report_id": report_id, "result_files": [items_id, report_id]}


def read_output_items(settings: Any, store: Any, result: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished run's output items (from its published JSONL file)."""
    file_id = result.get("output_items_file_id")
    row = store.get_file(file_id) if file_id else None
    if row is None:
        return []
    path: Path = settings.files_dir / str(row["storage_name"])
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
