"""Validation of an uploaded dataset, run in a separate process so the event loop stays responsive."""

from __future__ import annotations

import os
from typing import Any

from assay.api.process import become_server_child


def check_upload(path: str, display_name: str) -> dict[str, Any]:
    """`{"summary": ValidationSummary as JSON}` or `{"error": message}` for a file that is unreadable as a whole.

    Messages name the file by the name the client gave, never by its path on the server.
    """
    from assay.curation.validate import InputFileError, validate_file

    try:
        summary = validate_file(path)
    except InputFileError as exc:
        return {"error": str(exc).replace(path, display_name)}
    data = summary.model_dump(mode="json")
    data["path"] = display_name
    data["format_note"] = str(data.get("format_note", "")).replace(path, display_name)
    return {"summary": data}


def _preload() -> int:
    import assay.curation.validate  # noqa: F401

    return os.getpid()


class UploadChecker:
    """A small process pool for upload validation; rebuilt if one of its processes dies."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = self._new_pool()

    def _new_pool(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=become_server_child, initargs=(os.getpid(),))

    async def check(self, path: str, display_name: str) -> dict[str, Any]:
        import asyncio
        from concurrent.futures.process import BrokenProcessPool

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, check_upload, path, display_name)
        except BrokenProcessPool:
            self._pool = self._new_pool()
            return await loop.run_in_executor(self._pool, check_upload, path, display_name)

    def warm_up(self) -> None:
        """Start the pool's processes now, so the first upload does not pay for it."""
        for future in [self._pool.submit(_preload) for _ in range(self.workers)]:
            future.result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
