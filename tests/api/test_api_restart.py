"""Restart safety: SIGKILL the server mid-job, start it again on the same data folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import psutil

from api.testing import ServerProcess, upload, wait_for_job

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
