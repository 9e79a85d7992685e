"""/v1/evals in the shape of OpenAI's Evals API: evals (item schema + testing criteria), their runs (jobs of
kind `eval_run`, api/jobs/eval_run.py) and the runs' output items."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from assay.api.auth import authorize
from assay.api.deps import get_runner, get_settings, get_store
from assay.api.errors import APIError, not_found
from assay.api.jobs.eval_run import EVAL_RUNS, STATUS, read_output_items
from assay.api.jobs.kind import JobRequest
from assay.api.models import ErrorResponse
from assay.api.routes.files import COMMON_ERRORS, NOT_FOUND
from assay.api.routes.jobs import create_job, list_matching_jobs
from assay.api.runner import Runner
from assay.api.settings import Settings
from assay.api.store import FINAL_STATUSES, CursorNotFound, Store
from assay.evaluation.graders import Grader, GraderError, GraderMessage, SamplingParams, check_templates

router = APIRouter(prefix="/v1/evals", tags=["evals"], dependencies=[Depends(authorize)], responses={
    **COMMON_ERRORS, **NOT_FOUND, 409: {"model": ErrorResponse, "description": "The run is still active"}})


# -- request models ---------------------------------------------------------------------------------------
class CustomDataSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["custom"]
    item_schema: dict[str, Any]
    include_sample_schema: bool = False


class CreateEval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=255)
    data_source_config: CustomDataSourceConfig
    testing_criteria: list[Grader] = Field(..., min_length=1, max_length=20)
    metadata: dict[str, str] | None = None


class UpdateEval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=255)
    metadata: dict[str, str] | None = None


class FileContentSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["file_content"]
    content: list[dict[str, Any]] = Field(..., min_length=1, max_length=10_000)


class FileIdSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["file_id"]
    id: str = Field(..., min_length=1, max_length=64)


Source = Annotated[FileContentSource | FileIdSource, Field(discriminator="type")]


class JsonlDataSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["jsonl"]
    source: Source


class TemplateInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["template"]
    template: list[GraderMessage] = Field(..., min_length=1)


class ItemReferenceInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["item_reference"]
    item_reference: str = Field(..., min_length=1, max_length=200)


class CompletionsDataSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["completions"]
    model: str = Field(..., min_length=1, max_length=255)
    input_messages: Annotated[TemplateInput | ItemReferenceInput, Field(discriminator="type")]
    source: Source
    sampling_params: SamplingParams | None = None


class CreateRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=255)
    data_source: Annotated[JsonlDataSource | CompletionsDataSource, Field(discriminator="type")]
    metadata: dict[str, str] | None = None


# -- rendering ----------------------------------------------------------------------------------------------
def _eval_object(row: dict[str, Any]) -> dict[str, Any]:
    config = row["data_source_config"]
    properties: dict[str, Any] = {"item": config["item_schema"]}
    required = ["item"]
    if config.get("include_sample_schema"):
        properties["sample"] = {"type": "object"}
        required.append("sample")
    schema = {"type": "object", "properties": properties, "required": required}
    return {"id": row["id"], "object": "eval", "created_at": int(row["created_at"]), "name": row["name"],
            "data_source_config": {"type": "custom", "schema": schema}, "testing_criteria": row["testing_criteria"],
            "metadata": row.get("metadata") or {}}


def _run_object(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    params = row["params"]
    result = row.get("result") or {}
    counts = result.get("result_counts") or {"total": 0, "passed": 0, "failed": 0, "errored": 0}
    report_id = result.get("report_id")
    error = row.get("error")
    return {
        "id": row["id"], "object": "eval.run", "eval_id": params["eval_id"], "created_at": int(row["created_at"]),
        "name": params.get("name") or row["id"], "status": STATUS.get(row["status"], row["status"]),
        "model": params["data_source"].get("model"), "data_source": params["data_source"],
        "metadata": params.get("metadata") or {}, "result_counts": counts,
        "per_testing_criteria_results": [{k: v for k, v in c.items() if k != "mean_score"}
                                         for c in result.get("per_testing_criteria_results") or []],
        "per_model_usage": result.get("per_model_usage") or [],
        "report_url": str(request.base_url).rstrip("/") + f"/v1/reports/{report_id}?format=html" if report_id else None,
        "error": {"code": error.get("code", ""), "message": error.get("message", "")} if error else None,
        "progress": row.get("progress"),
    }


def _eval_row(store: Store, eval_id: str) -> dict[str, Any]:
    row = store.get_eval(eval_id)
    if row is None:
        raise not_found("eval", eval_id, param="eval_id")
    return row


def _run_row(store: Store, eval_id: str, run_id: str) -> dict[str, Any]:
    _eval_row(store, eval_id)
    row = store.get_job(run_id, kind=EVAL_RUNS.name)
    if row is None or row["params"].get("eval_id") != eval_id:
        raise not_found("eval run", run_id, param="run_id")
    return row


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


# -- evals --------------------------------------------------------------------------------------------------
@router.post("", summary="Create an eval")
def create_eval(body: CreateEval, store: Store = Depends(get_store)) -> dict[str, Any]:
    """An eval: what each item looks like (a JSON Schema) and how samples are graded (`string_check`,
    `text_similarity`, `score_model`, `label_model`)."""
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(body.data_source_config.item_schema)
    except jsonschema.SchemaError as exc:
        raise APIError(400, f"item_schema is not a valid JSON Schema: {exc.message}",
                       param="data_source_config.item_schema", code="invalid_item_schema") from exc
    for index, grader in enumerate(body.testing_criteria):
        try:
            check_templates(grader)
        except GraderError as exc:
            raise APIError(400, str(exc), param=f"testing_criteria[{index}]", code="invalid_grader") from exc
    names = [g.name for g in body.testing_criteria]
    if len(set(names)) != len(names):
        raise APIError(400, "testing_criteria names must be unique", param="testing_criteria", code="invalid_grader")
    row = store.add_eval(name=body.name or "eval", data_source_config=body.data_source_config.model_dump(),
                         testing_criteria=[g.model_dump(mode="json", exclude_none=True) for g in body.testing_criteria],
                         metadata=body.metadata)
    return _eval_object(row)


@router.get("", summary="List evals")
def list_evals(limit: int = Query(20, ge=1, le=100), after: str | None = Query(None, max_length=200),
               order: Literal["asc", "desc"] = Query("asc"), store: Store = Depends(get_store)) -> dict[str, Any]:
    try:
        rows, more = store.list_evals(limit=limit, after=after, descending=order == "desc")
    except CursorNotFound as exc:
        raise APIError(400, "'after' does not name an existing eval.", param="after", code="invalid_cursor") from exc
    return _page([_eval_object(r) for r in rows], more)


@router.get("/{eval_id}", summary="Retrieve an eval")
def retrieve_eval(eval_id: str, store: Store = Depends(get_store)) -> dict[str, Any]:
    return _eval_object(_eval_row(store, eval_id))


@router.post("/{eval_id}", summary="Update an eval's name or metadata")
def update_eval(eval_id: str, body: UpdateEval, store: Store = Depends(get_store)) -> dict[str, Any]:
    _eval_row(store, eval_id)
    values = body.model_dump(exclude_none=True)
    row = store.update_eval(eval_id, **values) if values else store.get_eval(eval_id)
    assert row is not None
    return _eval_object(row)


@router.delete("/{eval_id}", summary="Delete an eval")
def delete_eval(eval_id: str, store: Store = Depends(get_store)) -> dict[str, Any]:
    _eval_row(store, eval_id)
    store.delete_eval(eval_id)
    return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}


# -- runs ---------------------------------------------------------------------------------------------------
@router.post("/{eval_id}/runs", summary="Create an eval run")
def create_run(eval_id: str, body: CreateRun, request: Request, store: Store = Depends(get_store),
               settings: Settings = Depends(get_settings), runner: Runner = Depends(get_runner),
               idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=256),
               retry_count: int = Header(0, alias="X-Stainless-Retry-Count", ge=0)) -> dict[str, Any]:
    """Grade a JSONL file's (or inline) items and samples, or samples a listed model generates
    (`completions`); the run is a job of the default worker pool."""
    _eval_row(store, eval_id)
    source = body.data_source.source
    input_file = None
    if isinstance(source, FileIdSource):
        found = store.get_file(source.id)
        if found is None:
            raise APIError(400, f"No such file: '{source.id}'.", param="data_source.source.id", code="file_not_found")
        input_file = source.id
    if isinstance(body.data_source, CompletionsDataSource):
        catalog = request.app.state.catalog
        if catalog.model_object(body.data_source.model) is None:
            raise APIError(400, f"The model '{body.data_source.model}' is not listed by GET /v1/models.",
                           param="data_source.model", code="model_not_found")
        if isinstance(body.data_source.input_messages, TemplateInput):
            for index, message in enumerate(body.data_source.input_messages.template):
                error = _template_error(message.content)
                if error:
                    raise APIError(400, f"input_messages.template[{index}]: {error}",
                                   param="data_source.input_messages", code="invalid_template")
    params = {"eval_id": eval_id, "name": body.name, "metadata": body.metadata,
              "data_source": body.data_source.model_dump(mode="json", exclude_none=True)}
    row = create_job(store, EVAL_RUNS, JobRequest(params=params, input_file_id=input_file), body,
                     idempotency_key=idempotency_key, retry_count=retry_count)
    runner.wake(EVAL_RUNS.name)
    return _run_object(request, row)


def _template_error(template: str) -> str | None:
    """A template's syntax error, checked when the run is created (the run renders it per item)."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        SandboxedEnvironment().parse(template)
    except TemplateSyntaxError as exc:
        return exc.message or "template syntax error"
    return None


@router.get("/{eval_id}/runs", summary="List an eval's runs")
def list_runs(eval_id: str, request: Request, limit: int = Query(20, ge=1, le=100),
              after: str | None = Query(None, max_length=200), store: Store = Depends(get_store)) -> dict[str, Any]:
    _eval_row(store, eval_id)
    rows, more = _runs_of(store, eval_id, limit, after)
    return _page([_run_object(request, r) for r in rows], more)


def _runs_of(store: Store, eval_id: str, limit: int, after: str | None) -> tuple[list[dict[str, Any]], bool]:
    found: list[dict[str, Any]] = []
    cursor = after
    while True:
        rows, more = list_matching_jobs(store, EVAL_RUNS.name, 100, cursor, {})
        for row in rows:
            if row["params"].get("eval_id") == eval_id:
                if len(found) == limit:
                    return found, True
                found.append(row)
        if not more or not rows:
            return found, False
        cursor = rows[-1]["id"]


@router.get("/{eval_id}/runs/{run_id}", summary="Retrieve an eval run")
def retrieve_run(eval_id: str, run_id: str, request: Request, store: Store = Depends(get_store)) -> dict[str, Any]:
    return _run_object(request, _run_row(store, eval_id, run_id))


@router.post("/{eval_id}/runs/{run_id}", summary="Cancel an eval run")
def cancel_run(eval_id: str, run_id: str, request: Request, store: Store = Depends(get_store)) -> dict[str, Any]:
    row = _run_row(store, eval_id, run_id)
    if row["status"] not in FINAL_STATUSES:
        store.request_cancel(run_id)
        store.add_event(run_id, "cancellation requested")
    return _run_object(request, _run_row(store, eval_id, run_id))


@router.delete("/{eval_id}/runs/{run_id}", summary="Delete an eval run")
def delete_run(eval_id: str, run_id: str, store: Store = Depends(get_store)) -> dict[str, Any]:
    row = _run_row(store, eval_id, run_id)
    if row["status"] not in FINAL_STATUSES:
        raise APIError(409, f"Run {run_id} is still {row['status']}; cancel it first.", param="run_id",
                       code="run_active")
    store.delete_job(run_id)
    return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id}


@router.get("/{eval_id}/runs/{run_id}/output_items", summary="List a run's output items")
def list_output_items(eval_id: str, run_id: str, limit: int = Query(20, ge=1, le=100),
                      after: str | None = Query(None, max_length=200),
                      status: Literal["pass", "fail", "error"] | None = Query(None),
                      order: Literal["asc", "desc"] = Query("asc"), store: Store = Depends(get_store),
                      settings: Settings = Depends(get_settings)) -> dict[str, Any]:
    row = _run_row(store, eval_id, run_id)
    items = read_output_items(settings, store, row.get("result") or {})
    if status is not None:
        items = [i for i in items if i["status"] == status]
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [i["id"] for i in items]
        if after not in ids:
            raise APIError(400, "'after' does not name an output item of this run.", param="after",
                           code="invalid_cursor")
        items = items[ids.index(after) + 1:]
    return _page(items[:limit], len(items) > limit)


@router.get("/{eval_id}/runs/{run_id}/output_items/{item_id}", summary="Retrieve an output item")
def retrieve_output_item(eval_id: str, run_id: str, item_id: str, store: Store = Depends(get_store),
                         settings: Settings = Depends(get_settings)) -> dict[str, Any]:
    row = _run_row(store, eval_id, run_id)
    for item in read_output_items(settings, store, row.get("result") or {}):
        if item["id"] == item_id:
            return item
    raise not_found("output item", item_id, param="output_item_id")
