"""Error codes and the error object every rejected line carries."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel


class ErrorCode(str, Enum):
    invalid_json = "invalid_json"
    not_an_object = "not_an_object"
    unknown_format = "unknown_format"
    format_mismatch = "format_mismatch"
    missing_field = "missing_field"
    wrong_type = "wrong_type"
    invalid_role = "invalid_role"
    empty_content = "empty_content"
    no_assistant_turn = "no_assistant_turn"
    invalid_utf8 = "invalid_utf8"
    line_too_long = "line_too_long"
    duplicate_id = "duplicate_id"
    too_deep = "too_deep"


class RecordError(BaseModel):
    """Why one input record was rejected. `line` is the 1-based line (JSONL) and `record` the 1-based
    record ordinal (the same for JSONL; the array index for .json files, where `line` is None).

    For tables (Parquet, CSV, TSV, folders of shards) `line` is None, `file` names the file (relative to
    the input folder) and `row` the 1-based row in that file; the first part of `field` is the column."""

    code: ErrorCode
    message: str
    line: int | None = None
    record: int | None = None
    column: int | None = None
    field: str | None = None
    file: str | None = None
    row: int | None = None
