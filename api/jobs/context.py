"""What a job function gets from the worker: its parameters, progress/events, cancellation, file publishing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.api.artifacts import publish
from assay.api.secret_params import restore_secrets
from assay.api.settings import Settings
from assay.api.store import Store, new_id


class JobCancelled(Exception):
    """Raised inside a job when its cancellation was requested; the worker marks the job cancelled."""


class JobFailed(Exception):
    """An expected failure with a message meant for the user (bad input, missing file)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class JobContext:
    job: dict[str, Any]
    store: Store
    settings: Settings
    worker_id: str
    work_dir: Path
    secrets: list[tuple[list[str | int], str]] = field(default_factory=list, repr=False)
    _last_progress: float = field(default=float("-inf"), init=False)
    _last_cancel_check: float = field(default=float("-inf"), init=False)

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    @property
    def params(self) -> dict[str, Any]:
        """The job's parameters with their secret values (masked in what clients see) put back."""
        return restore_secrets(self.job["params"], self.secrets)

    def event(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        """A user-facing event; must not quote dataset content (events are shown and may be logged)."""
        self.store.add_event(self.job_id, message, level=level, data=data)

    def progress(self, data: dict[str, Any], message: str, *, force: bool = False) -> None:
        """Store progress and a progress event, at most once per `progress_interval_s` unless forced."""
        now = time.monotonic()
        if not force and now - self._last_progress < self.settings.progress_interval_s:
            return
        self._last_progress = now
        self.store.set_progress(self.job_id, data)
        self.store.add_event(self.job_id, message, type_="progress", data=data)

    def check_cancelled(self) -> None:
        now = time.monotonic()
        if now - self._last_cancel_check < self.settings.progress_interval_s:
            return
        self._last_cancel_check = now
        if self.store.cancel_requested(self.job_id):
            raise JobCancelled(self.job_id)

    def should_stop(self) -> bool:
        """`check_cancelled` as a boolean, for loops that stop cleanly themselves (training, evaluation)."""
        try:
            self.check_cancelled()
        except JobCancelled:
            return True
        return False

    def publish_file(self, src: Path, *, filename: str, purpose: str, suffix: str,
                     file_format: str | None = None, file_id: str | None = None) -> str:
        """Move a finished output into the file store and register it; returns its file id."""
        file_id = file_id or new_id("file")
        storage_name = f"{file_id}{suffix}"
        size = src.stat().st_size
        publish(src, self.settings.files_dir / storage_name)
        self.store.insert_file({
            "id": file_id, "filename": filename, "purpose": purpose, "bytes": size, "created_at": time.time(),
            "status": "processed", "format": file_format, "validation": None, "storage_name": storage_name,
            "job_id": self.job_id,
        })
        return file_id
