"""A server SIGKILLed mid-training resumes the fine-tuning job from its last checkpoint on restart, and curation
jobs finish while a training job runs (the training pool is separate)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from assay.api.testing import ServerProcess, upload, wait_for_job, write_chat_jsonl

JOBS = "/v1/fine_tuning/jobs"


def _env(root: Path) -> dict[str, str]:
    return {"ASSAY_RATE_LIMIT": "0", "ASSAY_HOME": str(root / "home"), "ASSAY_MODELS": "tiny"}


def test_a_killed_server_resumes_training_from_its_last_checkpoint(tmp_path: Path, small_dataset: Path) -> None:
    data = write_chat_jsonl(tmp_path / "train.jsonl", 60, words=6)
    settings = {"max_steps": 80, "batch_size": 2, "max_seq_len": 128, "save_every": 4, "eval_every": 20,
                "eval_before_training": False}
    first = ServerProcess(tmp_path / "data", workers=1, env=_env(tmp_path)).start()
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            file_id = upload(client, data, purpose="fine-tune")["id"]
            curation_id = upload(client, small_dataset)["id"]
            job = client.post(JOBS, json={"model": "tiny", "training_file": file_id, "seed": 3,
                                          "settings": settings}).json()
            deadline = time.monotonic() + 180
            while not client.get(f"{JOBS}/{job['id']}/checkpoints").json()["data"]:
                assert time.monotonic() < deadline, "no checkpoint was written"
                assert client.get(f"{JOBS}/{job['id']}").json()["status"] in ("queued", "running")
                time.sleep(0.1)
            # A curation job runs to the end while the training job runs: separate worker pools.
            curation = client.post("/v1/curation/jobs", json={"file_id": curation_id,
                                                              "spec": {"steps": ["validate"]}}).json()
            assert wait_for_job(client, curation["id"], ("succeeded", "failed"))["status"] == "succeeded"
            training = client.get(f"{JOBS}/{job['id']}").json()
            assert training["status"] == "running", training
            killed_at = training["progress"]["step"]
        first.kill()
    finally:
        first.stop()

    with ServerProcess(tmp_path / "data", workers=1, env=_env(tmp_path)) as second, \
            httpx.Client(base_url=second.url, timeout=60) as client:
        done = wait_for_job(client, job["id"], ("succeeded", "failed", "cancelled"), jobs_path=JOBS, timeout=300)
        assert done["status"] == "succeeded", done["error"]
        messages = [e["message"] for e in client.get(f"{JOBS}/{job['id']}/events", params={"limit": 1000}
                                                     ).json()["data"]]
        assert any("resumes from its last checkpoint" in m for m in messages)
        assert any(m.startswith("resumed from checkpoint-") for m in messages)
        steps = [e["data"]["step"] for e in client.get(f"{JOBS}/{job['id']}/events", params={"limit": 1000}
                                                       ).json()["data"] if e["type"] == "metrics"
                 and "train_loss" in (e["data"] or {})]
        assert max(steps) == 80 and killed_at < 80
        models = {m["id"] for m in client.get("/v1/models").json()["data"]}
        assert done["fine_tuned_model"] in models
