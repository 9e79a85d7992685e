"""Cycle tests: a tiny offline model, parity data arriving in batches, and the shipped example cycle made
small (a few training steps, a few evaluation items)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.api.testing import scoped_env

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cycle" / "cycle.yaml"


@pytest.fixture(scope="session", autouse=True)
def _one_thread_and_private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with scoped_env(ASSAY_HOME=str(tmp_path_factory.mktemp("assay-home"))):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from assay.training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-learnable", seed=0, initializer_range=0.3)


def parity_records(n: int, seed: int) -> list[dict[str, Any]]:
    """'Is N even or odd?' -> 'even' / 'odd': a tiny model learns it in a few steps."""
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": f"Is {number} even or odd?"},
                          {"role": "assistant", "content": "even" if number % 2 == 0 else "odd"}]}
            for number in (rng.randint(10, 99999) for _ in range(n))]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def small_cycle(folder: Path, model: Path, **changes: Any) -> Path:
    """The shipped example cycle with the tiny model, few steps and items, data and tasks under `folder`."""
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config["name"] = "parity"
    config["data"] = {"path": "incoming/"}
    config["training"]["spec"].update(model=str(model), max_steps=4, batch_size=8, max_seq_len=32,
                                      learning_rate=5e-3, eval_before_training=False, warmup_ratio=0.0,
                                      lr_scheduler="constant")
    config["evaluation"].update(tasks=["ppl:heldout.jsonl"], limit=16, batch_size=16, bootstrap_samples=200,
                                device="cpu")
    config["gate"]["metrics"][0].update(min_improvement=0.0, require_significant=False)
    config["triggers"] = {"min_new_records": 10}
    config["schedule"] = {"cron": []}
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            config[section][field] = value
        else:
            config[section] = value
    path = folder / "cycle.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    if not (folder / "heldout.jsonl").exists():
        write_jsonl(folder / "heldout.jsonl", parity_records(16, 99))
    return path


class Kit:
    """The helpers above, for test modules (pytest's importlib mode does not let them import conftest)."""

    parity_records = staticmethod(parity_records)
    write_jsonl = staticmethod(write_jsonl)
    small_cycle = staticmethod(small_cycle)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit
