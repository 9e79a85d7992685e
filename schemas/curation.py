"""The curation spec: which steps run, in which order, with which parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from assay.schemas.balance import BalanceConfig
from assay.schemas.dedup import DedupConfig
from assay.schemas.pii import PiiConfig
from assay.schemas.validation import ValidateConfig

StepName = Literal["validate", "pii", "dedup", "balance"]
ALL_STEPS: tuple[StepName, ...] = ("validate", "pii", "dedup", "balance")


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer: str | None = Field(
        None, description="Tokenizer (local path or hub id) for token-length distributions; characters only if unset.")


class CurationSpec(BaseModel):
    """Loadable from YAML; every parameter has a default; unknown keys are errors naming the key."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    steps: list[StepName] = Field(default_factory=lambda: list(ALL_STEPS))
    batch_size: int = Field(512, gt=0, description="Records per batch handed to each step.")
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    pii: PiiConfig = Field(default_factory=PiiConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("steps")
    @classmethod
    def _validate_first_and_unique(cls, steps: list[str]) -> list[str]:
        if len(set(steps)) != len(steps):
            raise ValueError("a step is listed twice")
        if steps and steps[0] != "validate":
            steps = ["validate", *[s for s in steps if s != "validate"]]
        if not steps:
            steps = ["validate"]
        return steps

    @classmethod
    def from_yaml(cls, path: str | Path) -> CurationSpec:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the spec must be a YAML mapping, got {type(data).__name__}")
        return cls.model_validate(data)
