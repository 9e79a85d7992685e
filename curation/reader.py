"""Streaming reader: raw records out of .jsonl, .jsonl.gz and .json (one array) files, in bounded memory."""

from __future__ import annotations

import gzip
import io
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
    """One physical record of the input.

    `data` is the line's bytes (without the line end) or, for .json arrays, the already parsed item.
    `too_long` marks a line cut at the size limit; `data` then holds only its head.
    """

    line: int | None
    record: int
    data: bytes | Any
    crlf: bool = False
    bom: bool = False
    too_long: bool = False
    parsed: bool = False


def is_json_array_file(path: Path) -> bool:
    return path.suffix.lower() == ".json" or path.name.lower().endswith(".json.gz")


def open_binary(path: Path) -> IO[bytes]:
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, not a dataset file")
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot open ({exc.strerror})") from exc
    if path.suffix.lower() == ".gz":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


class ByteCounter(io.RawIOBase):
    """Wraps a file and counts the bytes read from the disk (for progress over compressed input)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n

    def close(self) -> None:
        self.inner.close()
        super().close()


def iter_jsonl(stream: IO[bytes], max_line_bytes: int) -> Iterator[RawLine]:
    """Yield every physical line (blank ones too, as empty data) with its 1-based number."""
    readline = stream.readline
    number = 0
    while True:
        line = readline(max_line_bytes + 1)
        if not line:
            return
        number += 1
        too_long = False
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            too_long = True
            head = line[:max_line_bytes]
            while line and not line.endswith(b"\n"):  # skip the rest of the line in chunks
                line = readline(_CHUNK)
            line = head
        crlf = line.endswith(b"\r\n")
        if line.endswith(b"\n"):
            line = line[:-2] if crlf else line[:-1]
        bom = number == 1 and line.startswith(BOM)
        if bom:
            line = line[3:]
        yield RawLine(number, number, line, crlf=crlf, bom=bom, too_long=too_long)


def iter_json_array(stream: IO[bytes], path: Path) -> Iterator[RawLine]:
    """Yield the items of one top-level JSON array, streamed with ijson."""
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
    chained = io.BufferedReader(_Prepend(head.lstrip(BOM), stream))  # type: ignore[arg-type]
    record = 0
    try:
        for item in ijson.items(chained, "item", use_float=True):
            record += 1
            yield RawLine(None, record, item, parsed=True)
    except ijson.JSONError as exc:
        raise InputFileError(f"{path}: invalid JSON after record {record}: {exc}") from exc


class _Prepend(io.RawIOBase):
    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head = head
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


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
