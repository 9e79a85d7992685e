"""Server settings: defaults that need nothing else running, overridable by environment and CLI flags."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from exc


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be a number, got {value!r}") from exc


def env_api_keys() -> tuple[str, ...]:
    """Keys from ASSAY_API_KEYS (comma-separated); blanks ignored."""
    return tuple(k.strip() for k in os.environ.get("ASSAY_API_KEYS", "").split(",") if k.strip())


@dataclass(frozen=True)
class Settings:
    """Everything the app, the workers and the CLI agree on. Picklable: workers receive a copy."""

    data_dir: Path = Path("assay-data")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    validation_workers: int = 1
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 200
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    insecure: bool = False
    progress_interval_s: float = 0.5
    heartbeat_interval_s: float = 2.0
    cancel_grace_s: float = 10.0

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Environment first (ASSAY_*), then explicit overrides; None overrides are ignored."""
        base = cls(
            data_dir=Path(os.environ.get("ASSAY_DATA_DIR", "assay-data")),
            database_url=os.environ.get("ASSAY_DATABASE_URL") or None,
            workers=_env_int("ASSAY_WORKERS", 2),
            validation_workers=_env_int("ASSAY_VALIDATION_WORKERS", 1),
            max_upload_bytes=_env_int("ASSAY_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES),
            rate_limit_per_s=_env_float("ASSAY_RATE_LIMIT", 50.0),
            rate_limit_burst=_env_int("ASSAY_RATE_BURST", 200),
            api_keys=env_api_keys(),
        )
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(base, **{k: v for k, v in overrides.items() if v is not None}).checked()

    def checked(self) -> Settings:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.validation_workers < 1:
            raise ValueError("validation workers must be at least 1")
        if self.max_upload_bytes < 1:
            raise ValueError("the upload size limit must be positive")
        if self.rate_limit_per_s < 0:
            raise ValueError("the rate limit must be >= 0 (0 turns it off)")
        return replace(self, data_dir=Path(self.data_dir).expanduser().resolve())

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'assay.db'}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    def make_dirs(self) -> None:
        for folder in (self.files_dir, self.reports_dir, self.jobs_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
