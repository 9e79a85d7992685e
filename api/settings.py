"""Server settings: defaults that need nothing else running, overridable by environment and CLI flags."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_EXPANDED_BYTES = 2 * 1024 * 1024 * 1024
DEFAULT_SMALL_UPLOAD_BYTES = 8 * 1024 * 1024
DEFAULT_JOB_TIMEOUT_S = 6 * 3600.0
DEFAULT_AUTH_FAILURES = 20


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


def _env_mapping(name: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    """`a=1,b=2` from the environment as {"a": 1, "b": 2}."""
    mapping: dict[str, Any] = {}
    for item in os.environ.get(name, "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            mapping[key.strip()] = convert(value.strip())
        except ValueError as exc:
            raise ValueError(f"environment variable {name} must look like 'name=value,name=value', "
                             f"got {item.strip()!r}") from exc
    return mapping


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


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
    pool_sizes: dict[str, int] = field(default_factory=dict)
    """Worker processes per pool other than `default` (whose size is `workers`); unnamed pools get 1."""
    job_kind_plugins: tuple[str, ...] = ()
    """Extra job kinds, "module:ATTRIBUTE" naming a JobKind or a list of them."""
    job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S
    """Wall-clock limit of a running job; past it the job fails with `job_timeout` and its worker is stopped."""
    job_timeouts: dict[str, float] = field(default_factory=dict)
    """Per-kind limits that replace `job_timeout_s`, e.g. {"fine_tuning": 86400}."""
    validation_workers: int = 1
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_expanded_bytes: int = DEFAULT_MAX_EXPANDED_BYTES
    """What a .gz upload may expand to."""
    small_upload_bytes: int = DEFAULT_SMALL_UPLOAD_BYTES
    """Uploads up to this size (expanded) are validated in their own lane, never behind a big one."""
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 200
    auth_failures_per_min: int = DEFAULT_AUTH_FAILURES
    """Requests with a wrong key allowed per client address and minute; past it the address gets 429."""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    insecure: bool = False
    progress_interval_s: float = 0.5
    heartbeat_interval_s: float = 2.0
    cancel_grace_s: float = 10.0
    served_models: tuple[str, ...] = ()
    """Base models the service trains and serves, by registry name (ASSAY_MODELS); empty: every registry model
    that is ready to load without a conversion step."""
    max_loaded_adapters: int = 4
    """Fine-tuned adapters kept loaded for inference; the least recently used one unloads past this."""
    cycle_poll_s: float = 5.0
    """How often the cycle scheduler looks for due ticks; 0 turns the scheduler off."""
    cycle_missed_grace_s: float = 60.0
    """A tick found later than this was missed while no server ran (schedule.missed decides what happens)."""

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Environment first (ASSAY_*), then explicit overrides; None overrides are ignored."""
        base = cls(
            data_dir=Path(os.environ.get("ASSAY_DATA_DIR", "assay-data")),
            database_url=os.environ.get("ASSAY_DATABASE_URL") or None,
            workers=_env_int("ASSAY_WORKERS", 2),
            pool_sizes=_env_mapping("ASSAY_POOLS", int),
            job_kind_plugins=_env_list("ASSAY_JOB_KINDS"),
            job_timeout_s=_env_float("ASSAY_JOB_TIMEOUT_S", DEFAULT_JOB_TIMEOUT_S),
            job_timeouts=_env_mapping("ASSAY_JOB_TIMEOUTS", float),
            validation_workers=_env_int("ASSAY_VALIDATION_WORKERS", 1),
            max_upload_bytes=_env_int("ASSAY_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES),
            max_expanded_bytes=_env_int("ASSAY_MAX_EXPANDED_BYTES", DEFAULT_MAX_EXPANDED_BYTES),
            small_upload_bytes=_env_int("ASSAY_SMALL_UPLOAD_BYTES", DEFAULT_SMALL_UPLOAD_BYTES),
            rate_limit_per_s=_env_float("ASSAY_RATE_LIMIT", 50.0),
            rate_limit_burst=_env_int("ASSAY_RATE_BURST", 200),
            auth_failures_per_min=_env_int("ASSAY_AUTH_FAILURES", DEFAULT_AUTH_FAILURES),
            api_keys=env_api_keys(),
            cancel_grace_s=_env_float("ASSAY_CANCEL_GRACE_S", 10.0),
            served_models=_env_list("ASSAY_MODELS"),
            max_loaded_adapters=_env_int("ASSAY_MAX_LOADED_ADAPTERS", 4),
            cycle_poll_s=_env_float("ASSAY_CYCLE_POLL_S", 5.0),
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
        if self.max_upload_bytes < 1 or self.max_expanded_bytes < 1:
            raise ValueError("the upload size limits must be positive")
        if self.small_upload_bytes < 0:
            raise ValueError("the small-upload size must be >= 0 (0 sends every upload to one lane)")
        for pool, size in self.pool_sizes.items():
            if size < 1:
                raise ValueError(f"pool {pool} needs at least 1 worker, got {size}")
        if self.job_timeout_s <= 0 or any(limit <= 0 for limit in self.job_timeouts.values()):
            raise ValueError("job time limits must be positive (seconds)")
        if self.auth_failures_per_min < 0:
            raise ValueError("the failed-login limit must be >= 0 (0 turns it off)")
        if self.rate_limit_per_s < 0:
            raise ValueError("the rate limit must be >= 0 (0 turns it off)")
        return replace(self, data_dir=Path(self.data_dir).expanduser().resolve())

    def pool_size(self, pool: str) -> int:
        return self.workers if pool == "default" else self.pool_sizes.get(pool, 1)

    def timeout_for(self, kind: str, kind_default: float | None = None) -> float:
        """The kind's limit: ASSAY_JOB_TIMEOUTS, else the kind's own default (fine-tuning: a day), else the
        general limit."""
        return self.job_timeouts.get(kind, kind_default if kind_default is not None else self.job_timeout_s)

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
    def models_dir(self) -> Path:
        """Fine-tuned adapters (and checkpoints) the service serves, one folder per model."""
        return self.data_dir / "models"

    @property
    def training_dir(self) -> Path:
        """Fine-tuning runs in progress and done (outside `jobs_dir`, which a restart clears: a run resumes)."""
        return self.data_dir / "fine_tuning"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    def make_dirs(self) -> None:
        for folder in (self.files_dir, self.reports_dir, self.jobs_dir, self.tmp_dir, self.models_dir,
                       self.training_dir):
            folder.mkdir(parents=True, exist_ok=True)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
