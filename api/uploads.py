"""Streaming multipart upload straight to a temporary file on disk, with a size limit and type checks."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from assay.api.errors import APIError

# Client file names only choose among these suffixes; the name itself never reaches the file system.
SUFFIXES: tuple[tuple[str, str], ...] = (
    (".jsonl.gz", ".jsonl.gz"), (".ndjson.gz", ".jsonl.gz"), (".json.gz", ".json.gz"),
    (".jsonl", ".jsonl"), (".ndjson", ".jsonl"), (".json", ".json"), (".parquet", ".parquet"),
)
ALLOWED_CONTENT_TYPES = frozenset({
    "", "application/octet-stream", "application/json", "application/jsonl", "application/x-jsonl",
    "application/x-ndjson", "application/ndjson", "text/plain", "text/jsonl", "text/x-jsonl",
    "application/gzip", "application/x-gzip", "application/vnd.apache.parquet", "application/x-parquet",
})
GZIP_MAGIC = b"\x1f\x8b"
MAX_FIELD_BYTES = 4096
MULTIPART_OVERHEAD = 64 * 1024


def storage_suffix(filename: str) -> str | None:
    lowered = filename.lower()
    for suffix, canonical in SUFFIXES:
        if lowered.endswith(suffix):
            return canonical
    return None


def display_name(raw: str) -> str:
    """The client's file name for display only: last path component, printable, at most 255 chars."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:255] or "upload.jsonl"


@dataclass
class ReceivedUpload:
    temp_path: Path
    size: int
    filename: str
    suffix: str
    content_type: str
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.temp_path.unlink(missing_ok=True)


class _Receiver:
    """python-multipart callbacks: the `file` part goes to disk as it arrives, small fields to memory."""

    def __init__(self, tmp_dir: Path, max_bytes: int) -> None:
        self.tmp_dir = tmp_dir
        self.max_bytes = max_bytes
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.part_name: str | None = None
        self.field_buffer = bytearray()
        self.sink: IO[bytes] | None = None
        self.upload: ReceivedUpload | None = None
        self.fields: dict[str, str] = {}
        self.field_bytes = 0

    def on_part_begin(self) -> None:
        self.headers = {}
        self.part_name = None
        self.field_buffer = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name = b""
        self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise APIError(400, "Every multipart part needs a Content-Disposition name.", code="invalid_multipart")
        self.part_name = name.decode("utf-8", errors="replace")
        if self.part_name != "file":
            return
        if self.upload is not None:
            raise APIError(400, "Send exactly one 'file' part.", param="file", code="too_many_files")
        raw_name = options.get(b"filename", b"").decode("utf-8", errors="replace")
        shown = display_name(raw_name)
        suffix = storage_suffix(shown)
        if suffix is None:
            raise APIError(400, f"Unsupported file name '{shown}': upload a .jsonl, .json, .jsonl.gz, .json.gz "
                                "or .parquet dataset.", param="file", code="unsupported_file_type")
        content_type = self.headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if content_type not in ALLOWED_CONTENT_TYPES:
            raise APIError(415, f"Unsupported content type '{content_type[:60]}' for a dataset file.",
                           param="file", code="unsupported_media_type")
        temp_path = self.tmp_dir / f"upload-{secrets.token_hex(12)}.part"
        self.sink = temp_path.open("xb")
        self.upload = ReceivedUpload(temp_path, 0, shown, suffix, content_type)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part_name == "file" and self.sink is not None and self.upload is not None:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                raise APIError(413, f"File is larger than the upload limit of {self.max_bytes} bytes.",
                               param="file", code="file_too_large")
            self.sink.write(data[start:end])
            return
        self.field_bytes += end - start
        if self.field_bytes > MAX_FIELD_BYTES:
            raise APIError(400, "Form fields other than 'file' are too long.", code="fields_too_large")
        self.field_buffer += data[start:end]

    def on_part_end(self) -> None:
        if self.part_name == "file":
            self.close_sink()
        elif self.part_name is not None:
            self.fields[self.part_name] = self.field_buffer.decode("utf-8", errors="replace")

    def close_sink(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.sink = None


async def receive_upload(request: Request, tmp_dir: Path, max_bytes: int) -> ReceivedUpload:
    """Parse a multipart/form-data body as it streams in; the caller owns (and must discard) the temp file."""
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data" or b"boundary" not in params:
        raise APIError(415, "Send the file as multipart/form-data with a 'file' part and a 'purpose' field.",
                       code="unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise APIError(413, f"File is larger than the upload limit of {max_bytes} bytes.", param="file",
                       code="file_too_large")
    receiver = _Receiver(tmp_dir, max_bytes)
    parser = MultipartParser(params[b"boundary"], {  # type: ignore[arg-type]
        "on_part_begin": receiver.on_part_begin, "on_part_data": receiver.on_part_data,
        "on_part_end": receiver.on_part_end, "on_header_field": receiver.on_header_field,
        "on_header_value": receiver.on_header_value, "on_header_end": receiver.on_header_end,
        "on_headers_finished": receiver.on_headers_finished,
    })
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        if receiver.upload is None:
            raise APIError(400, "Missing the 'file' part.", param="file", code="missing_file")
        if receiver.sink is not None:
            raise APIError(400, "The multipart body ended inside the file part.", param="file",
                           code="invalid_multipart")
    except MultipartParseError as exc:
        _abort(receiver)
        raise APIError(400, f"Malformed multipart body: {str(exc)[:120]}", code="invalid_multipart") from exc
    except BaseException:
        _abort(receiver)
        raise
    receiver.upload.fields = receiver.fields
    return receiver.upload


def _abort(receiver: _Receiver) -> None:
    if receiver.sink is not None:
        receiver.sink.close()
        receiver.sink = None
    if receiver.upload is not None:
        receiver.upload.discard()
