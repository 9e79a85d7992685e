"""Fixtures for the API tests: a real server (uvicorn, SQLite file, worker processes) on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from assay.api.testing import ServerProcess, scoped_env, write_chat_jsonl


@pytest.fixture(scope="package", autouse=True)
def served_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers of these tests serve only the tiny model from a scratch ASSAY_HOME, never the user's models
    (a fuzzed chat request must not load SmolLM2)."""
    with scoped_env(ASSAY_MODELS="tiny", ASSAY_HOME=str(tmp_path_factory.mktemp("api-assay-home"))):
        yield


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module: one worker, no API keys, no rate limit."""
    data_dir = tmp_path_factory.mktemp("api") / "data"
    with ServerProcess(data_dir, workers=1, env={"ASSAY_RATE_LIMIT": "0"}) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 chat records, every 10th line broken JSON: 45 valid, 5 rejected."""
    return write_chat_jsonl(tmp_path_factory.mktemp("data") / "small.jsonl", 50, bad_every=10)


@pytest.fixture(scope="session")
def big_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400,000 short chat records (~70 MB): validation alone takes a few seconds, enough to interrupt."""
    return write_chat_jsonl(tmp_path_factory.mktemp("data") / "big.jsonl", 400_000, words=3)
