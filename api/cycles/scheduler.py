"""The cycle scheduler inside `assay serve`: a thread that turns due cron ticks into queued cycle runs.

Restart-safe and safe with several servers on one database: each cycle's next tick lives in its row, and a
tick is taken by moving it forward with a compare-and-set (`CycleStore.claim_tick`), so exactly one scheduler
acts on it. A tick found more than `missed_grace_s` late was missed while no server ran: per the cycle's
`schedule.missed` it runs once, or is recorded as a skipped run. Several missed ticks count as one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from assay.api.cycle_store import CycleStore

log = logging.getLogger("assay.cycles")
Enqueue = Callable[[str, str], object]


def next_tick(cron: list[str], after: float) -> float | None:
    """The earliest tick of any expression strictly after `after` (Unix time, UTC); None without expressions."""
    from croniter import croniter

    start = datetime.fromtimestamp(after, timezone.utc)
    ticks = [float(croniter(expression, start).get_next(float)) for expression in cron]
    return min(ticks) if ticks else None


class CycleScheduler:
    """`tick()` is one pass over the cycles (tests call it directly); `start()` runs it every `poll_s`."""

    def __init__(self, cycles: CycleStore, enqueue: Enqueue, *, poll_s: float = 5.0, missed_grace_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.cycles = cycles
        self.enqueue = enqueue
        self.poll_s = poll_s
        self.missed_grace_s = missed_grace_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[tuple[str, str]]:
        """Close interrupted runs, then act on every due tick; returns (cycle, what was done) for each:
        interrupted, queued, missed_queued, missed_skipped, paused."""
        actions = self.fail_interrupted_runs()
        for cycle in self.cycles.list_cycles():
            cron = list(((cycle["config"] or {}).get("schedule") or {}).get("cron") or [])
            if not cron:
                continue
            now, due, name = self.clock(), cycle["next_run_at"], cycle["name"]
            if due is None:  # a new or rescheduled cycle: its first tick, nothing to run yet
                self.cycles.claim_tick(name, None, next_tick(cron, now))
                continue
            if due > now or not self.cycles.claim_tick(name, due, next_tick(cron, now)):
                continue
            if cycle["status"] == "paused":
                actions.append((name, "paused"))
                continue
            missed = now - due > self.missed_grace_s
            policy = ((cycle["config"] or {}).get("schedule") or {}).get("missed", "run_once")
            if missed and policy == "skip":
                self.cycles.create_run(name, "missed", status="skipped", reason=(
                    f"the tick of {_utc(due)} was missed while no server was running; skipped "
                    "(schedule.missed: skip)"))
                actions.append((name, "missed_skipped"))
                continue
            self.enqueue(name, "missed" if missed else "schedule")
            actions.append((name, "missed_queued" if missed else "queued"))
        return actions

    def fail_interrupted_runs(self) -> list[tuple[str, str]]:
        """Runs whose job ended without them (a server killed mid-run: its job failed `job_interrupted` at the
        restart; a job cancelled while queued) fail with the reason; the champion was never touched."""
        from assay.api.store import FINAL_STATUSES

        actions = []
        for run in self.cycles.unfinished_runs():
            if run["job_status"] in FINAL_STATUSES:
                self.cycles.finish_run(run["id"], "failed", reason=(
                    f"the run's job ended ({run['job_status']}) before the run did: the server stopped or the job "
                    f"was cancelled{' during stage ' + run['stage'] if run.get('stage') else ''}"))
                actions.append((run["cycle"], "interrupted"))
        return actions

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="cycle-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for name, action in self.tick():
                    log.info("cycle %s: scheduled tick %s", name, action)
            except Exception:  # a database hiccup must not end the scheduler
                log.exception("cycle scheduler pass failed")
            self._stop.wait(self.poll_s)


def _utc(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
