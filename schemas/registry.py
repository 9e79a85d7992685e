"""The registry of curation steps. The spec's step names and sections, the report's sections, the
pipeline's step classes and the flags of `assay curate` all derive from it.

A step is registered by one line here: the module that declares it (as `STEP`). The order is the
default order of `steps`. Validation is not listed: it is the pipeline's source and always comes first.
"""

from __future__ import annotations

import importlib

from assay.schemas.step import StepDeclaration

STEP_MODULES: tuple[str, ...] = (
    "assay.schemas.pii",
    "assay.schemas.length_filter",
    "assay.schemas.dedup",
    "assay.schemas.balance",
)


def _declared(module: str) -> StepDeclaration:
    step = getattr(importlib.import_module(module), "STEP", None)
    if not isinstance(step, StepDeclaration):
        raise TypeError(f"{module} is registered as a curation step but has no STEP = StepDeclaration(...)")
    return step


STEPS: tuple[StepDeclaration, ...] = tuple(_declared(module) for module in STEP_MODULES)


def step_names() -> tuple[str, ...]:
    return tuple(step.name for step in STEPS)


def default_steps() -> list[str]:
    return ["validate", *(step.name for step in STEPS if step.default)]


def declaration(name: str) -> StepDeclaration:
    """The registered step called `name`; KeyError names the registered ones."""
    for step in STEPS:
        if step.name == name:
            return step
    raise KeyError(f"no curation step '{name}' is registered (registered: {', '.join(step_names())})")


def check_registry(steps: tuple[StepDeclaration, ...]) -> None:
    """Names, sections and flags must be unique across steps."""
    seen: dict[str, str] = {}
    for step in steps:
        for key in (f"step {step.name}", *(f"flag {flag.flag}" for flag in step.flags)):
            if key in seen:
                raise ValueError(f"{key} is registered twice ({seen[key]} and {step.name})")
            seen[key] = step.name


check_registry(STEPS)
