"""The /v1/files endpoints against a real server: upload with validation, list, content, delete, errors."""

from __future__ import annotations

import gzip
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from assay.api.testing import ServerProcess, upload, write_chat_jsonl


def test_upload_reports_detected_format_and_validation_summary(client: httpx.Client, small_dataset: Path) -> None:
    body = upload(client, small_dataset)
    assert body["object"] == "file"
    assert body["id"].startswith("file-")
    assert body["filename"] == "small.jsonl"
    assert body["bytes"] == small_dataset.stat().st_size
    assert body["status"] == "processed"
    assert body["format"] == "chat"
    validation = body["validation"]
    assert (validation["records_read"], validation["valid"], validation["rejected"]) == (50, 45, 5)
    assert validation["errors_by_code"] == {"invalid_json": 5}
    assert validation["first_errors"][0]["line"] == 10
    assert validation["path"] == "small.jsonl"  # the client's name, never the server's path


def test_content_returns_the_uploaded_bytes_exactly(client: httpx.Client, small_dataset: Path) -> None:
    file_id = upload(client, small_dataset)["id"]
    response = client.get(f"/v1/files/{file_id}/content")
    assert response.status_code == 200
    assert response.content == small_dataset.read_bytes()
    assert "small.jsonl" in response.headers["content-disposition"]


def test_gzip_and_json_array_uploads_are_validated_by_their_container(client: httpx.Client, tmp_path: Path) -> None:
    plain = write_chat_jsonl(tmp_path / "plain.jsonl", 20)
    packed = tmp_path / "packed.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    array = tmp_path / "array.json"
    array.write_text('[{"instruction": "Add 2 and 2", "output": "4"}, {"instruction": "", "output": "x"}]')
    assert upload(client, packed)["validation"]["valid"] == 20
    body = upload(client, array)
    assert body["format"] == "instruction"
    assert (body["validation"]["valid"], body["validation"]["rejected"]) == (1, 1)


def test_list_pages_newest_first_with_the_after_cursor(client: httpx.Client, tmp_path: Path) -> None:
    path = write_chat_jsonl(tmp_path / "page.jsonl", 3)
    ids = [upload(client, path, purpose="user_data")["id"] for _ in range(3)]
    first = client.get("/v1/files", params={"purpose": "user_data", "limit": 2}).json()
    assert first["object"] == "list"
    assert [f["id"] for f in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    second = client.get("/v1/files", params={"purpose": "user_data", "limit": 2, "after": first["last_id"]}).json()
    assert [f["id"] for f in second["data"]] == [ids[0]]
    assert second["has_more"] is False
    ascending = client.get("/v1/files", params={"purpose": "user_data", "order": "asc"}).json()
    assert [f["id"] for f in ascending["data"]] == ids


def test_delete_removes_the_record_and_the_stored_bytes(client: httpx.Client, server: ServerProcess,
                                                        small_dataset: Path) -> None:
    file_id = upload(client, small_dataset)["id"]
    stored = list((server.data_dir / "files").glob(f"{file_id}*"))
    assert len(stored) == 1
    response = client.delete(f"/v1/files/{file_id}")
    assert response.json() == {"id": file_id, "object": "file", "deleted": True}
    assert not stored[0].exists()
    missing = client.get(f"/v1/files/{file_id}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "file_not_found"
    assert client.delete(f"/v1/files/{file_id}").status_code == 404


def test_errors_use_the_openai_error_shape(client: httpx.Client, small_dataset: Path) -> None:
    no_purpose = client.post("/v1/files", files={"file": ("a.jsonl", small_dataset.read_bytes())})
    assert no_purpose.status_code == 400
    error = no_purpose.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "purpose", "missing_purpose")
    bad_purpose = client.post("/v1/files", files={"file": ("a.jsonl", b"{}")}, data={"purpose": "nonsense"})
    assert bad_purpose.json()["error"]["code"] == "invalid_purpose"
    assert client.get("/v1/nowhere").json()["error"]["type"] == "not_found_error"
    bad_limit = client.get("/v1/files", params={"limit": 0})
    assert bad_limit.status_code == 400
    assert bad_limit.json()["error"]["param"] == "limit"
    assert client.get("/v1/files", params={"after": "file-unknown"}).json()["error"]["code"] == "invalid_cursor"


def test_file_names_never_become_paths(client: httpx.Client, server: ServerProcess, small_dataset: Path) -> None:
    response = client.post("/v1/files", files={"file": ("../../../../tmp/evil.jsonl", small_dataset.read_bytes())},
                           data={"purpose": "curation"})
    body = response.json()
    assert response.status_code == 200, body
    assert body["filename"] == "evil.jsonl"
    stored = [p.name for p in (server.data_dir / "files").iterdir()]
    assert f"{body['id']}.jsonl" in stored
    assert not any("evil" in name for name in stored)
    assert client.get("/v1/files/..%2F..%2Fassay.db/content").status_code == 404


def test_unsupported_names_types_and_broken_containers_are_rejected(client: httpx.Client,
                                                                   server: ServerProcess) -> None:
    data = {"purpose": "curation"}
    exe = client.post("/v1/files", files={"file": ("run.sh", b"#!/bin/sh\n")}, data=data)
    assert (exe.status_code, exe.json()["error"]["code"]) == (400, "unsupported_file_type")
    image = client.post("/v1/files", files={"file": ("x.jsonl", b"{}", "image/png")}, data=data)
    assert (image.status_code, image.json()["error"]["code"]) == (415, "unsupported_media_type")
    fake_gz = client.post("/v1/files", files={"file": ("x.jsonl.gz", b"not gzip")}, data=data)
    assert (fake_gz.status_code, fake_gz.json()["error"]["code"]) == (400, "invalid_file")
    pretty = client.post("/v1/files", files={"file": ("pretty.jsonl", b'[\n  {"text": "a"}\n]\n')}, data=data)
    assert pretty.status_code == 400
    message = pretty.json()["error"]["message"]
    assert "pretty.jsonl" in message and "pretty-printed" in message
    assert str(server.data_dir) not in message
    not_multipart = client.post("/v1/files", json={"file": "x"})
    assert not_multipart.status_code == 415


def test_eight_concurrent_uploads_all_succeed(client: httpx.Client, server: ServerProcess, tmp_path: Path) -> None:
    paths = [write_chat_jsonl(tmp_path / f"part{i}.jsonl", 2000 + i) for i in range(8)]

    def send(path: Path) -> dict[str, object]:
        with httpx.Client(base_url=server.url, timeout=120) as own:
            return upload(own, path, purpose="evals")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, paths))
    assert len({r["id"] for r in results}) == 8
    for path, result in zip(paths, results, strict=True):
        assert result["validation"]["valid"] == 2000 + int(path.stem.removeprefix("part"))  # type: ignore[index]
        content = client.get(f"/v1/files/{result['id']}/content").content
        assert hashlib.sha256(content).digest() == hashlib.sha256(path.read_bytes()).digest()
    listed = client.get("/v1/files", params={"purpose": "evals"}).json()["data"]
    assert len(listed) == 8
