"""Curation jobs through the API: run in a worker process, progress events, outputs as files, reports, cancel."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from assay.api.testing import upload, wait_for_job

VALIDATE_ONLY = {"steps": ["validate"]}


@pytest.fixture(scope="module")
def finished_job(client: httpx.Client, small_dataset: Path) -> dict[str, object]:
    file_id = upload(client, small_dataset)["id"]
    created = client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": VALIDATE_ONLY})
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "queued"
    return wait_for_job(client, created.json()["id"], ("succeeded", "failed"))


def test_a_finished_job_links_curated_rejects_and_report_files(client: httpx.Client,
                                                               finished_job: dict[str, object]) -> None:
    assert finished_job["status"] == "succeeded", finished_job
    outputs = finished_job["outputs"]
    assert isinstance(outputs, dict)
    assert (outputs["records_in"], outputs["records_out"]) == (50, 45)
    assert finished_job["result_files"] == [outputs["curated_file_id"], outputs["rejected_file_id"],
                                            outputs["report_id"]]
    curated = client.get(f"/v1/files/{outputs['curated_file_id']}").json()
    assert (curated["purpose"], curated["format"], curated["job_id"]) == ("fine-tune", "chat", finished_job["id"])
    lines = client.get(f"/v1/files/{outputs['curated_file_id']}/content").content.splitlines()
    assert len(lines) == 45
    assert orjson.loads(lines[0])["messages"][1]["role"] == "assistant"
    rejects = [orjson.loads(line) for line in
               client.get(f"/v1/files/{outputs['rejected_file_id']}/content").content.splitlines()]
    assert len(rejects) == 5
    assert {(r["step"], r["reason"]) for r in rejects} == {("validate", "invalid_json")}


def test_report_is_json_by_default_and_html_when_asked(client: httpx.Client, finished_job: dict[str, object],
                                                      server: object) -> None:
    report_id = finished_job["outputs"]["report_id"]  # type: ignore[index]
    as_json = client.get(f"/v1/reports/{report_id}")
    assert as_json.headers["content-type"].startswith("application/json")
    report = as_json.json()
    assert (report["records_in"], report["records_out"]) == (50, 45)
    assert report["funnel"][0]["dropped"] == {"invalid_json": 5}
    assert report["input_path"] == "small.jsonl"  # not the server's storage path
    by_accept = client.get(f"/v1/reports/{report_id}", headers={"Accept": "text/html"})
    by_query = client.get(f"/v1/reports/{report_id}", params={"format": "html"})
    for page in (by_accept, by_query):
        assert page.headers["content-type"].startswith("text/html")
        assert "<html" in page.text.lower()
    curated_id = finished_job["outputs"]["curated_file_id"]  # type: ignore[index]
    assert client.get(f"/v1/reports/{curated_id}").status_code == 404  # a file, but not a report


def test_events_record_the_lifecycle_and_throttled_progress(client: httpx.Client,
                                                            finished_job: dict[str, object]) -> None:
    events = client.get(f"/v1/curation/jobs/{finished_job['id']}/events").json()
    messages = [e["message"] for e in events["data"]]
    assert messages[0] == "job queued"
    assert any(m.startswith("curation job started") for m in messages)
    assert messages[-1].startswith("job succeeded")
    progress = [e for e in events["data"] if e["type"] == "progress"]
    assert progress and progress[-1]["data"]["step"] == "done"
    first_two = client.get(f"/v1/curation/jobs/{finished_job['id']}/events", params={"limit": 2}).json()
    assert first_two["has_more"] is True
    rest = client.get(f"/v1/curation/jobs/{finished_job['id']}/events",
                      params={"after": first_two["data"][-1]["id"]}).json()
    assert [e["id"] for e in first_two["data"] + rest["data"]] == [e["id"] for e in events["data"]]


def test_jobs_are_listed_newest_first(client: httpx.Client, finished_job: dict[str, object]) -> None:
    listed = client.get("/v1/curation/jobs").json()
    assert listed["object"] == "list"
    assert finished_job["id"] in [j["id"] for j in listed["data"]]
    assert client.get(f"/v1/curation/jobs/{finished_job['id']}").json()["status"] == "succeeded"


def test_bad_job_requests_are_rejected_with_the_field_named(client: httpx.Client,
                                                             finished_job: dict[str, object]) -> None:
    missing = client.post("/v1/curation/jobs", json={"file_id": "file-nope", "spec": VALIDATE_ONLY})
    assert (missing.status_code, missing.json()["error"]["param"]) == (400, "file_id")
    file_id = finished_job["file_id"]
    unknown_key = client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": {"stepz": ["validate"]}})
    assert unknown_key.status_code == 400
    assert unknown_key.json()["error"]["param"] == "spec.stepz"
    bad_step = client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": {"steps": ["shred"]}})
    assert bad_step.json()["error"]["param"].startswith("spec.steps")
    for section, key, value in [("dedup", "save_index", "/tmp"), ("dedup", "against", ["/etc/passwd"]),
                                ("dedup", "decontaminate", ["/"])]:
        server_path = client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": {section: {key: value}}})
        assert server_path.status_code == 400, (key, server_path.text)
        assert f"spec.{section}.{key} names a path on the server" in server_path.json()["error"]["message"]
    tokenizer_path = client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": {"report": {"tokenizer": "/root"}}})
    assert tokenizer_path.json()["error"]["code"] == "model_not_installed"  # more in test_api_hardening.py
    report_id = finished_job["outputs"]["report_id"]  # type: ignore[index]
    not_dataset = client.post("/v1/curation/jobs", json={"file_id": report_id})
    assert not_dataset.json()["error"]["code"] == "not_a_dataset"
    finished = client.post(f"/v1/curation/jobs/{finished_job['id']}/cancel")
    assert (finished.status_code, finished.json()["error"]["code"]) == (409, "job_finished")
    assert client.get("/v1/curation/jobs/job-nope").status_code == 404


def test_a_running_job_can_be_cancelled_and_its_input_is_protected(client: httpx.Client, big_dataset: Path) -> None:
    file_id = upload(client, big_dataset)["id"]
    job_id = client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": VALIDATE_ONLY}).json()["id"]
    running = wait_for_job(client, job_id, ("running",), until=lambda job: bool(job["progress"]))
    assert running["progress"]["records_in"] > 0
    in_use = client.delete(f"/v1/files/{file_id}")
    assert (in_use.status_code, in_use.json()["error"]["code"]) == (409, "file_in_use")
    cancelling = client.post(f"/v1/curation/jobs/{job_id}/cancel").json()
    assert cancelling["status"] in ("cancelling", "cancelled")
    cancelled = wait_for_job(client, job_id, ("cancelled", "succeeded", "failed"), timeout=30)
    assert cancelled["status"] == "cancelled"
    assert cancelled["outputs"] is None
    messages = [e["message"] for e in client.get(f"/v1/curation/jobs/{job_id}/events").json()["data"]]
    assert "cancellation requested" in messages and messages[-1] == "job cancelled"
    assert client.delete(f"/v1/files/{file_id}").status_code == 200


def test_a_job_on_an_unreadable_file_fails_with_a_clear_reason(client: httpx.Client, server: object,
                                                               tmp_path: Path) -> None:
    # Upload validation looks at the first 100 records to detect the format; this spec looks at 200, and
    # sees two formats: the whole file is refused, with the reason and the client's file name.
    path = tmp_path / "mixed.jsonl"
    rows = [{"text": f"t{i}"} for i in range(120)] + [{"prompt": f"p{i}", "completion": "c"} for i in range(30)]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    file_id = upload(client, path)["id"]
    job_id = client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": {
        "steps": ["validate"], "validate": {"detect_records": 200}}}).json()["id"]
    job = wait_for_job(client, job_id, ("succeeded", "failed"))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_file"
    assert "mixed.jsonl" in job["error"]["message"] and "mixed record formats" in job["error"]["message"]
    assert str(server.data_dir) not in job["error"]["message"]  # type: ignore[attr-defined]
