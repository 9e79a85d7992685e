"""Parquet uploads over /v1/files: validated like JSONL, the same OpenAI file object, curated back to JSONL."""

from __future__ import annotations

from pathlib import Path

import httpx
import polars as pl

from assay.api.testing import upload


def test_a_parquet_upload_is_validated_and_returned_as_the_same_file_object(client: httpx.Client,
                                                                             tmp_path: Path) -> None:
    path = tmp_path / "chats.parquet"
    turns = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(4)]
    turns.append([{"role": "user", "content": "no answer"}])
    pl.DataFrame({"messages": turns}).write_parquet(path)
    body = upload(client, path)
    assert set(body) >= {"id", "object", "bytes", "created_at", "filename", "purpose", "status"}
    assert (body["object"], body["filename"], body["bytes"], body["format"]) == ("file", "chats.parquet",
                                                                               path.stat().st_size, "chat")
    validation = body["validation"]
    assert (validation["valid"], validation["rejected"]) == (4, 1)
    assert validation["first_errors"][0]["row"] == 5 and validation["path"] == "chats.parquet"
    assert client.get(f"/v1/files/{body['id']}/content").content == path.read_bytes()


def test_a_corrupt_parquet_upload_is_a_400_naming_the_client_file(client: httpx.Client, tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 64)
    with path.open("rb") as handle:
        response = client.post("/v1/files", files={"file": (path.name, handle, "application/vnd.apache.parquet")},
                               data={"purpose": "curation"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_file" and error["message"].startswith("broken.parquet: not a valid Parquet file")
