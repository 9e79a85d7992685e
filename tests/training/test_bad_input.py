"""Bad input stops a fine-tune before anything is written, with one line that says what is wrong."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from assay.schemas.training import FineTuneSpec
from assay.training import FineTuneError, finetune

Records = Callable[[int, int], list[dict]]
Writer = Callable[[Path, list[dict]], Path]


def refused(tmp_path: Path, data: Path, match: str, spec: dict[str, Any] | None = None, **kwargs: Any) -> str:
    out = kwargs.pop("out", tmp_path / "out")
    existed = out.exists()
    settings = {"model": kwargs.pop("model"), "max_steps": 1, "max_seq_len": 64}
    settings.update(spec or {})
    with pytest.raises(FineTuneError, match=match) as caught:
        finetune(FineTuneSpec.model_validate(settings), data, out, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    if not existed:
        assert not out.exists(), "a refused run must not leave an output folder"
    return message


def test_an_empty_data_set(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    refused(tmp_path, data, "is empty", model=str(tiny_model))
    refused(tmp_path, tmp_path / "missing.jsonl", "no such file", model=str(tiny_model))


def test_records_without_an_assistant_turn(tiny_model: Path, tmp_path: Path, write_jsonl: Writer) -> None:
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Write a poem."}, {"prompt": "Explain tides."}])
    refused(tmp_path, data, "no trainable records: no record has an assistant turn", model=str(tiny_model))


def test_a_file_where_every_line_is_invalid(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "broken.jsonl"
    data.write_text("{oops\n[1, 2]\n")
    message = refused(tmp_path, data, "none of its 2 records is valid", model=str(tiny_model))
    assert "line 1" in message and "invalid_json" in message


def test_every_example_truncated(tiny_model: Path, tmp_path: Path, write_jsonl: Writer) -> None:
    long = [{"messages": [{"role": "user", "content": "Go."}, {"role": "assistant", "content": "word " * 80}]}] * 3
    data = write_jsonl(tmp_path / "long.jsonl", long)
    refused(tmp_path, data, "every training example is longer than max_seq_len=64", model=str(tiny_model))


def test_nothing_left_to_learn_after_truncation(tiny_model: Path, tmp_path: Path, write_jsonl: Writer) -> None:
    long = [{"messages": [{"role": "user", "content": "word " * 80}, {"role": "assistant", "content": "ok"}]}] * 3
    data = write_jsonl(tmp_path / "long.jsonl", long)
    refused(tmp_path, data, r"truncated_to_nothing x3\); raise max_seq_len", model=str(tiny_model))


def test_a_validation_set_that_overlaps_the_training_set(
        tiny_model: Path, tmp_path: Path, parity_records: Records, write_jsonl: Writer) -> None:
    records = parity_records(20, 4)
    data = write_jsonl(tmp_path / "train.jsonl", records)
    # Same conversation, different id and spacing: still the same example.
    copy = {"id": "v1", "messages": [dict(m, content="  " + m["content"].upper()) for m in records[3]["messages"]]}
    validation = write_jsonl(tmp_path / "val.jsonl", [copy, *parity_records(5, 99)])
    refused(tmp_path, data, "validation set overlaps the training set: 1 of its 6 records", model=str(tiny_model),
            validation=validation)


def test_an_existing_output_folder_needs_overwrite_and_a_foreign_one_is_never_deleted(
        tiny_model: Path, parity_data: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8")
    refused(tmp_path, parity_data, "exists and is not empty; pass --overwrite", model=str(tiny_model), out=foreign)
    refused(tmp_path, parity_data, "does not look like a fine-tuning output", model=str(tiny_model), out=foreign,
            overwrite=True)
    assert (foreign / "holiday.jpg").exists()


def test_resume_needs_a_run_with_the_same_settings(tiny_model: Path, parity_data: Path, tmp_path: Path) -> None:
    refused(tmp_path, parity_data, "nothing to resume", model=str(tiny_model), resume=True)
    out = tmp_path / "run"
    spec = FineTuneSpec(model=str(tiny_model), max_steps=3, max_seq_len=64, eval_before_training=False)
    finetune(spec, parity_data, out, should_stop=lambda: True)
    refused(tmp_path, parity_data, "different settings: learning_rate differ", spec={"learning_rate": 1e-2, "max_steps": 3, "eval_before_training": False},
            model=str(tiny_model), out=out, resume=True)


def test_an_unknown_model_names_the_known_ones(parity_data: Path, tmp_path: Path) -> None:
    message = refused(tmp_path, parity_data, "unknown model 'gpt-17'", model="gpt-17")
    assert "smollm2-135m-instruct" in message and "tiny" in message


def test_lora_target_modules_the_model_lacks(tiny_model: Path, parity_data: Path, tmp_path: Path) -> None:
    message = refused(tmp_path, parity_data, "LoRA target modules not in", model=str(tiny_model),
                      spec={"lora": {"target_modules": ["q_proj", "query_key_value"]}})
    assert "query_key_value" in message and "v_proj" in message


def test_a_model_too_big_for_memory_gets_a_hint_not_a_traceback(
        tiny_model: Path, parity_data: Path, tmp_path: Path) -> None:
    huge = tmp_path / "huge-model"
    shutil.copytree(tiny_model, huge)
    config = json.loads((huge / "config.json").read_text())
    config.update(hidden_size=8192, intermediate_size=28672, num_hidden_layers=48, num_attention_heads=64,
                  num_key_value_heads=8, vocab_size=32000)
    (huge / "config.json").write_text(json.dumps(config))
    message = refused(tmp_path, parity_data, "needs about", model=str(huge))
    assert "GiB" in message and "smaller model" in message


def test_cuda_only_settings_on_a_machine_without_cuda(tiny_model: Path, parity_data: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the settings are valid here")
    refused(tmp_path, parity_data, "QLoRA\\) needs a CUDA device", model=str(tiny_model), spec={"quantization": "4bit"})
    refused(tmp_path, parity_data, "fp16 needs a CUDA device", model=str(tiny_model), spec={"precision": "fp16"})
