"""FastAPI dependencies: the store, the settings and the runner live on app.state, set by the lifespan."""

from __future__ import annotations

from fastapi import Request

from assay.api.runner import Runner
from assay.api.settings import Settings
from assay.api.store import Store


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_runner(request: Request) -> Runner:
    runner: Runner = request.app.state.runner
    return runner
