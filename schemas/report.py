"""The quality report: one model, rendered as JSON, HTML and Markdown."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, create_model

from assay.schemas import registry
from assay.schemas.validation import ValidationSummary


class StepFunnel(BaseModel):
    """What one step received, kept and dropped (per reason)."""

    step: str
    records_in: int = 0
    kept: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    changed: int = 0
    added: int = 0
    seconds: float = 0.0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class LengthStats(BaseModel):
    """Distribution of a length (characters or tokens) for one role."""

    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: int = 0
    histogram: list[int] = Field(default_factory=list)
    bin_edges: list[float] = Field(default_factory=list)


class LengthSection(BaseModel):
    unit: str = "characters"
    tokenizer: str | None = Field(default=None, description="The tokenizer that counted, when unit is tokens.")
    before: dict[str, LengthStats] = Field(default_factory=dict)
    after: dict[str, LengthStats] = Field(default_factory=dict)


class DropExample(BaseModel):
    id: str
    step: str
    reason: str
    message: str = Field(default="", description="Why the record was dropped, in words (the step's message).")
    preview: str
    details: dict[str, Any] = Field(default_factory=dict)


class _ReportHead(BaseModel):
    """The report's fields before the step sections."""

    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    input_path: str
    output_dir: str
    steps: list[str]
    spec: dict[str, Any] = Field(default_factory=dict)
    records_in: int = 0
    records_out: int = 0
    seconds: float = 0.0
    funnel: list[StepFunnel] = Field(default_factory=list)
    validation: ValidationSummary | None = None
    lengths: list[LengthSection] = Field(default_factory=list)
    examples: dict[str, list[DropExample]] = Field(default_factory=dict)


def _step_sections() -> dict[str, Any]:
    return {step.name: (step.report | None, None) for step in registry.STEPS if step.report is not None}


# One optional section per registered step that reports one (see schemas/curation.py for the same
# construction of the spec): type checkers see the fixed fields; code reads `report.section(name)`.
if TYPE_CHECKING:
    _WithStepSections = _ReportHead
else:
    _WithStepSections = create_model("_WithStepSections", __base__=_ReportHead, **_step_sections())


class QualityReport(_WithStepSections):
    """What a curation run did: the funnel, validation, lengths, examples, and each step's section."""

    def section(self, name: str) -> BaseModel | None:
        """The report section of step `name`, None when the step did not run (or reports nothing)."""
        value = getattr(self, name, None) if name in registry.step_names() else None
        return value if isinstance(value, BaseModel) else None
