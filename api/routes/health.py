"""Liveness and readiness probes (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from assay.api.deps import get_runner, get_store
from assay.api.models import Health, Readiness
from assay.api.runner import Runner
from assay.api.store import Store

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready"}})
def readyz(store: Store = Depends(get_store), runner: Runner = Depends(get_runner)) -> JSONResponse:
    """The database answers and every worker process is up."""
    database = True
    detail = None
    try:
        store.ping()
    except Exception as exc:
        database = False
        detail = f"database unavailable ({type(exc).__name__})"
    alive, expected = runner.workers_ready(), runner.workers_expected
    if database and alive < expected:
        detail = f"{alive} of {expected} workers ready"
    ready = database and alive == expected
    body = Readiness(status="ready" if ready else "not_ready", database=database, workers_alive=alive,
                     workers_expected=expected, detail=detail)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
