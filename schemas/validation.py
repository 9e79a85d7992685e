"""Settings and results of the validation step."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from assay.schemas.errors import RecordError
from assay.schemas.records import RecordFormat


class ValidateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: RecordFormat | None = Field(None, description="Input format; None detects it from the first records.")
    max_line_bytes: int = Field(1 << 20, gt=0, description="Lines longer than this are rejected unread.")
    max_depth: int = Field(
        256, gt=0, le=1000,
        description="Records nested deeper than this many levels (the record itself is level 1) are rejected "
                    "as too_deep, in bounded memory; at most 1000, below Python's recursion limit, so no "
                    "later step can overflow it.")
    max_expanded_bytes: int | None = Field(
        None, gt=0, description="A compressed (.gz) file that expands to more than this many bytes is refused as "
                                "a whole, after reading only that much (decompression bombs); None: no limit. "
                                "The server applies its own limit to uploads (ASSAY_MAX_EXPANDED_BYTES).")
    detect_records: int = Field(100, gt=0, description="How many leading records format detection looks at.")
    require_assistant: bool = Field(True, description="Reject chat records without an assistant turn.")
    reject_duplicate_ids: bool = Field(True, description="Reject a record whose `id` was already seen.")
    split: str | None = Field(
        None, description="For a Hugging Face dataset folder (`data/<split>-*.parquet`): the split to read; "
                          "unset reads `train`, or the only split there is.")


class ValidationSummary(BaseModel):
    path: str
    format: RecordFormat | None
    format_detected: bool
    format_note: str = ""
    prompt_only: bool = False
    lines_read: int = 0
    records_read: int = 0
    valid: int = 0
    rejected: int = 0
    blank: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    warnings: dict[str, int] = Field(
        default_factory=dict, description="Lines read despite a flaw, by kind: blank_line, bom (a UTF-8 byte order "
                                          "mark), crlf (Windows line ends).")
    errors_by_code: dict[str, int] = Field(default_factory=dict)
    first_errors: list[RecordError] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rejected == 0
