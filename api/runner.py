"""The job runner: starts worker processes, restarts dead ones, and fails jobs whose worker is gone."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from assay.api.settings import Settings
from assay.api.store import Store
from assay.api.worker import worker_main

log = logging.getLogger("assay.runner")

INTERRUPTED = ("interrupted: the worker process running this job (pid {pid}) stopped before the job finished, "
               "because the server was killed, restarted or shut down; submit the job again")
STALE = "interrupted: the worker running this job sent no heartbeat for {seconds:.0f} s; submit the job again"


def pid_alive(pid: int) -> bool:
    """True for a live process; zombies (exited, not yet reaped) count as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def parse_worker_id(worker_id: str | None) -> tuple[str, int] | None:
    if not worker_id or ":" not in worker_id:
        return None
    host, _, pid = worker_id.rpartition(":")
    return (host, int(pid)) if pid.isdigit() else None


@dataclass
class _Slot:
    process: BaseProcess
    ready: Any


@dataclass
class Runner:
    settings: Settings
    store: Store
    kinds: dict[str, str]
    slots: list[_Slot] = field(default_factory=list)
    _cancel_seen: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._mp = multiprocessing.get_context("spawn")
        # A Semaphore and raw shared bytes, not multiprocessing.Event: Event.set() waits for every sleeper to
        # wake up, so one worker killed while waiting would hang the server for good.
        self._wake: Any = self._mp.Semaphore(0)
        self._stop = self._mp.RawValue("b", 0)
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._host = socket.gethostname()

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        failed = self.reap_orphans()
        if failed:
            log.warning("marked %d interrupted job(s) failed", failed)
        self.slots = [self._spawn() for _ in range(self.settings.workers)]
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="assay-supervisor")
        self._supervisor.start()

    def stop(self, grace_s: float = 3.0) -> None:
        self._stopping.set()
        self._stop.value = 1
        for _ in self.slots:
            self._wake.release()
        deadline = time.monotonic() + grace_s
        for slot in self.slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
        for slot in self.slots:
            if slot.process.is_alive():
                slot.process.terminate()
        for slot in self.slots:
            slot.process.join(5)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(2)
        if self._supervisor is not None:
            self._supervisor.join(5)
        self.reap_orphans()
        self._wake = None  # released now, so the semaphore is unlinked rather than reported as leaked at exit

    def _spawn(self) -> _Slot:
        ready = self._mp.RawValue("b", 0)
        process = self._mp.Process(
            target=worker_main, name="assay-worker", daemon=True,
            args=(self.settings, dict(self.kinds), os.getpid(), self._wake, self._stop, ready))
        process.start()
        return _Slot(process, ready)

    def wake(self) -> None:
        """Tell an idle worker a job is queued (workers also poll the database twice a second)."""
        if self._wake is not None:
            self._wake.release()

    def workers_ready(self) -> int:
        return sum(1 for slot in self.slots if slot.process.is_alive() and slot.ready.value)

    # -- supervision ------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            try:
                self._restart_dead_workers()
                self.reap_orphans()
                self._enforce_cancel_grace()
            except Exception as exc:  # keep supervising through transient database errors
                log.warning("supervisor pass failed: %s", type(exc).__name__)

    def _restart_dead_workers(self) -> None:
        for index, slot in enumerate(self.slots):
            if not slot.process.is_alive() and not self._stopping.is_set():
                log.warning("worker pid %s exited with code %s; starting a new one",
                            slot.process.pid, slot.process.exitcode)
                self.slots[index] = self._spawn()

    def reap_orphans(self) -> int:
        """Fail every running job whose worker process is gone (or silent); returns how many."""
        failed = 0
        now = time.time()
        stale_after = max(15.0, 5 * self.settings.heartbeat_interval_s)
        for job in self.store.running_jobs():
            owner = parse_worker_id(job.get("worker_id"))
            reason: str | None = None
            if owner is not None and owner[0] == self._host and not pid_alive(owner[1]):
                reason = INTERRUPTED.format(pid=owner[1])
            elif now - float(job.get("heartbeat_at") or job.get("started_at") or now) > stale_after:
                reason = STALE.format(seconds=now - float(job.get("heartbeat_at") or now))
            if reason is None:
                continue
            if self.store.finish_job(job["id"], "failed", error={"message": reason, "code": "job_interrupted"},
                                     worker_id=job.get("worker_id")):
                self.store.add_event(job["id"], reason, level="error")
                failed += 1
        return failed

    def _enforce_cancel_grace(self) -> None:
        """A job that ignores its cancel request for `cancel_grace_s` loses its worker process."""
        now = time.monotonic()
        cancelling = {j["id"]: j for j in self.store.running_jobs() if j["status"] == "cancelling"}
        self._cancel_seen = {k: v for k, v in self._cancel_seen.items() if k in cancelling}
        for job_id, job in cancelling.items():
            first_seen = self._cancel_seen.setdefault(job_id, now)
            if now - first_seen < self.settings.cancel_grace_s:
                continue
            owner = parse_worker_id(job.get("worker_id"))
            slot = next((s for s in self.slots if owner and s.process.pid == owner[1]), None)
            if slot is None:
                continue
            slot.process.kill()
            slot.process.join(5)
            if self.store.finish_job(job_id, "cancelled", worker_id=job.get("worker_id")):
                self.store.add_event(job_id, "job cancelled (its worker was stopped)", level="warning")
