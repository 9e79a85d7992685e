"""The service on a real PostgreSQL server (pgserver's embedded PostgreSQL 16 on a local socket).

The same store code runs on SQLite in every other API test; these check what differs on PostgreSQL:
the schema, JSON columns, concurrent job claiming by several worker processes, and key checks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from assay.api.store import Store
from assay.api.testing import ServerProcess, upload, wait_for_job


@pytest.fixture(scope="module")
def new_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """Creates a database on one PostgreSQL server for this module and returns its SQLAlchemy URL."""
    with pytest.MonkeyPatch.context() as patch:
        # pgserver keeps a lock under the user's runtime folder; CI machines often have none
        patch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("runtime")))
        import pgserver  # reads the runtime folder when imported

        server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    socket_dir = server.get_uri().split("host=", 1)[1]

    def create(name: str) -> str:
        server.psql(f"CREATE DATABASE {name};")
        return f"postgresql+psycopg://postgres@/{name}?host={socket_dir}"

    try:
        yield create
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def postgres_url(new_database: Callable[[str], str]) -> str:
    return new_database("assay_test")


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("api-pg") / "data"
    with ServerProcess(data_dir, workers=2, env={"ASSAY_RATE_LIMIT": "0"},
                       args=["--database-url", postgres_url]) as running:
        yield running


def test_curation_jobs_run_end_to_end_on_postgresql(pg_server: ServerProcess, small_dataset: Path,
                                                     postgres_url: str) -> None:
    with httpx.Client(base_url=pg_server.url, timeout=60) as client:
        file_id = upload(client, small_dataset)["id"]
        assert client.get(f"/v1/files/{file_id}").json()["validation"]["valid"] == 45
        job_ids = [client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": {"steps": ["validate"]}})
                   .json()["id"] for _ in range(4)]
        jobs = [wait_for_job(client, job_id, ("succeeded", "failed"), timeout=120) for job_id in job_ids]
        assert [job["status"] for job in jobs] == ["succeeded"] * 4, jobs
        assert all(job["outputs"]["records_out"] == 45 for job in jobs)
        curated = client.get(f"/v1/files/{jobs[0]['outputs']['curated_file_id']}/content")
        assert len(curated.content.splitlines()) == 45
        events = client.get(f"/v1/curation/jobs/{job_ids[0]}/events").json()["data"]
        assert events and all(isinstance(e["message"], str) for e in events)
    store = Store(postgres_url)
    try:
        workers = {store.get_job(job_id)["worker_id"] for job_id in job_ids}  # type: ignore[index]
        assert workers and None not in workers
    finally:
        store.dispose()


def test_concurrent_claims_on_postgresql_hand_each_job_to_one_worker(new_database: Callable[[str], str]) -> None:
    # its own database: the running server's supervisor would fail jobs whose worker never beats
    postgres_url = new_database("assay_claims")
    store = Store(postgres_url)
    store.create_schema()
    created = [store.insert_job(kind="pg-claim-test", params={"n": i}, input_file_id=None)["id"] for i in range(40)]
    claimed: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(name: str) -> None:
        own = Store(postgres_url)
        try:
            while (job := own.claim_job(name, ["pg-claim-test"])) is not None:
                with lock:
                    claimed.setdefault(job["id"], []).append(name)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert sorted(claimed) == sorted(created)
        assert all(len(names) == 1 for names in claimed.values()), {k: v for k, v in claimed.items() if len(v) > 1}
        job: dict[str, Any] | None = store.get_job(created[0])
        assert job is not None and job["params"] == {"n": 0} and job["status"] == "running"
    finally:
        store.dispose()
