"""Retrain cycles in the database: cycle definitions with their champion alias, runs, champion decisions, the
record hashes each cycle has seen, and a lock row per cycle so that no two runs of one cycle overlap, also
with two servers on one database. Same `metadata` as api/store.py, so `Store.create_schema` makes these too."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import JSON, Column, Float, Integer, String, Table, Text, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from assay.api.store import Store, jobs_table, metadata, models_table, new_id

cycles_table = Table(
    "cycles", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), unique=True, nullable=False),
    Column("config", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # active | paused
    Column("champion", String(255)),  # a model id; None: the base model is the champion
    Column("next_run_at", Float),  # the next scheduled tick (None: no schedule)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

cycle_runs_table = Table(
    "cycle_runs", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("cycle", String(64), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("trigger", String(16), nullable=False),  # manual | api | schedule | missed
    Column("status", String(16), nullable=False),  # queued | running | succeeded | failed | skipped
    Column("stage", String(32)),
    Column("reason", Text),
    Column("decision", String(16)),  # promoted | kept
    Column("champion_before", String(255)),
    Column("champion_after", String(255)),
    Column("challenger", String(255)),
    Column("folder", Text),
    Column("stages", JSON),
    Column("summary", JSON),
    Column("job_id", String(64)),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
)

# Every change of a cycle's champion alias, and every run that kept it: the alias's history.
champion_decisions_table = Table(
    "cycle_decisions", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("cycle", String(64), nullable=False, index=True),
    Column("action", String(16), nullable=False),  # promote | keep | manual_promote | rollback
    Column("champion", String(255)),  # the champion after the decision (None: the base model)
    Column("previous", String(255)),
    Column("run_id", String(64)),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
)

cycle_seen_table = Table(
    "cycle_seen_records", metadata,
    Column("cycle", String(64), primary_key=True),
    Column("hash", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False),
)

# One row while a run of the cycle holds it; a lease that the holder renews, so a crashed holder's lock expires.
cycle_locks_table = Table(
    "cycle_locks", metadata,
    Column("cycle", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("run_id", String(64)),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

FINAL_RUN_STATUSES = ("succeeded", "failed", "skipped")


class CycleStore:
    """Cycle tables over a `Store`'s engine: short transactions, plain dicts, like the Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- cycles -------------------------------------------------------------------------------------
    def upsert_cycle(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Create the cycle or replace its definition (its champion, status and runs stay; a changed schedule
        clears the next tick, which the scheduler then computes afresh)."""
        now = time.time()
        with self.store._write() as conn:
            found = conn.execute(select(cycles_table.c.config).where(cycles_table.c.name == name)).first()
            if found is None:
                conn.execute(insert(cycles_table).values(name=name, config=config, status="active", champion=None,
                                                         next_run_at=None, created_at=now, updated_at=now))
            else:
                values: dict[str, Any] = {"config": config, "updated_at": now}
                if (found[0] or {}).get("schedule") != config.get("schedule"):
                    values["next_run_at"] = None
                conn.execute(update(cycles_table).where(cycles_table.c.name == name).values(**values))
        cycle = self.get_cycle(name)
        assert cycle is not None
        return cycle

    def get_cycle(self, name: str) -> dict[str, Any] | None:
        with self.store._read() as conn:
            row = conn.execute(select(cycles_table).where(cycles_table.c.name == name)).mappings().first()
        return dict(row) if row else None

    def list_cycles(self) -> list[dict[str, Any]]:
        with self.store._read() as conn:
            return [dict(r) for r in conn.execute(select(cycles_table).order_by(cycles_table.c.seq)).mappings()]

    def set_status(self, name: str, status: str) -> dict[str, Any] | None:
        with self.store._write() as conn:
            conn.execute(update(cycles_table).where(cycles_table.c.name == name)
                         .values(status=status, updated_at=time.time()))
        return self.get_cycle(name)

    def claim_tick(self, name: str, expected: float | None, following: float | None) -> bool:
        """Move the cycle's next tick from `expected` to `following`; True for the one caller that did it
        (two schedulers on one database see the same tick; only one of them may run it)."""
        column = cycles_table.c.next_run_at
        condition = column.is_(None) if expected is None else column == expected
        with self.store._write() as conn:
            return conn.execute(update(cycles_table).where(cycles_table.c.name == name, condition)
                                .values(next_run_at=following)).rowcount == 1

    # -- runs ---------------------------------------------------------------------------------------
    def create_run(self, cycle: str, trigger: str, *, status: str = "queued", reason: str | None = None,
                   job_id: str | None = None) -> dict[str, Any]:
        run_id = new_id("cyclerun")
        now = time.time()
        with self.store._write() as conn:
            number = (conn.execute(select(func.max(cycle_runs_table.c.number))
                                   .where(cycle_runs_table.c.cycle == cycle)).scalar() or 0) + 1
            conn.execute(insert(cycle_runs_table).values(
                id=run_id, cycle=cycle, number=number, trigger=trigger, status=status, reason=reason,
                stages={}, summary={}, job_id=job_id, created_at=now,
                finished_at=now if status in FINAL_RUN_STATUSES else None))
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.store._read() as conn:
            row = conn.execute(select(cycle_runs_table).where(cycle_runs_table.c.id == run_id)).mappings().first()
        return dict(row) if row else None

    def list_runs(self, cycle: str) -> list[dict[str, Any]]:
        """Runs oldest first."""
        with self.store._read() as conn:
            rows = conn.execute(select(cycle_runs_table).where(cycle_runs_table.c.cycle == cycle)
                                .order_by(cycle_runs_table.c.number)).mappings()
            return [dict(r) for r in rows]

    def unfinished_runs(self) -> list[dict[str, Any]]:
        """Runs of every cycle that are queued or running, with their job's status (None without a job)."""
        with self.store._read() as conn:
            rows = conn.execute(select(cycle_runs_table, jobs_table.c.status.label("job_status"))
                                .outerjoin(jobs_table, jobs_table.c.id == cycle_runs_table.c.job_id)
                                .where(cycle_runs_table.c.status.in_(("queued", "running")))).mappings()
            return [dict(r) for r in rows]

    def update_run(self, run_id: str, **values: Any) -> None:
        with self.store._write() as conn:
            conn.execute(update(cycle_runs_table).where(cycle_runs_table.c.id == run_id).values(**values))

    def finish_run(self, run_id: str, status: str, *, reason: str | None = None, **values: Any) -> None:
        assert status in FINAL_RUN_STATUSES
        self.update_run(run_id, status=status, reason=reason, finished_at=time.time(), **values)

    def complete_run(self, run: dict[str, Any], *, decision: str, challenger: dict[str, Any],
                     seen: Iterable[str], summary: dict[str, Any], stages: dict[str, Any], reason: str) -> str | None:
        """In one transaction: register the challenger model, record the run's records as seen, promote the
        challenger when `decision` is "promoted" (only if the champion is still the one the run measured
        against), and finish the run. Returns the champion after the run."""
        cycle, now = run["cycle"], time.time()
        with self.store._write() as conn:
            conn.execute(insert(models_table).values(**challenger, created_at=now))
            hashes = sorted(set(seen))
            known = set(conn.execute(select(cycle_seen_table.c.hash).where(
                cycle_seen_table.c.cycle == cycle, cycle_seen_table.c.hash.in_(hashes))).scalars()) if hashes else set()
            fresh = [{"cycle": cycle, "hash": h, "run_id": run["id"]} for h in hashes if h not in known]
            if fresh:
                conn.execute(insert(cycle_seen_table), fresh)
            champion = conn.execute(select(cycles_table.c.champion).where(cycles_table.c.name == cycle)).scalar()
            if decision == "promoted" and champion != run["champion_before"]:
                decision, reason = "kept", (f"the champion changed during the run (now {champion or 'the base model'}); "
                                            "the challenger was measured against another model")
            if decision == "promoted":
                conn.execute(update(cycles_table).where(cycles_table.c.name == cycle)
                             .values(champion=challenger["id"], updated_at=now))
                lineage = {**challenger["lineage"], "promoted_at": now}
                conn.execute(update(models_table).where(models_table.c.id == challenger["id"]).values(lineage=lineage))
                champion = challenger["id"]
            conn.execute(insert(champion_decisions_table).values(
                id=new_id("decision"), cycle=cycle, action="promote" if decision == "promoted" else "keep",
                champion=champion, previous=run["champion_before"], run_id=run["id"], reason=reason, created_at=now))
            conn.execute(update(cycle_runs_table).where(cycle_runs_table.c.id == run["id"]).values(
                status="succeeded", decision=decision, reason=reason, challenger=challenger["id"],
                champion_after=champion, summary=summary, stages=stages, finished_at=now, stage=None))
        return str(champion) if champion else None

    def seen_hashes(self, cycle: str, hashes: Iterable[str]) -> set[str]:
        """Which of `hashes` the cycle has trained on or rejected before."""
        wanted = list(set(hashes))
        found: set[str] = set()
        with self.store._read() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                found.update(conn.execute(select(cycle_seen_table.c.hash).where(
                    cycle_seen_table.c.cycle == cycle, cycle_seen_table.c.hash.in_(chunk))).scalars())
        return found

    # -- champion alias -----------------------------------------------------------------------------
    def set_champion(self, cycle: str, model_id: str | None, *, action: str, reason: str,
                     run_id: str | None = None) -> dict[str, Any]:
        """Point the alias at `model_id` (None: the base model) and record the decision; returns the decision."""
        now = time.time()
        row = {"id": new_id("decision"), "cycle": cycle, "action": action, "champion": model_id, "run_id": run_id,
               "reason": reason, "created_at": now}
        with self.store._write() as conn:
            previous = conn.execute(select(cycles_table.c.champion).where(cycles_table.c.name == cycle)).scalar()
            row["previous"] = previous
            conn.execute(update(cycles_table).where(cycles_table.c.name == cycle)
                         .values(champion=model_id, updated_at=now))
            conn.execute(insert(champion_decisions_table).values(**row))
            if model_id is not None and action != "rollback":
                lineage = conn.execute(select(models_table.c.lineage).where(models_table.c.id == model_id)).scalar()
                conn.execute(update(models_table).where(models_table.c.id == model_id)
                             .values(lineage={**(lineage or {}), "promoted_at": now}))
        return row

    def decisions(self, cycle: str) -> list[dict[str, Any]]:
        """Decisions oldest first."""
        with self.store._read() as conn:
            rows = conn.execute(select(champion_decisions_table).where(champion_decisions_table.c.cycle == cycle)
                                .order_by(champion_decisions_table.c.seq)).mappings()
            return [dict(r) for r in rows]

    def champion_history(self, cycle: str) -> list[str | None]:
        """Champions in the order they held the alias (consecutive repeats folded), the current one last."""
        history: list[str | None] = [None]
        for decision in self.decisions(cycle):
            if decision["action"] == "keep":
                continue
            if decision["action"] == "rollback":
                if len(history) > 1:
                    history.pop()
                continue
            if decision["champion"] != history[-1]:
                history.append(decision["champion"])
        return history

    # -- the run lock ---------------------------------------------------------------------------------
    def acquire_lock(self, cycle: str, holder: str, run_id: str | None, lease_s: float) -> dict[str, Any] | None:
        """Take the cycle's lock for `lease_s` seconds (an expired lease is taken over); None when another
        holder has it (`lock_holder` says who)."""
        now = time.time()
        with self.store._write() as conn:
            conn.execute(delete(cycle_locks_table).where(cycle_locks_table.c.cycle == cycle,
                                                         cycle_locks_table.c.expires_at < now))
        try:
            with self.store._write() as conn:
                conn.execute(insert(cycle_locks_table).values(cycle=cycle, holder=holder, run_id=run_id,
                                                              acquired_at=now, expires_at=now + lease_s))
        except IntegrityError:
            return None  # another holder inserted the row first: the primary key decides
        return {"cycle": cycle, "holder": holder, "run_id": run_id}

    def renew_lock(self, cycle: str, holder: str, lease_s: float) -> bool:
        with self.store._write() as conn:
            return conn.execute(update(cycle_locks_table).where(
                cycle_locks_table.c.cycle == cycle, cycle_locks_table.c.holder == holder)
                .values(expires_at=time.time() + lease_s)).rowcount == 1

    def release_lock(self, cycle: str, holder: str) -> None:
        with self.store._write() as conn:
            conn.execute(delete(cycle_locks_table).where(cycle_locks_table.c.cycle == cycle,
                                                         cycle_locks_table.c.holder == holder))

    def lock_holder(self, cycle: str) -> dict[str, Any] | None:
        with self.store._read() as conn:
            row = conn.execute(select(cycle_locks_table).where(cycle_locks_table.c.cycle == cycle)).mappings().first()
        return dict(row) if row else None
