"""The unmodified `openai` SDK drives the Files API of a real server (base_url=http://127.0.0.1:PORT/v1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from assay.api.testing import ServerProcess

API_KEY = "sk-assay-sdk-test-key"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("sdk") / "data"
    with ServerProcess(data_dir, workers=1, env={"ASSAY_API_KEYS": API_KEY, "ASSAY_RATE_LIMIT": "0"}) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(keyed_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=keyed_server.url + "/v1", api_key=API_KEY, max_retries=0)


def test_files_round_trip_through_the_sdk(sdk: openai.OpenAI, small_dataset: Path) -> None:
    with small_dataset.open("rb") as handle:
        created = sdk.files.create(file=handle, purpose="fine-tune")
    assert created.object == "file"
    assert created.filename == "small.jsonl"
    assert created.bytes == small_dataset.stat().st_size
    assert created.status == "processed"
    extra = created.model_extra or {}
    assert extra["format"] == "chat"
    assert extra["validation"]["rejected"] == 5

    retrieved = sdk.files.retrieve(created.id)
    assert (retrieved.id, retrieved.purpose, retrieved.created_at) == (created.id, "fine-tune", created.created_at)
    assert created.id in [f.id for f in sdk.files.list()]
    assert sdk.files.content(created.id).read() == small_dataset.read_bytes()

    deleted = sdk.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.files.retrieve(created.id)
    assert missing.value.status_code == 404
    assert missing.value.code == "file_not_found"


def test_sdk_pagination_follows_the_after_cursor(sdk: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "tiny.jsonl"
    path.write_text('{"text": "hello world"}\n')
    ids = {sdk.files.create(file=path.open("rb"), purpose="user_data").id for _ in range(5)}
    page = sdk.files.list(purpose="user_data", limit=2)
    assert len(page.data) == 2 and page.has_more
    seen = [f.id for f in page]  # iterating a page fetches the following pages with `after`
    assert set(seen) == ids and len(seen) == 5


def test_sdk_maps_errors_to_its_exception_types(sdk: openai.OpenAI, keyed_server: ServerProcess,
                                                tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("hello")
    with pytest.raises(openai.BadRequestError) as unsupported:
        sdk.files.create(file=bad.open("rb"), purpose="fine-tune")
    assert unsupported.value.code == "unsupported_file_type"
    wrong_key = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong_key.files.list()
