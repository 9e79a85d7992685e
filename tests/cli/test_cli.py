"""The `assay` command line as a user runs it: exit codes, summaries, rejects files, curate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def assay(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assay.api.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_help_lists_the_commands() -> None:
    result = assay("--help")
    assert result.returncode == 0
    for command in ("validate", "curate", "make-tiny-model", "schemas"):
        assert command in result.stdout


def test_help_does_not_import_heavy_libraries() -> None:
    code = ("import sys; sys.argv=['assay','--help']\nimport api.cli\ntry:\n    api.cli.main()\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('torch','transformers','presidio_analyzer','fastapi','sklearn','polars') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout[-500:] + result.stderr[-500:]


def test_validate_exits_0_when_all_records_are_valid(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps(CHAT) + "\n")
    result = assay("validate", path, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["valid"] == 1 and summary["format"] == "chat" and summary["format_detected"] is True


def test_validate_exits_1_and_writes_rejects_when_some_are_invalid(tmp_path: Path) -> None:
    path = tmp_path / "some.jsonl"
    path.write_text(json.dumps(CHAT) + "\n{oops\n")
    rejects = tmp_path / "out" / "rejects.jsonl"
    result = assay("validate", path, "--rejects", rejects)
    assert result.returncode == 1
    assert "1 valid" in result.stdout and "invalid_json" in result.stdout and "line 2" in result.stdout
    entry = json.loads(rejects.read_text())
    assert entry["raw"] == "{oops" and entry["reason"] == "invalid_json" and entry["details"]["column"] == 2


def test_validate_exits_2_with_one_clear_message_for_unreadable_input(tmp_path: Path) -> None:
    result = assay("validate", tmp_path / "nope.jsonl")
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr
    arr = tmp_path / "arr.jsonl"
    arr.write_text(json.dumps([CHAT], indent=2))
    result = assay("validate", arr)
    assert result.returncode == 2 and "pretty-printed JSON array" in result.stderr
    result = assay("validate", arr, "--format", "yaml")
    assert result.returncode == 2 and "--format must be one of" in result.stderr


def test_curate_with_validation_only_writes_every_output(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(CHAT) + "\n" + json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    out = tmp_path / "out"
    result = assay("curate", path, "--out", out, "--steps", "validate", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "curated 1 of 2 records" in result.stdout
    for name in ("curated.jsonl", "rejected.jsonl", "report.json", "report.html", "report.md"):
        assert (out / name).is_file(), name
    assert json.loads((out / "rejected.jsonl").read_text())["reason"] == "no_assistant_turn"


def test_curate_names_an_unknown_spec_key(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("steps: [validate]\nvalidate:\n  max_line_byte: 5\n")
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(CHAT) + "\n")
    result = assay("curate", path, "--out", tmp_path / "o", "--config", spec)
    assert result.returncode == 2 and "unknown key 'validate.max_line_byte'" in result.stderr


def test_set_overrides_a_spec_value_and_names_a_wrong_key(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(CHAT) + "\n")
    long_line = json.dumps({"messages": [{"role": "user", "content": "x" * 200}, {"role": "assistant", "content": "y"}]})
    path.write_text(json.dumps(CHAT) + "\n" + long_line + "\n")
    out = tmp_path / "o"
    result = assay("curate", path, "--out", out, "--steps", "validate", "--set", "validate.max_line_bytes=100", "-q")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "rejected.jsonl").read_text())["reason"] == "line_too_long"
    result = assay("curate", path, "--out", out, "--set", "validate.max_lines=3", "-q")
    assert result.returncode == 2 and "unknown key 'validate.max_lines'" in result.stderr
    result = assay("curate", path, "--out", out, "--set", "novalue", "-q")
    assert result.returncode == 2 and "--set needs SECTION.KEY=VALUE" in result.stderr


def test_dedup_flags_reach_the_step(tmp_path: Path) -> None:
    text = "the same long answer about how the model learns from data in every record"
    records = [{"id": str(year), "year": year, "messages": [{"role": "user", "content": "q"},
                                                           {"role": "assistant", "content": text + "!" * i}]}
               for i, year in enumerate((2001, 2002))]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "o"
    result = assay("curate", path, "--out", out, "--steps", "validate,dedup", "--keep", "longest", "-q")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in (out / "curated.jsonl").read_text().splitlines()] == ["2002"]
    result = assay("curate", path, "--out", out, "--steps", "validate,dedup", "--conflict-field", "year", "-q")
    assert result.returncode == 0 and len((out / "curated.jsonl").read_text().splitlines()) == 2
    result = assay("curate", path, "--out", out, "--steps", "validate,dedup", "--keep", "best", "-q")
    assert result.returncode == 2 and "dedup.keep" in result.stderr
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": text}) + "\n")
    result = assay("curate", path, "--out", out, "--steps", "validate,dedup", "--decontaminate", bench,
                   "--contamination-method", "minhash", "-q")
    assert result.returncode == 0, result.stderr
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert {(r["reason"], r["details"]["method"]) for r in rejected} == {("contaminated", "minhash")}


def test_an_option_of_a_step_that_does_not_run_is_an_error_not_ignored(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(CHAT) + "\n")
    result = assay("curate", path, "--out", tmp_path / "o", "--steps", "validate,pii", "--max-share", "0.2", "-q")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "options of the balance step were given, but it is not among the steps of this run" in result.stderr
    assert not (tmp_path / "o").exists()


def test_step_settings_that_cannot_work_are_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({**CHAT, "category": "greeting"}) + "\n")
    cases = [
        (["--steps", "validate,dedup", "--against", tmp_path / "missing.jsonl"], "neither a dataset file"),
        (["--steps", "validate,dedup", "--decontaminate", tmp_path / "nothing"], "no such benchmark file"),
        (["--steps", "validate,balance", "--topic-field", "topik"], "no record has this field"),
        (["--steps", "validate,pii", "--set", "pii.model=en_core_web_lg"], "is not installed"),
    ]
    for args, message in cases:
        result = assay("curate", path, "--out", tmp_path / "o", "-q", *args)
        assert result.returncode == 2, (args, result.stderr[-800:])
        assert message in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "o" / "curated.jsonl").exists()
