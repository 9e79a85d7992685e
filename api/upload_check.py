"""Validation of an uploaded dataset, in worker processes so the event loop stays responsive.

Two lanes, so a small upload never waits behind a big one: files whose data is at most `small_upload_bytes`
go to a lane of their own (one process); everything else to the bulk lane (`validation_workers` processes).
A gzip file's expanded size is read from its trailer; a file that lies about it (or holds several gzip
members) is cut off in the small lane after `small_upload_bytes` and finished in the bulk lane, where the
server's `max_expanded_bytes` bounds what any upload may expand to.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from assay.api.process import become_server_child
from assay.api.settings import Settings


def check_upload(path: str, display_name: str, max_expanded_bytes: int, spill_over: bool = False) -> dict[str, Any]:
    """`{"summary": ValidationSummary as JSON}`, `{"error", "status", "code"}` for a file that is unreadable
    as a whole, or `{"spill_over": True}` when `spill_over` is set and the file expands past the limit.

    Messages name the file by the name the client gave, never by its path on the server.
    """
    from assay.curation.reader import ExpandedSizeError
    from assay.curation.validate import InputFileError, validate_file
    from assay.schemas.validation import ValidateConfig

    try:
        summary = validate_file(path, ValidateConfig(max_expanded_bytes=max_expanded_bytes))
    except ExpandedSizeError as exc:
        if spill_over:
            return {"spill_over": True}
        return {"status": 413, "code": "expanded_too_large",
                "error": f"'{display_name}' expands to more than {exc.limit} bytes when decompressed, this "
                         "server's limit for compressed uploads (ASSAY_MAX_EXPANDED_BYTES); upload it in parts."}
    except InputFileError as exc:
        return {"status": 400, "code": "invalid_file", "error": str(exc).replace(path, display_name)}
    _redact_errors(summary.first_errors)
    data = summary.model_dump(mode="json")
    data["path"] = display_name
    data["format_note"] = str(data.get("format_note", "")).replace(path, display_name)
    return {"summary": data}


_PATTERN_ENGINE: Any = None


def _redact_errors(errors: list[Any]) -> None:
    """Error messages quote what they reject (a role, an id, a key): identifiers in them are redacted
    before the summary is stored or shown. Patterns only (e-mails, phones, cards, ...): a spaCy model
    per upload worker would cost seconds and the messages hold values, not prose."""
    global _PATTERN_ENGINE
    if not errors:
        return
    from assay.curation.pii import scrub_value
    from assay.curation.pii_engine import PiiEngine
    from assay.schemas.pii import PiiConfig

    if _PATTERN_ENGINE is None:
        _PATTERN_ENGINE = PiiEngine(PiiConfig(nlp_engine="patterns", profile="strict"))
    for error in errors:
        error.message = str(scrub_value(_PATTERN_ENGINE, error.message)[0])
        if error.field:
            error.field = str(scrub_value(_PATTERN_ENGINE, error.field)[0])


def expected_size(path: Path) -> int:
    """The bytes a validator will read: the file's size, or for gzip the larger of that and the size its
    trailer states (modulo 2**32, and only for the last member: a hint, which the small lane enforces)."""
    size = path.stat().st_size
    if not path.name.endswith(".gz") or size < 18:
        return size
    with path.open("rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return max(size, int.from_bytes(handle.read(4), "little"))


def _preload() -> int:
    import assay.curation.validate  # noqa: F401

    return os.getpid()


class _Lane:
    """A small process pool, rebuilt if one of its processes dies."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = self._new_pool()

    def _new_pool(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=become_server_child, initargs=(os.getpid(),))

    async def run(self, *args: Any) -> dict[str, Any]:
        from concurrent.futures.process import BrokenProcessPool

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, check_upload, *args)  # type: ignore[no-any-return]
        except BrokenProcessPool:
            self.pool = self._new_pool()
            return await loop.run_in_executor(self.pool, check_upload, *args)  # type: ignore[no-any-return]


class UploadChecker:
    """Validates uploads in two lanes (small, bulk); see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.small_bytes = settings.small_upload_bytes
        self.max_expanded = settings.max_expanded_bytes
        self.small = _Lane(1) if self.small_bytes else None
        self.bulk = _Lane(settings.validation_workers)

    async def check(self, path: str, display_name: str) -> dict[str, Any]:
        if self.small is not None and await run_in_threadpool(expected_size, Path(path)) <= self.small_bytes:
            checked = await self.small.run(path, display_name, min(self.small_bytes, self.max_expanded), True)
            if not checked.get("spill_over"):
                return checked
        return await self.bulk.run(path, display_name, self.max_expanded)

    def warm_up(self) -> None:
        """Start the lanes' processes now, so the first upload does not pay for it."""
        for lane in (self.small, self.bulk):
            if lane is not None:
                for future in [lane.pool.submit(_preload) for _ in range(lane.workers)]:
                    future.result()

    def shutdown(self) -> None:
        for lane in (self.small, self.bulk):
            if lane is not None:
                lane.pool.shutdown(wait=True, cancel_futures=True)
