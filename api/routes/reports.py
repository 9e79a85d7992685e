"""/v1/reports/{id}: a job's report (curation quality, training, evaluation, benchmark) as JSON, or as an
HTML page when asked."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from assay.api.auth import authorize
from assay.api.deps import get_settings, get_store
from assay.api.errors import not_found
from assay.api.routes.files import COMMON_ERRORS, NOT_FOUND, stored_path
from assay.api.settings import Settings
from assay.api.store import Store
from assay.schemas.report import QualityReport

REPORT_PURPOSE = "curation-report"
REPORT_PURPOSES = frozenset({REPORT_PURPOSE, "fine-tune-results", "eval-report", "benchmark-report"})

router = APIRouter(prefix="/v1", tags=["reports"], dependencies=[Depends(authorize)], responses=COMMON_ERRORS)


def _wants_html(request: Request, format_: str | None) -> bool:
    if format_ is not None:
        return format_ == "html"
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


def _render_html(json_bytes: bytes) -> str:
    from assay.curation.report import render_html

    return render_html(QualityReport.model_validate_json(json_bytes))


@router.get("/reports/{report_id}", response_class=Response, responses={
    **NOT_FOUND,
    200: {"description": "The report (JSON by default; HTML with `Accept: text/html` or `?format=html`)",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/QualityReport"}},
                      "text/html": {"schema": {"type": "string"}}}}})
async def retrieve_report(request: Request, report_id: str,
                          format: Literal["json", "html"] | None = Query(None),  # noqa: A002 - the public name
                          store: Store = Depends(get_store), settings: Settings = Depends(get_settings)) -> Response:
    row = await run_in_threadpool(store.get_file, report_id)
    if row is None or row["purpose"] not in REPORT_PURPOSES or not row["filename"].endswith(".json"):
        raise not_found("report", report_id, param="report_id")
    path = stored_path(settings, row)
    if not path.is_file():
        raise not_found("report", report_id, param="report_id")
    body = await run_in_threadpool(path.read_bytes)
    if not _wants_html(request, format):
        return Response(body, media_type="application/json")
    html_path = settings.reports_dir / f"{row['id']}.html"
    if html_path.is_file():
        return HTMLResponse(await run_in_threadpool(html_path.read_text, "utf-8"))
    if row["purpose"] != REPORT_PURPOSE:
        raise not_found("HTML report", report_id, param="report_id")
    return HTMLResponse(await run_in_threadpool(_render_html, body))
