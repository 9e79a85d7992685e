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
from assay.schemas.server import ServerModel
from assay.schemas.validation import ValidateConfig

if TYPE_CHECKING:
    StepName = str
else:
    StepName = Literal[("validate", *registry.step_names())]


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer: ServerModel | None = Field(
        None, description="Tokenizer (local path or hub id) for token-length distributions; characters only if unset.")


class _SpecHead(BaseModel):
    """The fields every spec has before the step sections: the steps, the batch size, validation."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    steps: list[StepName] = Field(default_factory=registry.default_steps,
                                  description="Steps in the order they run; validate always runs first.")
    batch_size: int = Field(512, gt=0, description="Records per batch handed to each step.")
    fail_on_empty: bool | None = Field(
        None, description="When no record is left to publish (an empty, blank-only or binary input, or every "
                          "record rejected): true fails the run with `no_valid_records` and publishes nothing; "
                          "false publishes the empty dataset with a warning. Unset: the caller decides -- the "
                          "command line warns (`--fail-on-empty` to fail), the service fails.")
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    output_format: Literal["jsonl", "parquet"] = Field(
        "jsonl", description="Format of the curated set and the rejects: JSON Lines (curated.jsonl, rejected.jsonl) "
                             "or Parquet with zstd (curated.parquet, rejected.parquet; schema in docs/formats.md).")


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
        """The spec in a YAML file; ValueError with one clear line for a file that is not one."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path} is a folder; the spec must be a YAML file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a text file (invalid UTF-8 at byte {exc.start + 1})") from exc
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"{path}: invalid YAML{where}: {exc.problem or exc.context}") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML: {exc}") from exc
        except PermissionError as exc:
            raise ValueError(f"{path}: cannot read ({exc.strerror})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the spec must be a YAML mapping, got {type(data).__name__}")
        return cls.model_validate(data)
