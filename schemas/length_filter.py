"""Settings and report section of the length filter: drop records whose answers are too short or too long."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from assay.schemas.step import CliFlag, StepDeclaration


class LengthFilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(default_factory=lambda: ["assistant"], min_length=1,
                             description="Roles whose turns are measured, joined by blank lines.")
    min_chars: int = Field(1, ge=0, description="Fewest characters (whitespace at the ends not counted).")
    max_chars: int | None = Field(None, gt=0, description="Most characters; None: no upper limit.")
    min_words: int = Field(0, ge=0, description="Fewest words (runs of non-space characters).")
    max_words: int | None = Field(None, gt=0, description="Most words; None: no upper limit.")

    @model_validator(mode="after")
    def _limits_in_order(self) -> LengthFilterConfig:
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) is below min_chars ({self.min_chars})")
        if self.max_words is not None and self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) is below min_words ({self.min_words})")
        return self


class LengthFilterReport(BaseModel):
    roles: list[str] = Field(default_factory=list)
    min_chars: int = 0
    max_chars: int | None = None
    min_words: int = 0
    max_words: int | None = None
    records_in: int = 0
    kept: int = 0
    too_short: int = 0
    too_long: int = 0
    shortest_kept: int | None = Field(None, description="Characters of the shortest measured text kept.")
    longest_kept: int | None = Field(None, description="Characters of the longest measured text kept.")


STEP = StepDeclaration(
    name="length_filter", title="Answer length", config=LengthFilterConfig, report=LengthFilterReport,
    implementation="assay.curation.length_filter:LengthFilterStep", template="length_filter.j2", default=False,
    flags=(CliFlag("--min-chars", "min_chars", "Drop records whose answers have fewer characters."),
           CliFlag("--max-chars", "max_chars", "Drop records whose answers have more characters."),
           CliFlag("--min-words", "min_words", "Drop records whose answers have fewer words.")))
