"""The FastAPI application: wiring of store, runner, auth and routes, and the startup/shutdown sequence."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi

from assay.api.artifacts import DataDirLock, clear_folder
from assay.api.auth import KeyRing, RateLimiter, hash_key
from assay.api.errors import install_error_handlers
from assay.api.jobs import JobKind, load_job_kinds
from assay.api.model_server import catalog_router
from assay.api.routes import cycles, evals, files, health, models, reports
from assay.api.routes.files import COMMON_ERRORS, NOT_FOUND
from assay.api.routes.jobs import job_router
from assay.api.runner import Runner
from assay.api.serving import ServiceCatalog
from assay.api.settings import Settings
from assay.api.store import Store
from assay.api.upload_check import UploadChecker

log = logging.getLogger("assay.api")
API_VERSION = "1.0.0"


def _lifespan(settings: Settings, kinds: dict[str, JobKind], catalog: ServiceCatalog) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.make_dirs()
        lock = DataDirLock(settings.data_dir)
        lock.acquire()
        store = Store(settings.db_url)
        store.create_schema()
        clear_folder(settings.tmp_dir)  # partial uploads of a server that died
        clear_folder(settings.jobs_dir)  # work folders of jobs that cannot continue
        keyring = KeyRing(store, frozenset(hash_key(k) for k in settings.api_keys))
        keyring.load_now()
        checker = UploadChecker(settings)
        checker.warm_up()
        runner = Runner(settings, store, kinds)
        runner.start()
        catalog.bind(store)
        scheduler = _cycle_scheduler(settings, store, runner, kinds)
        app.state.settings = settings
        app.state.store = store
        app.state.keyring = keyring
        app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        # Failed logins per client address: `auth_failures_per_min` per minute, the same as a burst.
        app.state.auth_failures = RateLimiter(settings.auth_failures_per_min / 60.0, settings.auth_failures_per_min)
        app.state.upload_checker = checker
        app.state.runner = runner
        app.state.catalog = catalog
        log.info("assay server ready: data in %s, worker pools %s, API keys %s", settings.data_dir,
                 ", ".join(f"{pool}={settings.pool_size(pool)}" for pool in runner.pools),
                 "required" if keyring.enabled_cached else "off (loopback only)")
        try:
            yield
        finally:
            catalog.close()
            if scheduler is not None:
                scheduler.stop()
            runner.stop()
            checker.shutdown()
            store.dispose()
            lock.release()

    return lifespan


def _cycle_scheduler(settings: Settings, store: Store, runner: Runner, kinds: dict[str, JobKind]) -> Any:
    """The thread that queues scheduled cycle runs (api/cycles/scheduler.py); None when turned off."""
    from assay.api.cycle_store import CycleStore
    from assay.api.cycles.jobs import CYCLE_RUNS, queue_run
    from assay.api.cycles.scheduler import CycleScheduler

    if settings.cycle_poll_s <= 0 or CYCLE_RUNS.name not in kinds:
        return None

    def enqueue(name: str, trigger: str) -> None:
        queue_run(store, name, trigger)
        runner.wake(CYCLE_RUNS.name)

    scheduler = CycleScheduler(CycleStore(store), enqueue, poll_s=settings.cycle_poll_s,
                               missed_grace_s=settings.cycle_missed_grace_s)
    scheduler.start()
    return scheduler


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        # Invalid requests answer 400 in the error shape, never FastAPI's default 422 body.
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        from pydantic.json_schema import models_json_schema

        from assay.schemas.report import QualityReport

        _, extra = models_json_schema([(QualityReport, "serialization")],
                                      ref_template="#/components/schemas/{model}")
        for name, definition in extra.get("$defs", {}).items():
            components.setdefault(name, definition)
        app.openapi_schema = schema
        return schema

    return build


async def _security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def create_app(settings: Settings) -> FastAPI:
    kinds = load_job_kinds(settings.job_kind_plugins)
    catalog = ServiceCatalog(settings)
    app = FastAPI(title="Assay API", version=API_VERSION, lifespan=_lifespan(settings, kinds, catalog),
                  description="Upload datasets, curate them (validate, PII, dedup, balance), fine-tune models on "
                              "them, serve and evaluate the results, and read the reports. Files, fine-tuning jobs, "
                              "models, chat completions and evals follow the OpenAI API, so the `openai` SDK works "
                              "against `/v1`.")
    install_error_handlers(app)
    app.middleware("http")(_security_headers)
    for module in (health, files, reports, models, evals, cycles):
        app.include_router(module.router)
    app.include_router(catalog_router(catalog, standalone=False), responses={**COMMON_ERRORS, **NOT_FOUND})
    for kind in kinds.values():
        if kind.routes:
            app.include_router(job_router(kind))
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
