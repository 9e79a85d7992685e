"""Job kinds: the built-in ones, plugins named in the settings, and loading a kind's worker function."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from assay.api.jobs.kind import DEFAULT_POOL, JobKind, JobRequest, JobServices

if TYPE_CHECKING:
    from assay.api.jobs.context import JobContext

JobFunction = Callable[["JobContext"], dict[str, Any]]

# One line per built-in kind: "module:ATTRIBUTE" naming a JobKind (or a list of them). Plugins use the same
# form in ASSAY_JOB_KINDS, so a new kind is one module plus one line here or there.
BUILTIN_JOB_KINDS: tuple[str, ...] = (
    "assay.api.jobs.curation:CURATION_JOBS",
    "assay.api.jobs.fine_tuning:FINE_TUNING_JOBS",
    "assay.api.jobs.eval_run:EVAL_RUNS",
    "assay.api.jobs.benchmark:BENCHMARK_JOBS",
    "assay.api.cycles.jobs:CYCLE_RUNS",
)


class JobKindError(ValueError):
    """A job kind reference that cannot be loaded, or two kinds with one name or one route prefix."""


def _resolve(reference: str) -> list[JobKind]:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise JobKindError(f"job kind reference must be 'module:ATTRIBUTE', got {reference!r}")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise JobKindError(f"cannot load job kind {reference!r}: {exc}") from exc
    kinds = list(value) if isinstance(value, (list, tuple)) else [value]
    for kind in kinds:
        if not isinstance(kind, JobKind):
            raise JobKindError(f"{reference!r} is not a JobKind (got {type(kind).__name__})")
    return kinds


def load_job_kinds(plugins: Iterable[str] = ()) -> dict[str, JobKind]:
    """The built-in kinds plus plugins, by name; names and route prefixes must be unique."""
    kinds: dict[str, JobKind] = {}
    for reference in (*BUILTIN_JOB_KINDS, *plugins):
        for kind in _resolve(reference):
            if kind.name in kinds:
                raise JobKindError(f"two job kinds are named {kind.name!r}")
            if any(other.path == kind.path for other in kinds.values()):
                raise JobKindError(f"two job kinds use the route {kind.path}")
            kinds[kind.name] = kind
    return kinds


def load_job_function(target: str) -> JobFunction:
    module_name, _, attribute = target.partition(":")
    function: JobFunction = getattr(importlib.import_module(module_name), attribute)
    return function


__all__ = ["BUILTIN_JOB_KINDS", "DEFAULT_POOL", "JobKind", "JobKindError", "JobRequest", "JobServices",
           "load_job_function", "load_job_kinds"]
