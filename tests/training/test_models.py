"""The model registry: built-in names, added names, folders, GGUF files and hub ids, clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from assay.training.models import (
    DEFAULT_MODEL,
    ModelError,
    add_model,
    assay_home,
    describe,
    is_ready,
    list_models,
    local_model_path,
    resolve_model,
)


def test_the_builtin_models_are_listed_with_the_default_first() -> None:
    names = [ref.name for ref in list_models()]
    assert names[:2] == [DEFAULT_MODEL, "tiny"] and DEFAULT_MODEL == "smollm2-135m-instruct"


def test_an_unknown_name_is_an_error_that_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match="unknown model 'llama-9000'; known models: smollm2-135m-instruct, tiny"):
        resolve_model("llama-9000")


def test_the_tiny_model_is_built_once_into_the_cache() -> None:
    ref = resolve_model("tiny")
    path = Path(local_model_path(ref))
    assert path == assay_home() / "models" / "tiny" and (path / "config.json").is_file()
    assert is_ready(ref) and local_model_path("tiny") == str(path)
    info = describe(ref)
    assert info["architecture"] == "LlamaForCausalLM" and info["chat_template"] is True


def test_a_local_folder_can_be_added_under_a_name_and_is_remembered(tiny_model: Path) -> None:
    ref = add_model("my-tiny", str(tiny_model))
    assert ref.kind == "hf_folder" and ref.registered and ref.source == str(tiny_model.resolve())
    assert resolve_model("my-tiny") == ref
    stored = json.loads((assay_home() / "models.json").read_text())
    assert stored["my-tiny"]["source"] == str(tiny_model.resolve())
    assert "my-tiny" in [r.name for r in list_models()]
    assert local_model_path("my-tiny") == str(tiny_model.resolve())


def test_adding_refuses_builtin_and_malformed_names_and_unusable_paths(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(ModelError, match="built-in"):
        add_model("tiny", str(tiny_model))
    with pytest.raises(ModelError, match="lowercase"):
        add_model("My Model", str(tiny_model))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        add_model("empty", str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ModelError, match="not a .gguf file"):
        add_model("bin", str(tmp_path / "weights.bin"))


def test_a_gguf_file_is_recognised_and_a_broken_one_fails_clearly(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    ref = resolve_model(str(broken))
    assert ref.kind == "gguf" and not is_ready(ref)
    with pytest.raises(ModelError, match="cannot read GGUF file"):
        local_model_path(ref)
    assert not any(p.name.startswith("gguf-broken") for p in (assay_home() / "models").iterdir())


def test_a_hub_id_needs_the_hub_or_its_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="hub is offline"):
        resolve_model("someone/never-downloaded-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    ref = resolve_model("someone/never-downloaded-model")
    assert ref.kind == "hub" and local_model_path(ref) == "someone/never-downloaded-model"


def test_assay_home_defaults_to_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSAY_HOME")
    assert assay_home() == Path(os.path.expanduser("~")) / ".cache" / "assay"
