"""Job kinds: a registry from `kind` to the function a worker process runs for it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.api.jobs.context import JobContext

JobFunction = Callable[["JobContext"], dict[str, Any]]

# Targets are "module:function" strings so the registry can be handed to spawned worker processes and the
# heavy modules behind a kind are imported only in the worker that runs one.
JOB_KINDS: dict[str, str] = {
    "curation": "assay.api.jobs.curation:run_curation_job",
}


def register_job_kind(kind: str, target: str) -> None:
    """Add a kind (fine-tuning, evaluation, ...); register before the server starts its workers."""
    if ":" not in target:
        raise ValueError(f"job target must be 'module:function', got {target!r}")
    JOB_KINDS[kind] = target


def load_job_function(target: str) -> JobFunction:
    module_name, _, attribute = target.partition(":")
    function: JobFunction = getattr(importlib.import_module(module_name), attribute)
    return function
