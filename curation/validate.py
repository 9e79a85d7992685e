"""Streaming validation: every input record ends up valid (normalised to chat) or rejected with a reason.

The validator only wires its parts together, each in its own module with one job:
- reading lines and parsing them (`validate_lines`, over the containers in `reader`),
- detecting the file's format and normalising records to chat (`validate_formats`),
- checking each record (`validate_checks`),
- the summary and the rejects (`validate_summary`).
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.curation.reader import TOO_DEEP, InputFileError, RawLine
from assay.curation.tabular import TableReader, is_tabular
from assay.curation.validate_checks import (
    RecordIds,
    check_chat,
    check_instruction,
    check_prompt_completion,
    check_text,
    fast_chat_check,
    record_checker,
)
from assay.curation.validate_formats import detect_file_format, detect_format, to_chat
from assay.curation.validate_lines import TOO_LONG, LineReader, Parsed
from assay.curation.validate_summary import MAX_FIRST_ERRORS, Rejected, Tally
from assay.schemas.errors import RecordError
from assay.schemas.records import RecordFormat
from assay.schemas.validation import ValidateConfig, ValidationSummary

_DICT = dict


@dataclass
class Validator:
    """Reads one file and yields batches of (valid canonical records, rejections).

    `summary` is filled in as the file is read; it is final once the iterator is exhausted.
    """

    path: Path
    config: ValidateConfig = field(default_factory=ValidateConfig)
    normalise: bool = True
    on_progress: Callable[[int], None] | None = None
    summary: ValidationSummary = field(init=False)
    block_bytes: int = 1 << 22  # read size; tests make it small to cross block boundaries

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        fmt = self.config.format
        self.summary = ValidationSummary(path=str(self.path), format=fmt, format_detected=fmt is None)
        self._tally = Tally(self.summary)
        self._ids = RecordIds(self.path.name.split(".")[0] or "record", self.config.reject_duplicate_ids)
        reader = TableReader if is_tabular(self.path) else LineReader
        self._reader = reader(self.path, self.config, self._tally.warnings, self.block_bytes, self.on_progress)

    def batches(self, batch_size: int = 1024) -> Iterator[tuple[list[dict[str, Any]], list[Rejected]]]:
        tally, summary, config = self._tally, self.summary, self.config
        tally.started = time.perf_counter()
        parsed = self._reader.records()
        head: list[Parsed] = []
        for item in parsed:
            head.append(item)
            if len(head) >= config.detect_records:
                break
        found = detect_file_format([(record, obj if error is None else None) for _, record, _, obj, error in head],
                                   self.path, summary.format)
        summary.format, summary.prompt_only = found.format, found.prompt_only
        summary.format_note = found.note
        require_assistant = config.require_assistant and not summary.prompt_only
        fmt, normalise, ids = summary.format, self.normalise, self._ids
        check = record_checker(fmt, require_assistant, summary.prompt_only, ids, config.max_depth)
        if not normalise and fmt is RecordFormat.chat:
            self._reader.fast = fast_chat_check(require_assistant, ids.seen if config.reject_duplicate_ids else None,
                                                config.max_depth)
        valid: list[dict[str, Any]] = []
        rejected: list[Rejected] = []
        since_flush = 0
        for line, record, raw, obj, error in itertools.chain(head, parsed):
            since_flush += 1
            if error is None:
                error = check(obj, 0 if line is None else len(raw))
            if error is None and normalise:
                rid, error = ids.unique_id(obj, line, record)
                if error is None:
                    valid.append(to_chat(obj, fmt, rid))  # type: ignore[arg-type]
            elif error is None:
                tally.checked_valid += 1
            if error is not None:
                rejected.append(self._reject(line, record, raw, obj, error))
            if since_flush >= batch_size:
                since_flush = 0
                yield self._flush(valid, rejected)
                valid, rejected = [], []
        if valid or rejected:
            yield self._flush(valid, rejected)
        else:
            self._flush(valid, rejected)

    def _reject(self, line: int | None, record: int, raw: Any, obj: Any, error: RecordError) -> Rejected:
        # A too-deep item of a .json array was never built: there is no raw text to keep.
        raw_line = RawLine(line, record, raw, too_long=obj is TOO_LONG or (obj is TOO_DEEP and line is None),
                           parsed=line is None and obj is not TOO_DEEP)
        if isinstance(self._reader, TableReader):
            error.file, error.row = self._reader.locate(record)
        return self._tally.reject(error, raw_line, self._ids.id_of_rejected(obj, line, record))

    def _flush(self, valid: list[dict[str, Any]],
               rejected: list[Rejected]) -> tuple[list[dict[str, Any]], list[Rejected]]:
        reader = self._reader
        self._tally.checked_valid += len(valid)
        self._tally.fill(reader.fast_valid, len(rejected), reader.lines_read, reader.bytes_read())
        return valid, rejected


def validate_file(path: str | Path, config: ValidateConfig | None = None,
                  rejects: Callable[[Rejected], None] | None = None,
                  on_progress: Callable[[int], None] | None = None, block_bytes: int = 1 << 22) -> ValidationSummary:
    """Validate a whole file without keeping records; call `rejects` for each rejected line."""
    validator = Validator(Path(path), config or ValidateConfig(), normalise=False, on_progress=on_progress,
                          block_bytes=block_bytes)
    # Parsed records are freed at once and form no cycles, so the cyclic collector only costs time here
    # (about a fifth of the run on large files); it is switched back on however the loop ends.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _, rejected in validator.batches(4096):
            if rejects is not None:
                for item in rejected:
                    rejects(item)
    finally:
        if was_enabled:
            gc.enable()
    return validator.summary


__all__ = ["MAX_FIRST_ERRORS", "InputFileError", "Rejected", "ValidationSummary", "Validator", "check_chat",
           "check_instruction", "check_prompt_completion", "check_text", "detect_format", "to_chat",
           "validate_file"]
