"""`assay finetune`, `sweep`, `generate` and `models` as a user runs them: exit codes, one-line errors,
Ctrl-C/SIGTERM stopping at a checkpoint, and --resume finishing the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("assay-home")
    return dict(os.environ, ASSAY_HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from assay.training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "parity.jsonl"
    lines = [json.dumps({"instruction": f"Is {n} even or odd?", "output": "even" if n % 2 == 0 else "odd"})
             for n in range(100, 260)]
    path.write_text("\n".join(lines) + "\n")
    return path


def assay(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assay.api.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


SHORT = ("--max-seq-len", "64", "--set", "eval_before_training=false", "--quiet")


def test_finetune_then_generate_with_the_adapter(tiny: Path, data: Path, tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "run"
    result = assay("finetune", data, "--model", tiny, "--out", out, "--max-steps", "3", "--batch-size", "8",
                   "--lora-r", "4", "--target-modules", "q_proj,v_proj", "--merge", *SHORT, env=env)
    assert result.returncode == 0, result.stderr
    assert f"adapter: {out / 'adapter'}" in result.stdout and "validation loss" in result.stdout
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert (out / "merged" / "config.json").is_file() and (out / "training_report.html").is_file()
    one_line_error(assay("finetune", data, "--model", tiny, "--out", out, *SHORT, env=env), "--overwrite")
    answer = assay("generate", "--model", tiny, "--adapter", out / "adapter", "Is 7 even or odd?",
                   "--max-new-tokens", "3", env=env)
    assert answer.returncode == 0 and answer.stdout.endswith("\n"), answer.stderr


def test_sigterm_stops_at_a_checkpoint_and_resume_finishes(
        tiny: Path, data: Path, tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "run"
    args = ["finetune", data, "--model", tiny, "--out", out, "--max-steps", "60", "--batch-size", "16", *SHORT]
    process = subprocess.Popen([sys.executable, "-m", "assay.api.cli", *map(str, args)], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    events = out / "events.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if events.exists() and '"type": "train"' in events.read_text():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert "stopped at step" in stderr and "--resume" in stderr and "Traceback" not in stderr
    last = json.loads(events.read_text().splitlines()[-1])
    assert last["status"] == "stopped"
    assert (out / f"checkpoint-{last['step']}" / "state.json").is_file() and not (out / "adapter").exists()

    resumed = assay(*args, "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 60 and report["resumed_from"] == [last["step"]]


def test_sweep_ranks_points_and_draws_a_heatmap(tiny: Path, data: Path, tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "sweep"
    result = assay("sweep", data, "--model", tiny, "--lr", "1e-3,4e-3", "--batch-size", "8", "--max-steps", "2",
                   "--out", out, "--set", "max_seq_len=64", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert "| rank | learning rate |" in result.stdout and "learning rate / effective batch size" in result.stdout
    report = json.loads((out / "sweep.json").read_text())
    assert len(report["points"]) == 2 and report["best"]["valid_loss"] == min(p["valid_loss"] for p in report["points"])
    assert "<svg" in (out / "sweep.html").read_text()
    assert (out / "points" / "lr0.001-bs8" / "adapter").is_dir()


def test_bad_arguments_are_one_line_and_exit_2(tiny: Path, data: Path, tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "out"
    one_line_error(assay("finetune", data, "--model", "gpt-17", "--out", out, env=env),
                   "unknown model 'gpt-17'; known models: smollm2-135m-instruct, tiny")
    one_line_error(assay("finetune", data, "--model", tiny, "--out", out, "--set", "lora.rank=8", env=env),
                   "unknown key 'lora.rank'")
    one_line_error(assay("finetune", data, "--model", tiny, "--out", out, "--validation", data, "--val-split", "0.2",
                         env=env), "not both")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    one_line_error(assay("finetune", empty, "--model", tiny, "--out", out, env=env), "is empty")
    one_line_error(assay("finetune", data, "--model", tiny, "--out", out, "--lr", "-1", env=env),
                   "learning_rate: Input should be greater than 0")
    assert not out.exists()


def test_help_lists_the_training_commands(env: dict[str, str]) -> None:
    result = assay("--help", env=env)
    for command in ("finetune", "sweep", "generate", "models"):
        assert command in result.stdout


def test_models_add_list_and_show(tiny: Path, env: dict[str, str]) -> None:
    added = assay("models", "add", "mine", tiny, env=env)
    assert added.returncode == 0 and "added mine: hf_folder" in added.stdout, added.stderr
    listed = json.loads(assay("models", "list", "--json", env=env).stdout)
    assert [m["name"] for m in listed] == ["smollm2-135m-instruct", "tiny", "mine"]
    shown = json.loads(assay("models", "show", "mine", env=env).stdout)
    assert shown["architecture"] == "LlamaForCausalLM" and shown["ready"] is True
    one_line_error(assay("models", "show", "nope", env=env), "known models: smollm2-135m-instruct, tiny, mine")
