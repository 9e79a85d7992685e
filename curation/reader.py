"""Streaming reader: raw records out of .jsonl, .jsonl.gz and .json (one array) files, in bounded memory."""

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


def open_binary(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(stream of the file's bytes, the file on disk); the second's tell() measures progress."""
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, not a dataset file")
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot open ({exc.strerror})") from exc
    if path.suffix.lower() == ".gz":
        return gzip.GzipFile(fileobj=raw), raw  # type: ignore[return-value]
    return raw, raw


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


def iter_json_array(stream: IO[bytes], path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (1-based index, item) for the items of one top-level JSON array, streamed with ijson."""
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
    try:
        for item in ijson.items(stream, "item", use_float=True):
            record += 1
            yield record, item
    except ijson.JSONError as exc:
        raise InputFileError(f"{path}: invalid JSON after record {record}: {exc}") from exc


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
