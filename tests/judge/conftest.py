"""Fixtures for the judge and model-server tests: the scripted tiny judge (a real transformers model that always
gives one reply), a LoRA adapter on it, and one real `assay serve-model` on a loopback port serving both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.api.model_server_process import ModelServerProcess
from assay.evaluation.judge.testing import ABSOLUTE_RUBRIC, PAIRWISE_RUBRIC, build_scripted_judge


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from assay.training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def judge_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripted tiny judge (served as `judge`)."""
    return build_scripted_judge(tmp_path_factory.mktemp("models") / "judge")


@pytest.fixture(scope="session")
def adapter(judge_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with random (non-zero) weights on the attention output: it changes the model's replies."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(judge_model),
                           LoraConfig(r=4, lora_alpha=64, target_modules=["o_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapters") / "ft1"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def model_server(judge_model: Path, adapter: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[ModelServerProcess]:
    """`assay serve-model --model <judge> --adapter ft1=<adapter>` on a loopback port, no keys."""
    log = tmp_path_factory.mktemp("logs") / "model-server.log"
    with ModelServerProcess(judge_model, {"ft1": adapter}, log_path=log,
                            args=["--max-batch-size", "8", "--max-tokens-default", "32"]) as server:
        yield server


@pytest.fixture()
def rubric_files(tmp_path: Path) -> dict[str, Path]:
    files = {"absolute": tmp_path / "absolute.yaml", "pairwise": tmp_path / "pairwise.yaml"}
    files["absolute"].write_text(ABSOLUTE_RUBRIC)
    files["pairwise"].write_text(PAIRWISE_RUBRIC)
    return files
