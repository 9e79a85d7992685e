"""Training tests run on tiny models built offline, one thread each (the machine is shared), with
Assay's model cache in a temporary folder."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from assay.api.testing import scoped_env

_USER_HOME: list[str | None] = []


@pytest.fixture(scope="session")
def user_assay_home() -> str | None:
    """The ASSAY_HOME the user had (None: the default), where converted models are worth keeping."""
    return _USER_HOME[0] if _USER_HOME else None


@pytest.fixture(scope="session", autouse=True)
def _one_thread_and_private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from threads, and a loaded machine punishes them
    with scoped_env(ASSAY_HOME=str(tmp_path_factory.mktemp("assay-home"))) as saved:
        _USER_HOME.append(saved["ASSAY_HOME"])
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose output embeddings are large enough for LoRA to make it confident."""
    from assay.training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-learnable", seed=0, initializer_range=0.3)


def _parity_records(n: int, seed: int) -> list[dict]:
    """'Is N even or odd?' -> 'even' / 'odd': learnable by a tiny model, checkable by exact match."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        number = rng.randint(10, 9999)
        records.append({"messages": [{"role": "user", "content": f"Is {number} even or odd?"},
                                     {"role": "assistant", "content": "even" if number % 2 == 0 else "odd"}]})
    return records


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def parity_records() -> Callable[[int, int], list[dict]]:
    return _parity_records


@pytest.fixture(scope="session")
def write_jsonl() -> Callable[[Path, list[dict]], Path]:
    return _write_jsonl


@pytest.fixture(scope="session")
def parity_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_jsonl(tmp_path_factory.mktemp("data") / "parity.jsonl", _parity_records(240, 1))
