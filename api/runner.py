"""The job runner: starts worker processes, restarts dead ones, and fails jobs whose worker is gone."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from assay.api.jobs.kind import JobKind
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


RESUME_SUFFIX = "; the job goes back to the queue and resumes from its last checkpoint"
MAX_RESUMES = 3
"""A resumable job is requeued at most this often; then an interruption fails it as for any kind."""
TIMED_OUT = ("job_timeout: the job ran longer than its limit of {limit:g} s (ASSAY_JOB_TIMEOUT_S, or "
             "ASSAY_JOB_TIMEOUTS for this kind) and was stopped")
JOB_ID_BYTES = 64


@dataclass
class _Slot:
    pool: str
    process: BaseProcess
    ready: Any
    current: Any  # shared bytes: the id of the job the worker runs now, empty when idle

    def runs(self, job_id: str) -> bool:
        return bool(self.current.value) and self.current.value.decode() == job_id


def _signal_group(process: BaseProcess, sig: int) -> None:
    """Signal a worker and every process it started (it leads its own process group), or just the worker."""
    if process.pid is None:
        return
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, sig)
            return
    except ProcessLookupError:
        return
    except OSError:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, sig)


@dataclass
class Runner:
    """Worker pools: each job kind names a pool, and a pool's workers claim only that pool's kinds, so a long
    job (training, say, in a pool of one) never delays the jobs of another pool."""

    settings: Settings
    store: Store
    kinds: dict[str, JobKind]
    slots: list[_Slot] = field(default_factory=list)
    _cancel_seen: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._mp = multiprocessing.get_context("spawn")
        self.pools: dict[str, list[str]] = {}
        for kind in self.kinds.values():
            self.pools.setdefault(kind.pool, []).append(kind.name)
        # A Semaphore per pool and raw shared bytes, not multiprocessing.Event: Event.set() waits for every
        # sleeper to wake up, so one worker killed while waiting would hang the server for good.
        self._wake: dict[str, Any] | None = {pool: self._mp.Semaphore(0) for pool in self.pools}
        self._stop = self._mp.RawValue("b", 0)
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._host = socket.gethostname()

    @property
    def workers_expected(self) -> int:
        return sum(self.settings.pool_size(pool) for pool in self.pools)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        failed = self.reap_orphans()
        if failed:
            log.warning("marked %d interrupted job(s) failed", failed)
        self.slots = [self._spawn(pool) for pool in self.pools for _ in range(self.settings.pool_size(pool))]
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="assay-supervisor")
        self._supervisor.start()

    def stop(self, grace_s: float = 3.0) -> None:
        self._stopping.set()
        self._stop.value = 1
        if self._wake is not None:
            for slot in self.slots:
                self._wake[slot.pool].release()
        deadline = time.monotonic() + grace_s
        for slot in self.slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
        for slot in self.slots:
            if slot.process.is_alive():
                _signal_group(slot.process, signal.SIGTERM)
        for slot in self.slots:
            slot.process.join(5)
            if slot.process.is_alive():
                _signal_group(slot.process, signal.SIGKILL)
                slot.process.join(2)
        if self._supervisor is not None:
            self._supervisor.join(5)
        self.reap_orphans()
        self._wake = None  # released now, so the semaphores are unlinked rather than reported as leaked at exit

    def _spawn(self, pool: str) -> _Slot:
        assert self._wake is not None
        ready = self._mp.RawValue("b", 0)
        current = self._mp.RawArray("c", JOB_ID_BYTES)
        targets = {name: self.kinds[name].run for name in self.pools[pool]}
        process = self._mp.Process(
            target=worker_main, name=f"assay-worker-{pool}", daemon=True,
            args=(self.settings, targets, os.getpid(), self._wake[pool], self._stop, ready, current))
        process.start()
        return _Slot(pool, process, ready, current)

    def wake(self, kind: str) -> None:
        """Tell an idle worker of the kind's pool that a job is queued (workers also poll twice a second)."""
        if self._wake is not None and kind in self.kinds:
            self._wake[self.kinds[kind].pool].release()

    def workers_ready(self) -> int:
        return sum(1 for slot in self.slots if slot.process.is_alive() and slot.ready.value)

    # -- supervision ------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            try:
                self._restart_dead_workers()
                self.reap_orphans()
                self._enforce_cancel_grace()
                self._enforce_time_limits()
            except Exception as exc:  # keep supervising through transient database errors
                log.warning("supervisor pass failed: %s", type(exc).__name__)

    def _restart_dead_workers(self) -> None:
        for index, slot in enumerate(self.slots):
            if not slot.process.is_alive() and not self._stopping.is_set():
                log.warning("worker pid %s (pool %s) exited with code %s; starting a new one",
                            slot.process.pid, slot.pool, slot.process.exitcode)
                self.slots[index] = self._spawn(slot.pool)

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
            kind = self.kinds.get(job["kind"])
            if (kind is not None and kind.resumable and job["status"] == "running"
                    and self._resumes(job["id"]) < MAX_RESUMES):
                if self.store.requeue_job(job["id"], worker_id=job.get("worker_id"),
                                          message=reason.split("; submit")[0] + RESUME_SUFFIX):
                    stuck = self._slot_running(job)
                    if stuck is not None:
                        self._stop_worker(stuck, job["id"], clean=False)
                    self.wake(job["kind"])
                continue
            if self.store.finish_job(job["id"], "failed", error={"message": reason, "code": "job_interrupted"},
                                     worker_id=job.get("worker_id"), event=(reason, "error")):
                failed += 1
                stuck = self._slot_running(job)  # silent but alive: stuck in code that holds the GIL
                if stuck is not None:
                    self._stop_worker(stuck, job["id"])
        return failed

    def _slot_running(self, job: dict[str, Any]) -> _Slot | None:
        """This server's worker that runs the job now, if any."""
        owner = parse_worker_id(job.get("worker_id"))
        if owner is None or owner[0] != self._host:
            return None
        return next((s for s in self.slots if s.process.pid == owner[1] and s.runs(job["id"])), None)

    def _resumes(self, job_id: str) -> int:
        """How many times a resumable job went back to the queue (its requeue events)."""
        events, _ = self.store.list_events(job_id, limit=1000, after=None)
        return sum(1 for e in events if e["message"].endswith(RESUME_SUFFIX))

    def _stop_worker(self, slot: _Slot, job_id: str, *, clean: bool = True) -> None:
        """Kill a worker stuck in a job (and whatever it started), clean up after it, start a new one."""
        _signal_group(slot.process, signal.SIGKILL)
        slot.process.join(5)
        if clean:
            shutil.rmtree(self.settings.jobs_dir / job_id, ignore_errors=True)
        if not self._stopping.is_set() and slot in self.slots:
            self.slots[self.slots.index(slot)] = self._spawn(slot.pool)

    def _enforce_cancel_grace(self) -> None:
        """A job that ignores its cancel request for `cancel_grace_s` loses its worker process."""
        now = time.monotonic()
        cancelling = {j["id"]: j for j in self.store.running_jobs() if j["status"] == "cancelling"}
        self._cancel_seen = {k: v for k, v in self._cancel_seen.items() if k in cancelling}
        for job_id, job in cancelling.items():
            first_seen = self._cancel_seen.setdefault(job_id, now)
            if now - first_seen < self.settings.cancel_grace_s:
                continue
            slot = self._slot_running(job)
            if slot is None:
                continue
            # Final status first: once it is set, the worker cannot finish the job another way.
            if self.store.finish_job(job_id, "cancelled", worker_id=job.get("worker_id"),
                                     event=("job cancelled (its worker was stopped)", "warning")):
                self._stop_worker(slot, job_id)

    def _enforce_time_limits(self) -> None:
        """A job running past its kind's wall-clock limit fails with `job_timeout`, whatever it is doing (a
        regex without end, a hung library call): its worker process is killed, since nothing else stops it."""
        now = time.time()
        for job in self.store.running_jobs():
            kind = self.kinds.get(job["kind"])
            limit = self.settings.timeout_for(job["kind"], kind.timeout_s if kind is not None else None)
            if now - float(job.get("started_at") or now) <= limit:
                continue
            slot = self._slot_running(job)
            if slot is None:
                continue
            reason = TIMED_OUT.format(limit=limit)
            if self.store.finish_job(job["id"], "failed", error={"message": reason, "code": "job_timeout"},
                                     worker_id=job.get("worker_id"), event=(reason, "error")):
                self._stop_worker(slot, job["id"])
                log.warning("job %s (%s) passed its time limit of %g s; its worker was stopped",
                            job["id"], job["kind"], limit)
