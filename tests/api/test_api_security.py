"""API keys, loopback-only default, upload size limit, rate limit, and no dataset content in the server log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from assay.api.cli_serve import register
from assay.api.testing import ServerProcess, upload, wait_for_job, write_chat_jsonl

KEY = "sk-assay-main-test-key"
FLOOD_KEY = "sk-assay-flood-test-key"
LIMIT_BYTES = 1_000_000
SECRET_EMAIL = "jane.roe.4471@example.org"


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("secure") / "data"
    env = {"ASSAY_API_KEYS": f"{KEY},{FLOOD_KEY}", "ASSAY_RATE_LIMIT": "20", "ASSAY_RATE_BURST": "20",
           "ASSAY_MAX_UPLOAD_BYTES": str(LIMIT_BYTES)}
    with ServerProcess(data_dir, workers=1, env=env, args=["--log-level", "info"]) as running:
        yield running


@pytest.fixture(scope="module")
def authed(secured: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
        yield http


def test_every_v1_route_needs_a_valid_key(secured: ServerProcess, authed: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": f"Basic {KEY}"}):
        for method, path in (("GET", "/v1/files"), ("GET", "/v1/files/file-x"), ("POST", "/v1/curation/jobs"),
                             ("GET", "/v1/reports/file-x")):
            response = httpx.request(method, secured.url + path, headers=headers, timeout=10)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["error"]["type"] == "authentication_error"
            assert response.headers["www-authenticate"] == "Bearer"
    assert authed.get("/v1/files").status_code == 200
    assert httpx.get(secured.url + "/healthz").status_code == 200  # probes stay open


def test_keys_added_by_the_cli_are_stored_hashed_and_can_be_revoked(secured: ServerProcess) -> None:
    runner = CliRunner()
    added = runner.invoke(cli(), ["keys", "add", "--name", "ci", "--data-dir", str(secured.data_dir)])
    assert added.exit_code == 0, added.output
    new_key = added.stdout.strip().splitlines()[-1]
    assert new_key.startswith("sk-assay-")
    assert new_key.encode() not in (secured.data_dir / "assay.db").read_bytes()
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline and status != 200:
        status = httpx.get(secured.url + "/v1/files", headers={"Authorization": f"Bearer {new_key}"}).status_code
        time.sleep(0.2)
    assert status == 200
    listed = runner.invoke(cli(), ["keys", "list", "--data-dir", str(secured.data_dir)])
    key_id, name = listed.stdout.split()[:2]
    assert name == "ci" and new_key not in listed.stdout
    assert runner.invoke(cli(), ["keys", "remove", key_id, "--data-dir", str(secured.data_dir)]).exit_code == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and status != 401:
        status = httpx.get(secured.url + "/v1/files", headers={"Authorization": f"Bearer {new_key}"}).status_code
        time.sleep(0.2)
    assert status == 401


def test_serve_refuses_a_public_interface_without_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSAY_API_KEYS", raising=False)
    result = CliRunner().invoke(cli(), ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in result.output
    assert "--insecure" in result.output


def test_uploads_over_the_limit_are_refused_and_leave_nothing_behind(secured: ServerProcess, authed: httpx.Client,
                                                                     tmp_path: Path) -> None:
    big = write_chat_jsonl(tmp_path / "big.jsonl", 20_000)
    assert big.stat().st_size > LIMIT_BYTES
    with big.open("rb") as handle:
        declared = authed.post("/v1/files", files={"file": ("big.jsonl", handle)}, data={"purpose": "curation"})
    assert (declared.status_code, declared.json()["error"]["code"]) == (413, "file_too_large")

    boundary = "assayboundary"

    def chunked_body() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\ncuration\r\n'
               f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
               "Content-Type: application/jsonl\r\n\r\n").encode()
        data = big.read_bytes()
        for start in range(0, len(data), 65536):
            yield data[start:start + 65536]
        yield f"\r\n--{boundary}--\r\n".encode()

    streamed = authed.post("/v1/files", content=chunked_body(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert (streamed.status_code, streamed.json()["error"]["code"]) == (413, "file_too_large")
    assert not any((secured.data_dir / "tmp").iterdir())
    assert not any((secured.data_dir / "files").iterdir())


def test_requests_over_the_rate_limit_get_429_with_retry_after(secured: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {FLOOD_KEY}"}
    with httpx.Client(base_url=secured.url, headers=headers, timeout=10) as flood:
        statuses = [flood.get("/v1/files") for _ in range(40)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, "40 requests at once should exceed a burst of 20"
    assert statuses[0].status_code == 200
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["error"]["code"] == "rate_limit_exceeded"


def test_dataset_content_never_reaches_the_server_log(secured: ServerProcess, authed: httpx.Client,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "contacts.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": "mail ' + SECRET_EMAIL + '"}, '
        '{"role": "assistant", "content": "ok"}]}\n'
        '{"messages": [{"role": "' + SECRET_EMAIL + '", "content": "x"}]}\n'
        '{"broken ' + SECRET_EMAIL + '\n')
    file_id = upload(authed, path)["id"]
    job = authed.post("/v1/curation/jobs", json={"file_id": file_id, "spec": {"steps": ["validate"]}}).json()
    finished = wait_for_job(authed, job["id"], ("succeeded", "failed"))
    assert finished["status"] == "succeeded"
    log = secured.log_text()
    assert "POST /v1/curation/jobs" in log  # the log is being written
    assert SECRET_EMAIL not in log
