"""`assay eval` as a user runs it: bad input is one line and exit 2; a run prints the comparison and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from assay.training.tiny import build_tiny_model

QUIZ = [{"question": f"Question number {i}: which of these words is the name of a colour?",
         "choices": ["table", "green", "river", "seven"], "answer": 1} for i in range(5)]


def assay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assay.api.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", seed=2)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def run_eval(model: Path, task: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return assay("eval", "--model", model, "--tasks", task, "--out", out, "--quiet", *extra)


def test_a_task_file_of_the_wrong_shape_names_the_expected_fields(model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "2+2?", "options": ["3", "4"]}) + "\n")
    line = one_error_line(run_eval(model, f"mc:{bad}", tmp_path / "out"))
    assert line == (f"error: {bad}:1: expected fields question, choices, answer (multiple choice: answer is an index, "
                    "a letter or the choice text); missing question, choices, answer")


def test_an_answer_index_out_of_range_is_one_line(model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "quiz.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in [*QUIZ[:2], {**QUIZ[0], "answer": 4}]))
    line = one_error_line(run_eval(model, f"mc:{bad}", tmp_path / "out"))
    assert line == f"error: {bad}:3: answer index 4 is out of range for 4 choices (0-3)"


def test_an_empty_file_is_one_line(model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert one_error_line(run_eval(model, f"arc_easy:{empty}", tmp_path / "out")) == \
        f"error: {empty}: the file is empty (no items)"


def test_an_unknown_task_is_one_line(model: Path, tmp_path: Path) -> None:
    line = one_error_line(run_eval(model, "not_a_benchmark", tmp_path / "out"))
    assert line.startswith("error: unknown task 'not_a_benchmark': not a task of lm-eval's registry; give a local file")
    line = one_error_line(run_eval(model, "arcc:x.json", tmp_path / "out"))
    assert line.startswith("error: tasks: unknown task format 'arcc' in 'arcc:x.json'")


def test_a_spec_file_is_checked_and_flags_complete_it(tmp_path: Path) -> None:
    config = tmp_path / "eval.yaml"
    config.write_text("model: m\ntasks: [mc:quiz.jsonl]\ncolour: blue\n")
    assert one_error_line(assay("eval", "--config", config, "--out", tmp_path / "out", "--quiet")) == \
        "error: unknown key 'colour'"
    config.write_text("tasks: [mc:quiz.jsonl]\n")
    assert one_error_line(assay("eval", "--config", config, "--out", tmp_path / "out")) == \
        "error: model: required (give --model or `model:` in --config)"
    line = one_error_line(assay("eval", "--config", config, "--model", tmp_path, "--out", tmp_path / "out"))
    assert line == f"error: model {tmp_path}: the folder has no config.json (not a Hugging Face model folder)"


def test_a_missing_model_or_adapter_is_one_line(model: Path, tmp_path: Path) -> None:
    quiz = tmp_path / "quiz.jsonl"
    quiz.write_text("".join(json.dumps(r) + "\n" for r in QUIZ))
    line = one_error_line(run_eval(tmp_path / "no-model", f"mc:{quiz}", tmp_path / "out"))
    assert line.startswith("error: ") and str(tmp_path / "no-model") in line
    line = one_error_line(run_eval(model, f"mc:{quiz}", tmp_path / "out", "--adapter", tmp_path))
    assert line.startswith(f"error: adapter {tmp_path}: no adapter_config.json here")


def test_a_run_prints_the_comparison_and_where_the_report_is(model: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "run" / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(model),
                   LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(adapter)
    quiz = tmp_path / "quiz.jsonl"
    quiz.write_text("".join(json.dumps(r) + "\n" for r in QUIZ))
    result = run_eval(model, f"mc:{quiz}", tmp_path / "out", "--adapter", tmp_path / "run", "--limit", "4",
                      "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "benchmark results" in result.stdout and "mc" in result.stdout
    assert f"report: {(tmp_path / 'out' / 'eval_report.html').resolve()}" in result.stdout.replace("\n", "")
    report = json.loads((tmp_path / "out" / "eval_report.json").read_text())
    assert [m["label"] for m in report["models"]] == ["base", "run"]
    assert report["tasks"][0]["items_evaluated"] == 4 and report["models"][1]["adapter_check"]["applied"]
