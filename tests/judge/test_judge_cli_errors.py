"""Bad input to `assay judge` and `assay serve-model`: one clear line naming the problem, exit 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assay.api.cli import app

runner = CliRunner()
GOOD_RUBRIC = """\
name: r
mode: pairwise
"""


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture()
def rubric(tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(GOOD_RUBRIC)
    return path


def judge_args(data: Path, rubric: Path, tmp_path: Path) -> list[str]:
    return ["judge", str(data), "--rubric", str(rubric), "--judge-model", "m", "--judge-url", "http://127.0.0.1:9/v1",
            "--out", str(tmp_path / "out"), "--no-cache"]


@pytest.mark.parametrize(("lines", "expected"), [
    (['{"id": "1", "prompt": "p", "response_a": "a", "response_b": "b"}', "{broken"], ":2: not valid JSON"),
    (['{"id": "1", "prompt": "p", "response_a": "a"}'], ":1: field 'response_b': field required"),
    (['{"id": "1", "prompt": "p", "response_a": "a", "response_b": 3}'], ":1: field 'response_b'"),
    (['{"id": "1", "prompt": "p", "response_a": "a", "response_b": "b"}'] * 2, ":2: field 'id': duplicate id '1'"),
    (['[1, 2]'], ":1: a record must be a JSON object"),
    ([""], ": no records"),
])
def test_a_bad_data_line_is_named_with_its_line_and_field(tmp_path: Path, rubric: Path, lines: list[str],
                                                          expected: str) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    code, output = run(*judge_args(data, rubric, tmp_path))
    assert code == 2 and expected in output and "Traceback" not in output
    assert not (tmp_path / "out" / "judge_report.json").exists()


def test_a_bad_label_is_named(tmp_path: Path, rubric: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "1", "prompt": "p", "response_a": "a", "response_b": "b", "label": "maybe"}))
    code, output = run(*judge_args(data, rubric, tmp_path), "--label-field", "label")
    assert code == 2 and "field 'label': label 'maybe' is not one of a/b/tie" in output


@pytest.mark.parametrize(("text", "expected"), [
    ("name: r\nmode: pairwise\ncolour: blue\n", "unknown key 'colour'"),
    ("name: r\nmode: sideways\n", "mode"),
    ("name: r\nmode: absolute\n", "at least one criterion"),
    ("name: r\nmode: absolute\ncriteria: [{name: c, description: d, levels: [{score: 1, description: x}]}]\n",
     "needs at least two score levels"),
    ("name: r\nmode: pairwise\ntemplate: '{{ prompt '\n", "rubric template line 1"),
    ("name: r\nmode: pairwise\nchecks: [{type: regex, pattern: '('}]\n", "invalid regular expression"),
    ("- just a list\n", "must be a YAML mapping"),
])
def test_a_bad_rubric_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "1", "prompt": "p", "response_a": "a", "response_b": "b"}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, output = run(*judge_args(data, bad, tmp_path))
    assert code == 2 and expected in output, output


def test_an_unknown_rubric_or_missing_file_is_named(tmp_path: Path, rubric: Path) -> None:
    code, output = run(*judge_args(tmp_path / "missing.jsonl", rubric, tmp_path))
    assert code == 2 and "missing.jsonl: cannot read" in output
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "1", "prompt": "p", "response_a": "a", "response_b": "b"}))
    code, output = run(*judge_args(data, tmp_path / "nope.yaml", tmp_path))
    assert code == 2 and "neither a file nor a built-in rubric" in output


def test_an_unreachable_judge_server_is_one_line_and_exit_1(tmp_path: Path, rubric: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "1", "prompt": "p", "response_a": "a", "response_b": "b"}))
    code, output = run(*judge_args(data, rubric, tmp_path), "--attempts", "1")
    assert code == 1 and "cannot reach judge server" in output and "Traceback" not in output


def test_serve_model_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    code, output = run("serve-model", "--model", str(tmp_path))
    assert code == 2 and "no config.json" in output
    (tmp_path / "config.json").write_text("{}")
    code, output = run("serve-model", "--model", str(tmp_path), "--adapter", "x")
    assert code == 2 and "--adapter needs NAME=DIR" in output
    code, output = run("serve-model", "--model", str(tmp_path), "--adapter", f"x={tmp_path}")
    assert code == 2 and "not a LoRA adapter folder" in output


def test_calibrate_names_an_unknown_set(tmp_path: Path) -> None:
    code, output = run("judge", "calibrate", "--set", "nope", "--judge-model", "m", "--judge-url", "http://x/v1")
    assert code == 2 and "unknown calibration set 'nope'" in output
