"""The validation summary: rejected records in the shape every rejects file uses, and the counts that
become the `ValidationSummary` of a file."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from assay.curation.reader import RawLine
from assay.schemas.errors import RecordError
from assay.schemas.validation import ValidationSummary

MAX_FIRST_ERRORS = 20


@dataclass(slots=True)
class Rejected:
    """An input record that failed validation, with its raw text (as read) and the error."""

    raw: RawLine
    error: RecordError
    record_id: str

    def to_json(self) -> dict[str, Any]:
        """The shape every rejects file uses: id, step, reason, message, details, raw."""
        data = self.raw.data
        out: dict[str, Any] = {
            "id": self.record_id,
            "step": "validate",
            "reason": self.error.code.value,
            "message": self.error.message,
            "details": self.error.model_dump(exclude_none=True, exclude={"code", "message"}, mode="json"),
        }
        if self.raw.parsed:
            out["raw"] = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        else:
            try:
                out["raw"] = data.decode("utf-8")
            except UnicodeDecodeError:
                out["raw"] = data.decode("utf-8", errors="replace")
                out["raw_bytes_replaced"] = True
            if self.raw.too_long:
                out["raw_truncated"] = True
        return out


class Tally:
    """Counts of one file's validation as it goes; `fill` writes them into its summary."""

    def __init__(self, summary: ValidationSummary) -> None:
        self.summary = summary
        self.started = time.perf_counter()
        self.warnings: Counter[str] = Counter()  # blank_line, bom, crlf
        self.errors: Counter[str] = Counter()  # rejections by error code
        self.checked_valid = 0  # valid records that went through the full check

    def reject(self, error: RecordError, raw: RawLine, record_id: str) -> Rejected:
        error.line = raw.line
        error.record = raw.record
        self.errors[error.code.value] += 1
        if len(self.summary.first_errors) < MAX_FIRST_ERRORS:
            self.summary.first_errors.append(error)
        return Rejected(raw, error, record_id)

    def fill(self, fast_valid: int, rejected: int, lines_read: int, bytes_read: int) -> None:
        """Bring the summary up to date: `fast_valid` lines were vouched for without the full check, and
        `rejected` more records were rejected since the last call."""
        summary = self.summary
        summary.valid = self.checked_valid + fast_valid
        summary.rejected += rejected
        summary.records_read = summary.valid + summary.rejected
        summary.lines_read = lines_read
        summary.blank = self.warnings.get("blank_line", 0)
        summary.seconds = time.perf_counter() - self.started
        summary.bytes_read = bytes_read
        summary.warnings = dict(self.warnings)
        summary.errors_by_code = dict(self.errors)
