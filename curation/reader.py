"""Streaming reader: raw records out of .jsonl, .jsonl.gz and .json (one array) files, in bounded memory
(tables -- Parquet, CSV, TSV, folders of shards -- are read by `tabular`)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 16


class InputFileError(Exception):
    """The file as a whole cannot be read as a dataset (missing, wrong container, mixed formats)."""

    code = "invalid_file"  # the error code the service reports


class ExpandedSizeError(InputFileError):
    """A compressed file expands past the allowed size: a decompression bomb, or simply too big."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(f"{path}: expands to more than {limit} bytes when decompressed "
                         "(validate.max_expanded_bytes); split it into smaller files")
        self.limit = limit


class _BoundedGzipFile(gzip.GzipFile):
    """A gzip stream that raises ExpandedSizeError once more than `limit` bytes came out of it, so a small
    file cannot make a reader decompress without end; no read returns more than the limit plus one byte."""

    def __init__(self, fileobj: IO[bytes], path: Path, limit: int) -> None:
        super().__init__(fileobj=fileobj)
        self._path, self._limit = path, limit

    def _allowed(self, size: int | None) -> int:
        room = self._limit - self.tell() + 1
        return room if size is None or size < 0 else min(size, room)

    def _checked(self, data: bytes) -> bytes:
        if self.tell() > self._limit:
            raise ExpandedSizeError(self._path, self._limit)
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._checked(super().read(self._allowed(size)))

    def read1(self, size: int = -1) -> bytes:
        return self._checked(super().read1(self._allowed(size)))

    def readline(self, size: int | None = -1) -> bytes:
        return self._checked(super().readline(self._allowed(size)))


@dataclass(slots=True)
class RawLine:
    """One input record as read, kept for rejects.

    `data` is the line's bytes (without the line end) or, for .json arrays, the already parsed item.
    `too_long` marks a line cut at the size limit; `data` then holds only its head.
    """

    line: int | None
    record: int
    data: bytes | Any
    too_long: bool = False
    parsed: bool = False


def is_json_array_file(path: Path) -> bool:
    return path.suffix.lower() == ".json" or path.name.lower().endswith(".json.gz")


def open_binary(path: Path, max_expanded_bytes: int | None = None) -> tuple[IO[bytes], IO[bytes]]:
    """(stream of the file's bytes, the file on disk); the second's tell() measures progress.

    A .gz stream raises ExpandedSizeError past `max_expanded_bytes` of decompressed data (None: no limit).
    """
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, not a dataset file")
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot open ({exc.strerror})") from exc
    if path.suffix.lower() == ".gz":
        if max_expanded_bytes is not None:
            return _BoundedGzipFile(raw, path, max_expanded_bytes), raw  # type: ignore[return-value]
        return gzip.GzipFile(fileobj=raw), raw  # type: ignore[return-value]
    return raw, raw


def check_readable(path: Path, split: str | None = None) -> None:
    """Raise InputFileError when `path` cannot be opened as a dataset file (or folder of shards) at all."""
    if path.is_dir():
        from assay.curation.tabular import dataset_files

        dataset_files(path, split)
        return
    stream, disk = open_binary(path)
    stream.close()
    disk.close()


def iter_jsonl_blocks(stream: IO[bytes], max_line_bytes: int,
                      block_bytes: int = 1 << 22) -> Iterator[tuple[int, list[bytes], set[int]]]:
    """Yield (number of the first line, lines without their newline, numbers of lines cut at the size
    limit) block by block.

    Splitting big blocks is several times faster than readline, and memory stays within one block plus
    one line head however long a line is: a line over the limit keeps only its first `max_line_bytes`.
    """
    number = 1
    pending = b""
    pending_cut = False
    while True:
        block = stream.read(block_bytes)
        if not block:
            break
        lines = block.split(b"\n")
        last = lines.pop()
        if lines:
            lines[0] = pending + lines[0]
            cut: set[int] = set()
            if max(map(len, lines)) > max_line_bytes:
                cut = {number + i for i, line in enumerate(lines) if len(line) > max_line_bytes}
            if pending_cut:
                cut.add(number)
            for n in cut:
                lines[n - number] = lines[n - number][:max_line_bytes]
            yield number, lines, cut
            number += len(lines)
            pending, pending_cut = b"", False
        if not pending_cut:
            pending += last
            if len(pending) > max_line_bytes:
                pending, pending_cut = pending[:max_line_bytes], True
    if pending or pending_cut:
        yield number, [pending], ({number} if pending_cut else set())


TOO_DEEP = object()
"""Stands in for an array item nested deeper than the limit: it was skipped, never built."""


def iter_json_array(stream: IO[bytes], path: Path, max_depth: int = 256) -> Iterator[tuple[int, Any]]:
    """Yield (1-based index, item) for the items of one top-level JSON array, streamed.

    Items are built here from ijson's prefix-free events rather than with `ijson.items`, whose event
    prefixes grow with the nesting: a 100,000-deep array cost 38 s and 10 GB that way. An item nested
    deeper than `max_depth` (the item itself is depth 1) is skipped with a counter, in constant memory,
    and yielded as `TOO_DEEP`.
    """
    import ijson

    head = stream.read(1024)
    body = head.lstrip(BOM).lstrip()
    if not body.startswith(b"["):
        if body.startswith(b"{"):
            raise InputFileError(
                f"{path}: a .json file must hold one JSON array of records; this one starts with an object. "
                "Hint: if it holds one object per line, name it .jsonl."
            )
        raise InputFileError(f"{path}: a .json file must hold one JSON array of records")
    stream.seek(0)  # gzip streams rewind too
    if head.startswith(BOM):
        stream.read(len(BOM))
    record = 0
    events = ijson.basic_parse(stream, use_float=True)
    containers, ends = _CONTAINERS, _ENDS
    try:
        next(events)  # the top-level start_array, checked above
        stack: list[Any] = []  # the open containers of the item being built; stack[0] is the item
        push, pop = stack.append, stack.pop
        top: Any = None  # stack[-1]
        top_is_list = False
        key: Any = None
        new: type | None = None
        # Branches in order of frequency (keys and strings are most events); the loop is the hot path.
        for event, value in events:
            if event == "map_key":
                key = value
            elif event == "string" or ((new := containers.get(event)) is None and event not in ends):
                if top is None:
                    record += 1
                    yield record, value
                elif top_is_list:
                    top.append(value)
                else:
                    top[key] = value
            elif new is not None:
                if len(stack) >= max_depth:
                    _skip_item(events, len(stack) + 1)
                    stack.clear()
                    top = None
                    record += 1
                    yield record, TOO_DEEP
                    continue
                value = new()
                if top is not None:
                    if top_is_list:
                        top.append(value)
                    else:
                        top[key] = value
                push(value)
                top, top_is_list = value, new is list
            else:
                if not stack:
                    break  # the end of the top-level array
                item = pop()
                if stack:
                    top = stack[-1]
                    top_is_list = type(top) is list
                else:
                    top = None
                    record += 1
                    yield record, item
        for _ in events:  # trailing data after the array is an error the parser raises here
            pass
    except ijson.JSONError as exc:
        reason = str(exc).split("\n")[0]
        raise InputFileError(f"{path}: invalid JSON after record {record}: {reason}") from exc


_CONTAINERS: dict[str, type] = {"start_map": dict, "start_array": list}
_ENDS = frozenset(("end_map", "end_array"))


def _skip_item(events: Iterator[tuple[str, Any]], open_containers: int) -> None:
    """Read past the rest of an item without building it: only a count of open containers is kept."""
    for event, _ in events:
        if event in _CONTAINERS:
            open_containers += 1
        elif event in _ENDS:
            open_containers -= 1
            if not open_containers:
                return


def sniff_jsonl_container(first_line: bytes, path: Path) -> None:
    """Turn a .jsonl file that is really pretty-printed JSON into one clear error, not one per line."""
    stripped = first_line.strip()
    if stripped in (b"[", b"[{") or (stripped.startswith(b"[") and not _parses(stripped)):
        raise InputFileError(
            f"{path}: this .jsonl file holds one pretty-printed JSON array, not one JSON object per line. "
            "Hint: rename it to .json (Assay reads a JSON array from .json files), or convert it with "
            "`jq -c '.[]' FILE > FILE.jsonl`."
        )
    if stripped.startswith(b"["):
        raise InputFileError(
            f"{path}: this .jsonl file starts with a JSON array, not a JSON object. "
            "Hint: if the file is one array of records, rename it to .json; else write one object per line."
        )
    if stripped == b"{":
        raise InputFileError(
            f"{path}: records in this .jsonl file span several lines (pretty-printed JSON). "
            "JSON Lines needs each record on one line. Hint: `jq -c . FILE > FILE.jsonl`."
        )


def _parses(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True
