"""The state store: files, jobs, job events and API keys in SQLite (WAL) or any SQLAlchemy database URL."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)

metadata = MetaData()

files_table = Table(
    "files", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("filename", String(255), nullable=False),
    Column("purpose", String(64), nullable=False, index=True),
    Column("bytes", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_details", Text),
    Column("format", String(32)),
    Column("validation", JSON),
    Column("storage_name", String(128), nullable=False),
    Column("job_id", String(64), index=True),
)

jobs_table = Table(
    "jobs", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("kind", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("input_file_id", String(64), index=True),
    Column("params", JSON, nullable=False),
    Column("result", JSON),
    Column("error", JSON),
    Column("progress", JSON),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("worker_id", String(128)),
    Column("heartbeat_at", Float),
)

events_table = Table(
    "job_events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("job_id", String(64), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("level", String(16), nullable=False),
    Column("type", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("data", JSON),
)

# Secret job parameters (e.g. pii.hash_salt) apart from `jobs.params`, which clients see; deleted when the
# job ends. A separate table, not a column, so databases made by an older version gain it on start.
job_secrets_table = Table(
    "job_secrets", metadata,
    Column("job_id", String(64), primary_key=True),
    Column("secrets", JSON, nullable=False),
)

keys_table = Table(
    "api_keys", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("name", String(128), nullable=False),
    Column("key_hash", String(128), unique=True, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Models the service made or registered: fine-tuned adapters (`kind` "fine_tuned"), the checkpoints of a
# fine-tuning job ("checkpoint", with `step`), and models a retrain cycle trained. `adapter_dir` is relative
# to the data folder; `lineage` holds whatever the model's history records (base, adapter hash, dataset
# hashes, curation report, training run, evaluation results, cycle run, promotion). Deleting sets
# `deleted_at`: the row stays, so lineage that names the model still resolves.
models_table = Table(
    "models", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(255), unique=True, nullable=False),
    Column("kind", String(32), nullable=False, index=True),
    Column("base", String(255), nullable=False),
    Column("adapter_dir", Text, nullable=False),
    Column("adapter_hash", String(128)),
    Column("job_id", String(64), index=True),
    Column("step", Integer),
    Column("metrics", JSON),
    Column("lineage", JSON),
    Column("created_at", Float, nullable=False),
    Column("deleted_at", Float),
)

# Job creations by Idempotency-Key (or, for a client's automatic retry without one, by request digest):
# the same key for the same kind answers with the job the first request made.
idempotency_table = Table(
    "idempotency_keys", metadata,
    Column("key", String(300), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("request_digest", String(64), nullable=False, index=True),
    Column("job_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

# OpenAI-shaped evals: what an item looks like and how it is graded. Their runs are jobs of kind `eval_run`.
evals_table = Table(
    "evals", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("name", String(255), nullable=False),
    Column("data_source_config", JSON, nullable=False),
    Column("testing_criteria", JSON, nullable=False),
    Column("metadata", JSON),
    Column("created_at", Float, nullable=False),
    Column("deleted_at", Float),
)

ACTIVE_STATUSES = ("queued", "running", "cancelling")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


def new_id(prefix: str) -> str:
    """Random, unguessable, URL-safe ids: ids never come from client input."""
    return f"{prefix}-{secrets.token_hex(12)}"


class CursorNotFound(LookupError):
    """A list cursor (`after`) names an object that does not exist."""


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, future=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, future=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook issue BEGIN itself, so writes can take the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when another
        # process writes; IMMEDIATE waits for the write lock instead (busy_timeout).
        mode = "IMMEDIATE" if conn.get_execution_options().get("assay_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Store:
    """All database access. Methods are short transactions; rows come back as plain dicts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    def create_schema(self) -> None:
        import assay.api.cycle_store  # noqa: F401  (the retrain cycles' tables share this metadata)

        metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(assay_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(select(1)).scalar_one()

    # -- files ------------------------------------------------------------------------------------
    def insert_file(self, row: dict[str, Any]) -> dict[str, Any]:
        with self._write() as conn:
            conn.execute(insert(files_table).values(**row))
        return self.get_file(row["id"]) or row

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            found = conn.execute(select(files_table).where(files_table.c.id == file_id)).mappings().first()
        return dict(found) if found else None

    def list_files(self, *, purpose: str | None, limit: int, after: str | None,
                   descending: bool = True) -> tuple[list[dict[str, Any]], bool]:
        query = select(files_table)
        if purpose is not None:
            query = query.where(files_table.c.purpose == purpose)
        return self._page(files_table, query, limit, after, descending)

    def delete_job(self, job_id: str) -> bool:
        """Remove a finished job and its events (eval runs can be deleted); True when it existed."""
        with self._write() as conn:
            conn.execute(delete(events_table).where(events_table.c.job_id == job_id))
            return conn.execute(delete(jobs_table).where(jobs_table.c.id == job_id,
                                                         jobs_table.c.status.in_(FINAL_STATUSES))).rowcount == 1

    def delete_file(self, file_id: str) -> dict[str, Any] | None:
        with self._write() as conn:
            found = conn.execute(select(files_table).where(files_table.c.id == file_id)).mappings().first()
            if found is None:
                return None
            conn.execute(delete(files_table).where(files_table.c.id == file_id))
        return dict(found)

    def _page(self, table: Table, query: Any, limit: int, after: str | None,
              descending: bool) -> tuple[list[dict[str, Any]], bool]:
        with self._read() as conn:
            if after is not None:
                cursor = conn.execute(select(table.c.seq).where(table.c.id == after)).scalar()
                if cursor is None:
                    raise CursorNotFound(after)
                query = query.where(table.c.seq < cursor if descending else table.c.seq > cursor)
            order = table.c.seq.desc() if descending else table.c.seq.asc()
            rows = conn.execute(query.order_by(order).limit(limit + 1)).mappings().all()
        return [dict(r) for r in rows[:limit]], len(rows) > limit

    # -- jobs -------------------------------------------------------------------------------------
    def insert_job(self, *, kind: str, params: dict[str, Any], input_file_id: str | None,
                   secrets: list[tuple[list[str | int], str]] | None = None) -> dict[str, Any]:
        with self._write() as conn:
            job_id = self._insert_job_rows(conn, kind, params, input_file_id, secrets, time.time())
        job = self.get_job(job_id)
        assert job is not None
        return job

    @staticmethod
    def _insert_job_rows(conn: Connection, kind: str, params: dict[str, Any], input_file_id: str | None,
                         secrets: list[tuple[list[str | int], str]] | None, now: float) -> str:
        job_id = new_id("job")
        conn.execute(insert(jobs_table).values(id=job_id, kind=kind, status="queued", params=params,
                                               input_file_id=input_file_id, created_at=now, cancel_requested=False))
        if secrets:
            conn.execute(insert(job_secrets_table).values(
                job_id=job_id, secrets=[[list(location), value] for location, value in secrets]))
        return job_id

    def get_job(self, job_id: str, kind: str | None = None) -> dict[str, Any] | None:
        query = select(jobs_table).where(jobs_table.c.id == job_id)
        if kind is not None:
            query = query.where(jobs_table.c.kind == kind)
        with self._read() as conn:
            found = conn.execute(query).mappings().first()
        return dict(found) if found else None

    def list_jobs(self, *, kind: str, limit: int, after: str | None) -> tuple[list[dict[str, Any]], bool]:
        return self._page(jobs_table, select(jobs_table).where(jobs_table.c.kind == kind), limit, after, True)

    def insert_job_once(self, *, key: str | None, digest: str, since: float | None, kind: str,
                        params: dict[str, Any], input_file_id: str | None,
                        secrets: list[tuple[list[str | int], str]] | None = None) -> tuple[dict[str, Any], bool]:
        """Insert a job unless `key` (or, with `since` and no key, the same request digest since then) already
        made one of this kind; returns (job, created). The same key with another request raises ValueError."""
        with self._write() as conn:
            if key is not None:
                found = conn.execute(select(idempotency_table).where(idempotency_table.c.key == f"{kind}:{key}")
                                     ).mappings().first()
                if found is not None and found["request_digest"] != digest:
                    raise ValueError("this Idempotency-Key was used with a different request")
            elif since is not None:
                found = conn.execute(select(idempotency_table).where(
                    idempotency_table.c.request_digest == digest, idempotency_table.c.kind == kind,
                    idempotency_table.c.created_at >= since).order_by(idempotency_table.c.created_at.desc())
                ).mappings().first()
            else:
                found = None
            if found is None:
                now = time.time()
                job_id = self._insert_job_rows(conn, kind, params, input_file_id, secrets, now)
                conn.execute(insert(idempotency_table).values(
                    key=f"{kind}:{key if key is not None else job_id}", kind=kind, request_digest=digest,
                    job_id=job_id, created_at=now))
        job = self.get_job(str(found["job_id"]) if found is not None else job_id)
        assert job is not None
        return job, found is None

    def requeue_job(self, job_id: str, *, worker_id: str | None, message: str) -> bool:
        """Put a running job whose worker is gone back in the queue (a resumable kind); True when done."""
        query = update(jobs_table).where(jobs_table.c.id == job_id, jobs_table.c.status == "running")
        if worker_id is not None:
            query = query.where(jobs_table.c.worker_id == worker_id)
        with self._write() as conn:
            done = conn.execute(query.values(status="queued", worker_id=None, heartbeat_at=None)).rowcount == 1
            if done:
                conn.execute(self._event_row(job_id, message, level="warning"))
        return done

    def active_jobs_mentioning(self, text: str) -> list[str]:
        """Active jobs whose parameters contain `text` as a whole JSON string (e.g. a model name)."""
        needle = json.dumps(text)
        with self._read() as conn:
            rows = conn.execute(select(jobs_table.c.id, jobs_table.c.params)
                                .where(jobs_table.c.status.in_(ACTIVE_STATUSES))).all()
        return [str(job_id) for job_id, params in rows if needle in json.dumps(params)]

    def active_jobs_using(self, file_id: str) -> list[str]:
        with self._read() as conn:
            return list(conn.execute(select(jobs_table.c.id).where(
                jobs_table.c.input_file_id == file_id, jobs_table.c.status.in_(ACTIVE_STATUSES))).scalars())

    def claim_job(self, worker_id: str, kinds: list[str]) -> dict[str, Any] | None:
        """Move the oldest queued job of a known kind to running for this worker; None when none is queued."""
        for _ in range(5):
            with self._write() as conn:
                candidate = conn.execute(
                    select(jobs_table.c.id).where(jobs_table.c.status == "queued", jobs_table.c.kind.in_(kinds))
                    .order_by(jobs_table.c.seq).limit(1)).scalar()
                if candidate is None:
                    return None
                now = time.time()
                claimed = conn.execute(
                    update(jobs_table).where(jobs_table.c.id == candidate, jobs_table.c.status == "queued")
                    .values(status="running", worker_id=worker_id, started_at=now, heartbeat_at=now)).rowcount
            if claimed == 1:
                return self.get_job(candidate)
        return None

    def job_secrets(self, job_id: str) -> list[tuple[list[str | int], str]]:
        with self._read() as conn:
            stored = conn.execute(select(job_secrets_table.c.secrets)
                                  .where(job_secrets_table.c.job_id == job_id)).scalar()
        return [(list(location), str(value)) for location, value in stored or []]

    def heartbeat(self, job_id: str, worker_id: str) -> None:
        with self._write() as conn:
            conn.execute(update(jobs_table).where(jobs_table.c.id == job_id, jobs_table.c.worker_id == worker_id)
                         .values(heartbeat_at=time.time()))

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self._write() as conn:
            conn.execute(update(jobs_table).where(jobs_table.c.id == job_id)
                         .values(progress=progress, heartbeat_at=time.time()))

    def cancel_requested(self, job_id: str) -> bool:
        with self._read() as conn:
            return bool(conn.execute(select(jobs_table.c.cancel_requested).where(jobs_table.c.id == job_id)).scalar())

    def request_cancel(self, job_id: str) -> dict[str, Any] | None:
        """Queued jobs are cancelled at once; running ones are asked to stop (status `cancelling`)."""
        now = time.time()
        with self._write() as conn:
            cancelled = conn.execute(update(jobs_table).where(jobs_table.c.id == job_id, jobs_table.c.status == "queued")
                                     .values(status="cancelled", cancel_requested=True, finished_at=now)).rowcount
            if cancelled:
                conn.execute(delete(job_secrets_table).where(job_secrets_table.c.job_id == job_id))
            conn.execute(update(jobs_table).where(jobs_table.c.id == job_id, jobs_table.c.status == "running")
                         .values(status="cancelling", cancel_requested=True))
        return self.get_job(job_id)

    def finish_job(self, job_id: str, status: str, *, result: dict[str, Any] | None = None,
                   error: dict[str, Any] | None = None, worker_id: str | None = None,
                   event: tuple[str, str] | None = None) -> bool:
        """Set a final status unless the job is already final; True when this call finished it.

        `event` (message, level) is written in the same transaction, so a client that sees the final status
        also sees the event that says why."""
        assert status in FINAL_STATUSES
        query = update(jobs_table).where(jobs_table.c.id == job_id, jobs_table.c.status.in_(ACTIVE_STATUSES))
        if worker_id is not None:
            query = query.where(jobs_table.c.worker_id == worker_id)
        with self._write() as conn:
            done = conn.execute(query.values(status=status, result=result, error=error,
                                             finished_at=time.time())).rowcount
            if done:
                conn.execute(delete(job_secrets_table).where(job_secrets_table.c.job_id == job_id))
                if event is not None:
                    conn.execute(self._event_row(job_id, event[0], level=event[1]))
        return done == 1

    def running_jobs(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(select(jobs_table).where(jobs_table.c.status.in_(("running", "cancelling"))))
            return [dict(r) for r in rows.mappings()]

    # -- events -----------------------------------------------------------------------------------
    def add_event(self, job_id: str, message: str, *, level: str = "info", type_: str = "message",
                  data: dict[str, Any] | None = None) -> None:
        with self._write() as conn:
            conn.execute(self._event_row(job_id, message, level=level, type_=type_, data=data))

    @staticmethod
    def _event_row(job_id: str, message: str, *, level: str = "info", type_: str = "message",
                   data: dict[str, Any] | None = None) -> Any:
        return insert(events_table).values(id=new_id("jobevent"), job_id=job_id, created_at=time.time(),
                                           level=level, type=type_, message=message, data=data)

    def list_events(self, job_id: str, *, limit: int, after: str | None) -> tuple[list[dict[str, Any]], bool]:
        query = select(events_table).where(events_table.c.job_id == job_id)
        return self._page(events_table, query, limit, after, descending=False)

    # -- models -----------------------------------------------------------------------------------
    def add_model(self, *, id: str, kind: str, base: str, adapter_dir: str, adapter_hash: str | None = None,
                  job_id: str | None = None, step: int | None = None, metrics: dict[str, Any] | None = None,
                  lineage: dict[str, Any] | None = None) -> dict[str, Any]:
        """Register a model; an id that exists (also a deleted one) raises `ValueError`."""
        row = {"id": id, "kind": kind, "base": base, "adapter_dir": adapter_dir, "adapter_hash": adapter_hash,
               "job_id": job_id, "step": step, "metrics": metrics, "lineage": lineage or {},
               "created_at": time.time()}
        with self._write() as conn:
            if conn.execute(select(models_table.c.seq).where(models_table.c.id == id)).first() is not None:
                raise ValueError(f"a model named {id!r} exists")
            conn.execute(insert(models_table).values(**row))
        model = self.get_model(id)
        assert model is not None
        return model

    def get_model(self, model_id: str, *, include_deleted: bool = False) -> dict[str, Any] | None:
        query = select(models_table).where(models_table.c.id == model_id)
        if not include_deleted:
            query = query.where(models_table.c.deleted_at.is_(None))
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def list_models(self, *, kind: str | None = None, job_id: str | None = None,
                    include_deleted: bool = False) -> list[dict[str, Any]]:
        """Models oldest first."""
        query = select(models_table)
        if kind is not None:
            query = query.where(models_table.c.kind == kind)
        if job_id is not None:
            query = query.where(models_table.c.job_id == job_id)
        if not include_deleted:
            query = query.where(models_table.c.deleted_at.is_(None))
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query.order_by(models_table.c.seq)).mappings()]

    def update_lineage(self, model_id: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Merge `patch` into a model's lineage (top-level keys replaced); None when there is no such model."""
        with self._write() as conn:
            current = conn.execute(select(models_table.c.lineage).where(models_table.c.id == model_id)).first()
            if current is None:
                return None
            conn.execute(update(models_table).where(models_table.c.id == model_id)
                         .values(lineage={**(current[0] or {}), **patch}))
        return self.get_model(model_id, include_deleted=True)

    def delete_model(self, model_id: str) -> bool:
        """Mark a model deleted; True when this call deleted it."""
        with self._write() as conn:
            return conn.execute(update(models_table).where(models_table.c.id == model_id,
                                                           models_table.c.deleted_at.is_(None))
                                .values(deleted_at=time.time())).rowcount == 1

    # -- evals ------------------------------------------------------------------------------------
    def add_eval(self, *, name: str, data_source_config: dict[str, Any], testing_criteria: list[dict[str, Any]],
                 metadata: dict[str, Any] | None) -> dict[str, Any]:
        row = {"id": new_id("eval"), "name": name, "data_source_config": data_source_config,
               "testing_criteria": testing_criteria, "metadata": metadata, "created_at": time.time()}
        with self._write() as conn:
            conn.execute(insert(evals_table).values(**row))
        return row

    def get_eval(self, eval_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(evals_table).where(evals_table.c.id == eval_id,
                                                         evals_table.c.deleted_at.is_(None))).mappings().first()
        return dict(row) if row is not None else None

    def list_evals(self, *, limit: int, after: str | None, descending: bool = True) -> tuple[list[dict[str, Any]], bool]:
        return self._page(evals_table, select(evals_table).where(evals_table.c.deleted_at.is_(None)), limit, after,
                          descending)

    def update_eval(self, eval_id: str, **values: Any) -> dict[str, Any] | None:
        with self._write() as conn:
            conn.execute(update(evals_table).where(evals_table.c.id == eval_id).values(**values))
        return self.get_eval(eval_id)

    def delete_eval(self, eval_id: str) -> bool:
        with self._write() as conn:
            return conn.execute(update(evals_table).where(evals_table.c.id == eval_id, evals_table.c.deleted_at.is_(None))
                                .values(deleted_at=time.time())).rowcount == 1

    # -- API keys ---------------------------------------------------------------------------------
    def add_key(self, name: str, key_hash: str) -> dict[str, Any]:
        row = {"id": new_id("key"), "name": name, "key_hash": key_hash, "created_at": time.time()}
        with self._write() as conn:
            conn.execute(insert(keys_table).values(**row))
        return row

    def list_keys(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(select(keys_table.c.id, keys_table.c.name, keys_table.c.created_at)
                                .order_by(keys_table.c.seq))
            return [dict(r) for r in rows.mappings()]

    def remove_key(self, key_id: str) -> bool:
        with self._write() as conn:
            return conn.execute(delete(keys_table).where(keys_table.c.id == key_id)).rowcount == 1

    def key_hashes(self) -> set[str]:
        with self._read() as conn:
            return set(conn.execute(select(keys_table.c.key_hash)).scalars())
