"""A worker process: claims queued jobs from the database, runs them, records progress, events and results."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import socket
import threading
import time
import traceback
from typing import Any

from assay.api.jobs import load_job_function
from assay.api.jobs.context import JobCancelled, JobContext, JobFailed
from assay.api.process import become_server_child
from assay.api.settings import Settings
from assay.api.store import Store

log = logging.getLogger("assay.worker")


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Heartbeat(threading.Thread):
    def __init__(self, store: Store, job_id: str, worker_id: str, interval: float) -> None:
        super().__init__(daemon=True, name="assay-heartbeat")
        self.store, self.job_id, self.worker_id, self.interval = store, job_id, worker_id, interval
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.store.heartbeat(self.job_id, self.worker_id)
            except Exception as exc:  # a busy database must not kill the job; the next beat retries
                log.warning("heartbeat for job %s failed: %s", self.job_id, type(exc).__name__)


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno}"


def run_job(job: dict[str, Any], store: Store, settings: Settings, kinds: dict[str, str], worker_id: str) -> str:
    """Run one claimed job to a final status; returns that status."""
    job_id = job["id"]
    work_dir = settings.jobs_dir / job_id
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = JobContext(job, store, settings, worker_id, work_dir, secrets=store.job_secrets(job_id))
    heartbeat = _Heartbeat(store, job_id, worker_id, settings.heartbeat_interval_s)
    heartbeat.start()
    started = time.monotonic()
    status = "failed"
    try:
        ctx.event(f"{job['kind']} job started by worker {os.getpid()}")
        function = load_job_function(kinds[job["kind"]])
        result = function(ctx)
    except JobCancelled:
        status = "cancelled"
        store.finish_job(job_id, status, worker_id=worker_id, event=("job cancelled", "info"))
    except JobFailed as exc:
        store.finish_job(job_id, status, error={"message": exc.message, "code": exc.code}, worker_id=worker_id,
                         event=(f"job failed: {exc.message}", "error"))
    except Exception as exc:
        # The message goes to the job's owner through the API; the log gets no data-derived text.
        log.error("job %s failed with %s at %s", job_id, type(exc).__name__, _where(exc))
        message = f"{type(exc).__name__}: {exc}"[:2000]
        store.finish_job(job_id, status, error={"message": message, "code": "job_error"}, worker_id=worker_id,
                         event=("job failed with an unexpected error", "error"))
    else:
        status = "succeeded"
        store.finish_job(job_id, status, result=result, worker_id=worker_id,
                         event=(f"job succeeded in {time.monotonic() - started:.1f} s", "info"))
    finally:
        heartbeat.done.set()
        shutil.rmtree(work_dir, ignore_errors=True)
    log.info("job %s finished: %s in %.1f s", job_id, status, time.monotonic() - started)
    return status


def worker_main(settings: Settings, kinds: dict[str, str], parent_pid: int, wake: Any, stop: Any,
                ready: Any, current: Any) -> None:
    """Entry point of a spawned worker process; `kinds` maps the kinds of its pool to their functions."""
    # Its own process group, so the server can stop the worker together with any process a job started
    # (e.g. the PII step's pool) when the job times out or ignores a cancel.
    with contextlib.suppress(OSError):  # without a group of its own, only the worker itself is stopped
        os.setpgid(0, 0)
    become_server_child(parent_pid, whole_group=True)
    # The server starts workers as daemons (it stops them at exit), but a job may start a process pool of its
    # own (pii.workers), which multiprocessing refuses in a daemon; the flag only matters to the parent.
    multiprocessing.current_process().daemon = False
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    store = Store(settings.db_url)
    store.ping()
    worker_id = worker_identity()
    ready.value = 1
    while not stop.value:
        try:
            job = store.claim_job(worker_id, list(kinds))
        except Exception as exc:  # database briefly unavailable: wait and retry
            log.warning("claiming a job failed: %s", type(exc).__name__)
            job = None
        if job is None:
            wake.acquire(timeout=0.5)
            continue
        current.value = job["id"].encode()
        try:
            run_job(job, store, settings, kinds, worker_id)
        finally:
            current.value = b""
    store.dispose()
