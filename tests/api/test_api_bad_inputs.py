"""Damaged and empty datasets over the API: a 400 that names the problem, or a job that fails with a code."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx

from assay.api.testing import upload, wait_for_job

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_a_truncated_gzip_upload_is_a_400_naming_the_file_and_the_byte(client: httpx.Client, tmp_path: Path) -> None:
    whole = gzip.compress(b"".join(json.dumps({**CHAT, "id": i}).encode() + b"\n" for i in range(3000)))
    cut = whole[: len(whole) // 2]
    response = client.post("/v1/files", files={"file": ("cut.jsonl.gz", cut, "application/gzip")},
                           data={"purpose": "curation"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_file"
    assert error["message"].startswith("cut.jsonl.gz: read error at byte ")  # the client's name, not a server path
    assert "truncated" in error["message"]


def test_a_dataset_that_curates_to_nothing_fails_the_job_unless_the_spec_allows_it(client: httpx.Client,
                                                                                   tmp_path: Path) -> None:
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n\n")
    file_id = upload(client, blank)["id"]
    job = client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": {"steps": ["validate"]}}).json()
    failed = wait_for_job(client, job["id"], ("succeeded", "failed"))
    assert failed["status"] == "failed" and failed["error"]["code"] == "no_valid_records", failed
    assert "blank.jsonl: no valid records: the input holds only blank lines (3)" in failed["error"]["message"]
    allowed = client.post("/v1/curation/jobs", json={
        "file_id": file_id, "spec": {"steps": ["validate"], "fail_on_empty": False}}).json()
    done = wait_for_job(client, allowed["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded" and done["outputs"]["records_out"] == 0, done


def test_upload_errors_never_quote_an_email_from_the_data(client: httpx.Client, tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.jsonl"
    bad_role = {"messages": [{"role": "alice.role@example.com", "content": "hi"},
                             {"role": "assistant", "content": "hello"}]}
    leaky.write_text(json.dumps(CHAT) + "\n" + json.dumps(bad_role) + "\n")
    response = client.post("/v1/files", files={"file": ("leaky.jsonl", leaky.read_bytes())},
                           data={"purpose": "curation"})
    assert response.status_code == 200, response.text
    shown = client.get(f"/v1/files/{response.json()['id']}").text + response.text
    assert "alice.role@example.com" not in shown
    assert "role" in json.dumps(response.json())  # the error itself is still reported
