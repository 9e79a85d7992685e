"""Line reading for validation: every record of a file, parsed, with blank lines, BOMs and CRLFs counted
as warnings, and lines that are too long, too deep or not JSON turned into errors."""

from __future__ import annotations

import contextlib
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from assay.curation.reader import (
    BOM,
    TOO_DEEP,
    InputFileError,
    is_json_array_file,
    iter_json_array,
    iter_jsonl_blocks,
    open_binary,
    sniff_jsonl_container,
)
from assay.curation.validate_checks import too_deep
from assay.schemas.errors import ErrorCode, RecordError
from assay.schemas.validation import ValidateConfig

Parsed = tuple[int | None, int, Any, Any, "RecordError | None"]
"""(line, record, raw data, parsed object, error) for one input record; `line` is None in .json arrays."""

TOO_LONG = object()
"""Stands in for the parsed object of a line cut at the size limit."""

READ_ERRORS = (OSError, EOFError, zlib.error)
"""What a damaged file raises while read: gzip CRC and header errors, a truncated gzip stream (EOFError),
corrupt deflate data (zlib.error), EIO."""


class LineReader:
    """Reads one file's records in order; `records()` yields them parsed.

    `fast`, when set, is a check that vouches for a JSONL line as surely valid: such lines are only
    counted (`fast_valid`), never parsed to dicts or yielded.
    """

    def __init__(self, path: Path, config: ValidateConfig, warnings: Counter[str], block_bytes: int = 1 << 22,
                 on_progress: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.config = config
        self.warnings = warnings
        self.block_bytes = block_bytes
        self.on_progress = on_progress
        self.fast: Callable[[bytes], bool] | None = None
        self.fast_valid = 0
        self.lines_read = 0
        self._sniffed = False  # the first non-blank line was checked for a pretty-printed container
        self._disk: IO[bytes] | None = None
        self._stream: IO[bytes] | None = None

    def records(self) -> Iterator[Parsed]:
        """Every non-blank input record, parsed."""
        stream, disk = open_binary(self.path, self.config.max_expanded_bytes)
        self._stream, self._disk = stream, disk
        if is_json_array_file(self.path):
            return self._array_items(stream, disk)
        return self._jsonl_records(stream, disk)

    def bytes_read(self) -> int:
        disk = self._disk
        if disk is None:
            return 0
        if disk.closed:
            return self.path.stat().st_size
        return disk.tell()

    def _read_error(self, exc: BaseException) -> InputFileError:
        """One line naming the file, where reading stopped, and why."""
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        where = f"byte {self.bytes_read():,}"
        stream = self._stream
        if stream is not None and stream is not self._disk:  # compressed: say how far the data got too
            with contextlib.suppress(OSError, ValueError, EOFError):
                where += f" of the compressed file ({stream.tell():,} bytes of data read)"
        if self.lines_read:
            where += f", after line {self.lines_read}"
        if isinstance(exc, EOFError):
            reason = f"the file is truncated ({reason})"
        return InputFileError(f"{self.path}: read error at {where}: {reason}")

    # Each reader closes the file and turns read errors into one clear error itself: a wrapping
    # generator would cost a step per record.
    def _array_items(self, stream: IO[bytes], disk: IO[bytes]) -> Iterator[Parsed]:
        max_depth = self.config.max_depth
        try:
            for record, item in iter_json_array(stream, self.path, max_depth):
                self.lines_read = record
                if item is TOO_DEEP:
                    yield None, record, b"", TOO_DEEP, too_deep(max_depth)
                else:
                    yield None, record, item, item, None
        except READ_ERRORS as exc:
            raise self._read_error(exc) from exc
        finally:
            stream.close()
            disk.close()

    def _jsonl_records(self, stream: IO[bytes], disk: IO[bytes]) -> Iterator[Parsed]:
        warnings = self.warnings
        try:
            for start, lines, cut in iter_jsonl_blocks(stream, self.config.max_line_bytes, self.block_bytes):
                fast = self.fast
                if fast is None or cut or not self._sniffed:
                    for number, line in enumerate(lines, start):
                        yield from self._line_items(number, line, cut)
                else:
                    # The hot loop: lines the fast check vouches for are only counted, never yielded.
                    vouched = crlf = 0
                    for number, line in enumerate(lines, start):
                        if fast(line):
                            vouched += 1
                            if line.endswith(b"\r"):
                                crlf += 1
                        else:
                            self.fast_valid += vouched
                            vouched = 0
                            yield from self._line_items(number, line, cut)
                    self.fast_valid += vouched
                    if crlf:
                        warnings["crlf"] += crlf
                self.lines_read = start + len(lines) - 1
                if self.on_progress is not None:
                    self.on_progress(self.bytes_read())
        except READ_ERRORS as exc:
            raise self._read_error(exc) from exc
        finally:
            stream.close()
            disk.close()

    def _line_items(self, number: int, line: bytes, cut: set[int]) -> Iterator[Parsed]:
        """The one line's record, parsed, unless it is blank; warnings counted on the way."""
        self.lines_read = number
        warnings = self.warnings
        if line.endswith(b"\r"):
            warnings["crlf"] += 1
            line = line[:-1]
        if number == 1 and line[:3] == BOM:
            warnings["bom"] += 1
            line = line[3:]
        if cut and number in cut:
            yield number, number, line, TOO_LONG, RecordError(
                code=ErrorCode.line_too_long,
                message=f"line is longer than the limit of {self.config.max_line_bytes} bytes")
            return
        if not line or line.isspace():
            warnings["blank_line"] += 1
            return
        if not self._sniffed:
            self._sniffed = True
            sniff_jsonl_container(line, self.path)
        try:
            yield number, number, line, orjson.loads(line), None
        except orjson.JSONDecodeError as exc:
            yield number, number, line, None, self._syntax_error(line, exc)

    def _syntax_error(self, line: bytes, exc: orjson.JSONDecodeError) -> RecordError:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return RecordError(code=ErrorCode.invalid_utf8, column=uexc.start + 1,
                               message=f"invalid UTF-8 byte at byte {uexc.start + 1}")
        reason = str(exc).split(": line ")[0]
        if reason.startswith("depth limit exceeded"):  # orjson's own ceiling, 1024 levels
            return too_deep(self.config.max_depth)
        return RecordError(code=ErrorCode.invalid_json, column=exc.colno,
                           message=f"invalid JSON at column {exc.colno}: {reason}")
