"""Restart safety: SIGKILL the server mid-job, start it again on the same data folder."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import psutil

from assay.api.testing import ServerProcess, upload, wait_for_job

VALIDATE_ONLY = {"steps": ["validate"]}


def _sha(client: httpx.Client, file_id: str) -> str:
    response = client.get(f"/v1/files/{file_id}/content")
    assert response.status_code == 200
    return hashlib.sha256(response.content).hexdigest()


def test_sigkill_mid_job_fails_the_job_keeps_files_and_runs_queued_jobs(tmp_path: Path, small_dataset: Path,
                                                                         big_dataset: Path) -> None:
    data_dir = tmp_path / "data"
    first = ServerProcess(data_dir, workers=1, env={"ASSAY_RATE_LIMIT": "0"}).start()
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            small_id = upload(client, small_dataset)["id"]
            done = client.post("/v1/curation/jobs", json={"file_id": small_id, "spec": VALIDATE_ONLY}).json()
            done = wait_for_job(client, done["id"], ("succeeded",))
            curated_id = done["outputs"]["curated_file_id"]
            before = {small_id: _sha(client, small_id), curated_id: _sha(client, curated_id)}
            big_id = upload(client, big_dataset)["id"]
            busy = client.post("/v1/curation/jobs", json={"file_id": big_id, "spec": VALIDATE_ONLY}).json()
            queued = client.post("/v1/curation/jobs", json={"file_id": small_id, "spec": VALIDATE_ONLY}).json()
            wait_for_job(client, busy["id"], ("running",), until=lambda job: bool(job["progress"]))
            assert client.get(f"/v1/curation/jobs/{queued['id']}").json()["status"] == "queued"
        assert first.process is not None
        children = psutil.Process(first.process.pid).children(recursive=True)
        assert children, "the server should run its workers in child processes"
        first.kill()
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"worker processes outlived the killed server: {[p.pid for p in alive]}"
    finally:
        first.stop()

    with ServerProcess(data_dir, workers=1, env={"ASSAY_RATE_LIMIT": "0"}) as second, \
            httpx.Client(base_url=second.url, timeout=60) as client:
        interrupted = client.get(f"/v1/curation/jobs/{busy['id']}").json()
        assert interrupted["status"] == "failed"
        assert interrupted["error"]["code"] == "job_interrupted"
        assert "interrupted" in interrupted["error"]["message"]
        assert "submit the job again" in interrupted["error"]["message"]
        last_event = client.get(f"/v1/curation/jobs/{busy['id']}/events").json()["data"][-1]
        assert last_event["level"] == "error" and last_event["message"].startswith("interrupted")
        resumed = wait_for_job(client, queued["id"], ("succeeded", "failed"))
        assert resumed["status"] == "succeeded"
        assert resumed["outputs"]["records_out"] == 45
        for file_id, digest in before.items():
            assert _sha(client, file_id) == digest
        assert _sha(client, big_id) == hashlib.sha256(big_dataset.read_bytes()).hexdigest()
        # Nothing half-written is left behind: no partial uploads, no work folder of the killed job.
        assert not any((data_dir / "tmp").iterdir())
        assert not (data_dir / "jobs" / busy["id"]).exists()


def test_a_dead_worker_fails_its_job_and_is_replaced(tmp_path: Path, small_dataset: Path,
                                                     big_dataset: Path) -> None:
    with ServerProcess(tmp_path / "data", workers=1, env={"ASSAY_RATE_LIMIT": "0"}) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        big_id = upload(client, big_dataset)["id"]
        job = client.post("/v1/curation/jobs", json={"file_id": big_id, "spec": VALIDATE_ONLY}).json()
        wait_for_job(client, job["id"], ("running",), until=lambda j: bool(j["progress"]))
        started = next(e["message"] for e in client.get(f"/v1/curation/jobs/{job['id']}/events").json()["data"]
                       if e["message"].startswith("curation job started by worker"))
        worker = psutil.Process(int(started.rsplit(" ", 1)[1]))
        assert server.process is not None and worker.ppid() == server.process.pid
        worker.kill()
        failed = wait_for_job(client, job["id"], ("failed", "succeeded"), timeout=30)
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "job_interrupted"
        ready = {}
        for _ in range(100):
            ready = client.get("/readyz").json()
            if ready["status"] == "ready":
                break
            time.sleep(0.1)
        assert ready["workers_alive"] == ready["workers_expected"] == 2  # the default pool's and the training pool's
        small_id = upload(client, small_dataset)["id"]
        again = client.post("/v1/curation/jobs", json={"file_id": small_id, "spec": VALIDATE_ONLY}).json()
        assert wait_for_job(client, again["id"], ("succeeded", "failed"))["status"] == "succeeded"
