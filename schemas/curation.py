"""The curation spec: which steps run, in which order, with which parameters.

Its step names and one section per step come from the registry (schemas/registry.py), so a new step
adds its section here without an edit. Type checkers see the fixed fields only; code reads a step's
section with `spec.section(name)` (or `getattr`), which is what the pipeline does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from assay.schemas import registry
from assay.schemas.validation import ValidateConfig

if TYPE_CHECKING:
    StepName = str
else:
    StepName = Literal[("validate", *registry.step_names())]


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer: str | None = Field(
        None, description="Tokenizer (local path or hub id) for token-length distributions; characters only if unset.")


class _SpecHead(BaseModel):
    """The fields every spec has before the step sections: the steps, the batch size, validation."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    steps: list[StepName] = Field(default_factory=registry.default_steps,
                                  description="Steps in the order they run; validate always runs first.")
    batch_size: int = Field(512, gt=0, description="Records per batch handed to each step.")
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")


def _step_sections() -> dict[str, Any]:
    return {step.name: (step.config, Field(default_factory=step.config)) for step in registry.STEPS}


if TYPE_CHECKING:
    _WithStepSections = _SpecHead
else:
    _WithStepSections = create_model("_WithStepSections", __base__=_SpecHead, **_step_sections())


class CurationSpec(_WithStepSections):
    """Loadable from YAML; every parameter has a default; unknown keys are errors naming the key."""

    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("steps")
    @classmethod
    def _validate_first_and_unique(cls, steps: list[str]) -> list[str]:
        if len(set(steps)) != len(steps):
            raise ValueError("a step is listed twice")
        return ["validate", *[s for s in steps if s != "validate"]]

    def section(self, name: str) -> BaseModel:
        """The settings of the step called `name`."""
        value = getattr(self, name, None) if name in registry.step_names() else None
        if not isinstance(value, BaseModel):
            raise KeyError(f"the spec has no section for a step called '{name}'")
        return value

    @classmethod
    def from_yaml(cls, path: str | Path) -> CurationSpec:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the spec must be a YAML mapping, got {type(data).__name__}")
        return cls.model_validate(data)
