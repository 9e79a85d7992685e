"""Fine-tuning on a tiny model: it really learns, repeats exactly for a seed, resumes to the same end,
stops cleanly, and the saved adapter and merged model give the trained model's logits."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from assay.schemas.training import FineTuneSpec, TrainingEvent
from assay.training import FineTuneRun, finetune


def spec_for(model: Path, **changes: Any) -> FineTuneSpec:
    settings: dict[str, Any] = {"model": str(model), "max_steps": 6, "learning_rate": 3e-3, "batch_size": 16,
                                "max_seq_len": 64, "eval_before_training": False}
    settings.update(changes)
    return FineTuneSpec.model_validate(settings)


def adapter_weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def logits_of(model: Any, tokenizer: Any, text: str) -> Any:
    import torch

    with torch.no_grad():
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return model(input_ids=ids).logits[0]


@pytest.fixture(scope="module")
def learned(tiny_model: Path, parity_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[FineTuneRun, Any]:
    """One real run on the parity task, kept for several tests."""
    out = tmp_path_factory.mktemp("runs") / "parity"
    events: list[TrainingEvent] = []
    run = FineTuneRun(spec_for(tiny_model, max_steps=60, eval_every=20, eval_before_training=True, val_split=0.1),
                      parity_data, out, on_event=events.append)
    report = run.run()
    return run, (report, events, out)


def exact_match(model: str, adapter: Path | None, records: list[dict]) -> float:
    from assay.training.generate import generate, load_for_inference

    loaded = load_for_inference(model, adapter)
    prompts = [r["messages"][0]["content"] for r in records]
    answers = generate(loaded, prompts, max_new_tokens=4)
    return sum(a == r["messages"][1]["content"] for a, r in zip(answers, records, strict=True)) / len(records)


def test_learning_is_real_held_out_loss_halves_and_greedy_answers_improve(
        learned: tuple[FineTuneRun, Any], tiny_model: Path) -> None:
    _, (report, _, out) = learned
    assert report.status == "completed" and report.steps == 60
    assert report.valid_loss_before is not None and report.final_valid_loss is not None
    assert report.final_valid_loss < report.valid_loss_before / 2
    held_out = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert len(held_out) == 24  # 10% of 240, never trained on
    before = exact_match(str(tiny_model), None, held_out)
    after = exact_match(str(tiny_model), out / "adapter", held_out)
    assert before == 0.0 and after >= 0.75, (before, after)


def test_events_and_report_record_the_run(learned: tuple[FineTuneRun, Any]) -> None:
    _, (report, events, out) = learned
    lines = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert lines == [e.to_json() for e in events]
    assert lines[0]["status"] == "started" and lines[-1]["status"] == "completed"
    train = [e for e in lines if e["type"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 61))
    for key in ("epoch", "loss", "learning_rate", "grad_norm", "tokens", "tokens_per_s", "elapsed_s", "eta_s"):
        assert all(key in e for e in train), key
    assert train[-1]["eta_s"] == 0.0 and train[-1]["tokens"] == report.tokens_trained
    assert [e["step"] for e in lines if e["type"] == "eval"] == [0, 20, 40, 60]
    assert [e["step"] for e in lines if e["type"] == "checkpoint"] == [20, 40]
    saved = json.loads((out / "training_report.json").read_text())
    assert saved["status"] == "completed" and saved["data"]["train"]["examples"] == 216
    assert 0 < saved["data"]["train"]["masked_share"] < 1 and saved["data"]["train"]["truncated"] == 0
    assert saved["loss_path"] == "selected positions" and saved["adapter_sha256"]
    html = (out / "training_report.html").read_text()
    assert "<svg" in html and "Training report" in html and "validation loss" in html
    assert "![training and validation loss](loss.svg)" in (out / "training_report.md").read_text()
    assert (out / "adapter" / "tokenizer_config.json").is_file() and (out / "adapter" / "generation_config.json").is_file()
    generation = json.loads((out / "adapter" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2  # <|end|>, the token that closes assistant turns


def test_the_reloaded_adapter_gives_the_trained_model_logits_exactly(
        learned: tuple[FineTuneRun, Any], tiny_model: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run, (_, _, out) = learned
    run.model.eval()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "adapter").eval()
    text = "<|user|>\nIs 1234 even or odd?<|end|>\n<|assistant|>\n"
    trained = logits_of(run.model, run.tokenizer, text)
    assert torch.equal(trained, logits_of(reloaded, run.tokenizer, text))
    base = logits_of(AutoModelForCausalLM.from_pretrained(tiny_model), run.tokenizer, text)
    assert not torch.allclose(trained, base, atol=1e-3)  # the adapter is really applied


def test_checkpoints_keep_only_the_last_k(learned: tuple[FineTuneRun, Any]) -> None:
    _, (_, _, out) = learned
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    state = json.loads((out / "checkpoint-40" / "state.json").read_text())
    assert state["step"] == 40 and state["metrics"]["valid_loss"] is not None


def test_a_seeded_run_repeats_exactly_and_resume_ends_where_an_uninterrupted_run_ends(
        tiny_model: Path, parity_data: Path, tmp_path: Path) -> None:
    import torch

    spec = spec_for(tiny_model, max_steps=12, eval_every=4, batch_size=8)
    whole = finetune(spec, parity_data, tmp_path / "whole")

    stop_after = 5
    steps_seen: list[int] = []

    def on_event(event: TrainingEvent) -> None:
        if event.type == "train":
            steps_seen.append(event.step)

    stopped = finetune(spec, parity_data, tmp_path / "parts", on_event=on_event,
                       should_stop=lambda: len(steps_seen) >= stop_after)
    parts = tmp_path / "parts"
    assert stopped.status == "stopped" and stopped.steps == stop_after
    assert (parts / f"checkpoint-{stop_after}").is_dir()
    assert not (parts / "adapter").exists() and not (parts / "training_report.json").exists()
    last = json.loads((parts / "events.jsonl").read_text().splitlines()[-1])
    assert last["status"] == "stopped" and last["step"] == stop_after
    # Same seed, same data: the first steps are identical to the uninterrupted run.
    assert [p.value for p in stopped.train_loss] == [p.value for p in whole.train_loss[:stop_after]]

    resumed = finetune(spec, parity_data, parts, resume=True)
    assert resumed.status == "completed" and resumed.steps == whole.steps == 12
    assert resumed.resumed_from == [stop_after]
    assert [p.step for p in resumed.train_loss] == [p.step for p in whole.train_loss]
    assert [p.value for p in resumed.train_loss] == pytest.approx([p.value for p in whole.train_loss], rel=1e-5)
    assert resumed.final_valid_loss == pytest.approx(whole.final_valid_loss, rel=1e-5)
    a, b = adapter_weights(tmp_path / "whole" / "adapter"), adapter_weights(parts / "adapter")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_the_merged_model_equals_base_plus_adapter(tiny_model: Path, parity_data: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = finetune(spec_for(tiny_model, max_steps=4, merge=True), parity_data, tmp_path / "run")
    merged_dir = Path(report.outputs["merged"])
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model),
                                             tmp_path / "run" / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    text = "<|user|>\nIs 77 even or odd?<|end|>\n<|assistant|>\n"
    difference = (logits_of(merged, tokenizer, text) - logits_of(with_adapter, tokenizer, text)).abs().max()
    assert difference < 1e-4, difference  # float32 rounding of W + BA vs Wx + BAx
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_gradient_accumulation_gives_the_same_step_as_one_big_batch(
        tiny_model: Path, parity_data: Path, tmp_path: Path) -> None:
    import torch

    common = {"max_steps": 1, "lora": {"dropout": 0.0}, "group_by_length": False, "val_split": 0.0}
    one = finetune(spec_for(tiny_model, batch_size=16, **common), parity_data, tmp_path / "one")
    two = finetune(spec_for(tiny_model, batch_size=8, grad_accum=2, **common), parity_data, tmp_path / "two")
    assert one.train_loss[0].value == pytest.approx(two.train_loss[0].value, rel=1e-5)
    a, b = adapter_weights(tmp_path / "one" / "adapter"), adapter_weights(tmp_path / "two" / "adapter")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_packing_keeps_examples_apart_so_the_loss_is_unchanged(
        tiny_model: Path, parity_data: Path, tmp_path: Path) -> None:
    common = {"max_steps": 2, "lora": {"dropout": 0.0}, "val_split": 0.0}
    plain = finetune(spec_for(tiny_model, **common), parity_data, tmp_path / "plain")
    packed = finetune(spec_for(tiny_model, packing=True, **common), parity_data, tmp_path / "packed")
    assert [p.value for p in packed.train_loss] == pytest.approx([p.value for p in plain.train_loss], rel=1e-4)
    assert packed.packing_note is not None and "stays within each example" in packed.packing_note
    assert packed.tokens_trained == plain.tokens_trained


def test_invalid_lines_and_unlearnable_records_are_listed_with_reasons(
        tiny_model: Path, tmp_path: Path, parity_records: Callable[[int, int], list[dict]],
        write_jsonl: Callable[[Path, list[dict]], Path]) -> None:
    records = parity_records(30, 3)
    records.append({"messages": [{"role": "user", "content": "word " * 100}, {"role": "assistant", "content": "x"}]})
    data = write_jsonl(tmp_path / "data.jsonl", records)
    with data.open("a") as handle:
        handle.write("{not json\n")
        handle.write(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    report = finetune(spec_for(tiny_model, max_steps=1, val_split=0.0, max_seq_len=48), data, tmp_path / "run")
    assert report.data.rejected == {"invalid_json": 1, "invalid_role": 1}
    assert report.data.train.dropped == {"truncated_to_nothing": 1} and report.data.train.examples == 30
    reasons = sorted(json.loads(line)["reason"] for line in (tmp_path / "run" / "rejected.jsonl").read_text().splitlines())
    assert reasons == ["invalid_json", "invalid_role", "truncated_to_nothing"]


def test_a_loss_that_is_not_a_number_stops_the_run_with_the_step_and_a_hint(
        tiny_model: Path, parity_data: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assay.training import TrainingDiverged

    broken = tmp_path / "broken-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("inf")  # as a corrupted checkpoint would
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(broken)
    with pytest.raises(TrainingDiverged, match="at step 1: the run diverged; lower the learning rate"):
        finetune(spec_for(broken, max_steps=3), parity_data, tmp_path / "run")
    last = json.loads((tmp_path / "run" / "events.jsonl").read_text().splitlines()[-1])
    assert last["status"] == "failed" and "diverged" in last["message"]
    assert not (tmp_path / "run" / "adapter").exists()
