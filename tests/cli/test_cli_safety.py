"""The command line never destroys an input, never leaves debris, and says what went wrong in one line.

Outputs that are inputs, unusable --out and --config paths, damaged and empty inputs, and termination
by a real SIGTERM, each as a user meets them.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def assay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assay.api.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def one_clear_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-800:])
    assert "Traceback" not in result.stderr, result.stderr[-800:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def dataset(path: Path, n: int = 3) -> Path:
    path.write_text("".join(json.dumps({**CHAT, "id": i}) + "\n" for i in range(n)))
    return path


def work_folders(out: Path) -> list[Path]:
    return sorted(out.glob(".assay-run-*"))


# -- an output that is an input ----------------------------------------------------------------------

@pytest.mark.parametrize("link", ["same path", "symlink", "hardlink"])
def test_validate_refuses_rejects_that_is_the_input(tmp_path: Path, link: str) -> None:
    data = dataset(tmp_path / "f.jsonl")
    before = data.read_bytes()
    rejects = data
    if link == "symlink":
        rejects = tmp_path / "r.jsonl"
        rejects.symlink_to(data)
    elif link == "hardlink":
        rejects = tmp_path / "r.jsonl"
        os.link(data, rejects)
    one_clear_error(assay("validate", data, "--rejects", rejects), "is an input", "destroy")
    assert data.read_bytes() == before


@pytest.mark.parametrize("link", ["same path", "symlink", "hardlink"])
def test_curate_refuses_an_output_folder_whose_outputs_include_the_input(tmp_path: Path, link: str) -> None:
    out = tmp_path / "d"
    out.mkdir()
    if link == "same path":
        data = dataset(out / "curated.jsonl")
    else:
        data = dataset(tmp_path / "in.jsonl")
        (out / "rejected.jsonl").symlink_to(data) if link == "symlink" else os.link(data, out / "report.json")
    before = data.read_bytes()
    one_clear_error(assay("curate", data, "--out", out, "--steps", "validate", "-q"), "is an input")
    assert data.read_bytes() == before
    assert not work_folders(out) and not (out / "manifest.json").exists()


def test_curate_refuses_to_overwrite_its_config_or_a_benchmark(tmp_path: Path) -> None:
    data = dataset(tmp_path / "in.jsonl")
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.md").write_text("steps: [validate]\n")
    one_clear_error(assay("curate", data, "--out", out, "--config", out / "report.md", "-q"), "is an input")
    bench = dataset(out / "topics.json")
    one_clear_error(assay("curate", data, "--out", out, "--steps", "validate,dedup", "--decontaminate", bench, "-q"),
                    "is an input")
    assert json.loads(bench.read_text().splitlines()[0])["id"] == 0


def test_a_failed_validation_keeps_the_previous_rejects_file(tmp_path: Path) -> None:
    data = tmp_path / "f.jsonl"
    data.write_text(json.dumps(CHAT) + "\n{oops\n")
    rejects = tmp_path / "r.jsonl"
    assert assay("validate", data, "--rejects", rejects).returncode == 1
    kept = rejects.read_text()
    arr = tmp_path / "a.jsonl"
    arr.write_text(json.dumps([CHAT], indent=2))  # a whole-file error: exit 2
    one_clear_error(assay("validate", arr, "--rejects", rejects), "pretty-printed")
    assert rejects.read_text() == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "f.jsonl", "r.jsonl"]  # no temporary left


def test_rejects_that_cannot_be_written_are_one_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "f.jsonl"
    data.write_text("{oops\n" * 50_000)
    one_clear_error(assay("validate", data, "--rejects", "/dev/full"), "cannot write --rejects", "No space")
    one_clear_error(assay("validate", data, "--rejects", tmp_path), "cannot write --rejects", "folder")


# -- unusable paths and files --------------------------------------------------------------------------

def test_out_naming_a_file_or_an_unwritable_folder_is_one_clear_error(tmp_path: Path) -> None:
    data = dataset(tmp_path / "in.jsonl")
    a_file = tmp_path / "note.txt"
    a_file.write_text("mine")
    one_clear_error(assay("curate", data, "--out", a_file, "-q"), "is a file")
    one_clear_error(assay("curate", data, "--out", a_file / "sub", "-q"), "is a file")
    # /sys refuses new folders even to root, which chmod cannot make a test of.
    one_clear_error(assay("curate", data, "--out", "/sys/assay-test-out", "--steps", "validate", "-q"),
                    "cannot create the output folder", "/sys/assay-test-out")
    assert a_file.read_text() == "mine"


def test_a_missing_input_creates_no_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "never" / "made"
    one_clear_error(assay("curate", tmp_path / "missing.jsonl", "--out", out, "-q"), "no such file")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(("content", "words"), [
    ("steps: [validate\nbatch_size: 3\n", ["invalid YAML at line 2, column 11"]),
    ("steps:\n\t- validate\n", ["invalid YAML at line 2"]),
    (b"\xff\xfe\x00binary", ["not a text file"]),
    (None, ["is a folder"]),
])
def test_a_config_that_is_not_a_yaml_spec_is_one_clear_error(tmp_path: Path, content: str | bytes | None,
                                                              words: list[str]) -> None:
    data = dataset(tmp_path / "in.jsonl")
    config = tmp_path / "spec.yaml"
    if content is None:
        config.mkdir()
    elif isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    one_clear_error(assay("curate", data, "--out", tmp_path / "o", "--config", config, "-q"), str(config), *words)
    assert not (tmp_path / "o").exists()


def test_a_truncated_gzip_is_a_read_error_with_exit_2(tmp_path: Path) -> None:
    whole = gzip.compress(b"".join(json.dumps({**CHAT, "id": i}).encode() + b"\n" for i in range(3000)))
    data = tmp_path / "cut.jsonl.gz"
    data.write_bytes(whole[: len(whole) * 2 // 3])
    one_clear_error(assay("validate", data), str(data), f"byte {len(whole) * 2 // 3:,}", "truncated")
    out = tmp_path / "o"
    one_clear_error(assay("curate", data, "--out", out, "--steps", "validate", "-q"), str(data), "truncated")
    assert not (out / "curated.jsonl").exists() and not work_folders(out)


# -- inputs that curate to nothing ------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "reason"), [
    (b"", "the input is empty"),
    (b"\n   \n\t\n", "the input holds only blank lines (3)"),
    (bytes(range(256)) * 40, "all 41 records were rejected by validation (it does not look like text)"),
])
def test_inputs_that_curate_to_nothing_warn_and_can_fail(tmp_path: Path, content: bytes, reason: str) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(content)
    out = tmp_path / "o"
    result = assay("curate", data, "--out", out, "--steps", "validate", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"warning: {data}: the curated dataset is empty: {reason}"), result.stderr
    assert "--fail-on-empty" in result.stderr and len(result.stderr.splitlines()) == 1
    assert (out / "curated.jsonl").read_bytes() == b""
    failed = tmp_path / "f"
    one_clear_error(assay("curate", data, "--out", failed, "--steps", "validate", "--fail-on-empty", "-q"),
                    "no valid records", reason, "nothing was published")
    assert not (failed / "curated.jsonl").exists() and not work_folders(failed)


# -- termination ---------------------------------------------------------------------------------------------

def slow_dataset(path: Path) -> Path:
    """Enough distinct records that validation plus near-dedup take several seconds."""
    words = "the model learns from clean diverse examples while duplicates and noise hurt small models".split()
    with path.open("w") as handle:
        for i in range(60_000):
            text = " ".join(words[(i + k) % len(words)] for k in range(40)) + f" {i}"
            handle.write(json.dumps({"id": i, "messages": [{"role": "user", "content": f"q{i}"},
                                                           {"role": "assistant", "content": text}]}) + "\n")
    return path


def test_sigterm_removes_the_work_folder_and_keeps_the_previous_outputs(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert assay("curate", dataset(tmp_path / "small.jsonl"), "--out", out, "--steps", "validate", "-q").returncode == 0
    previous = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "assay.api.cli", "curate", slow_dataset(tmp_path / "big.jsonl"),
                             "--out", str(out), "--steps", "validate,dedup", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not work_folders(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert work_folders(out), "the run never started"
    time.sleep(0.5)  # well inside the run
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-800:]
    assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    assert not work_folders(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == previous


def test_the_next_run_sweeps_work_folders_of_killed_runs(tmp_path: Path) -> None:
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "assay.api.cli", "curate", slow_dataset(tmp_path / "big.jsonl"),
                             "--out", str(out), "--steps", "validate,dedup", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not work_folders(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.kill()  # SIGKILL: nothing of the run can clean up
    proc.wait(timeout=30)
    left = work_folders(out)
    assert len(left) == 1
    (out / ".assay-run-from-an-older-version").mkdir()
    result = assay("curate", dataset(tmp_path / "small.jsonl"), "--out", out, "--steps", "validate", "-q")
    assert result.returncode == 0, result.stderr
    assert not work_folders(out)


def test_sigterm_during_the_publish_reports_the_outputs_as_published(tmp_path: Path) -> None:
    """A signal held while the outputs move into place arrives once they all have: the message must
    say the run was published (it was), not that nothing was."""
    data, out = dataset(tmp_path / "in.jsonl"), tmp_path / "out"
    driver = (
        "import os, signal, sys\n"
        "import assay.curation.publish as publish\n"
        "real = os.replace\n"
        "def replace(*args, **kwargs):\n"
        "    real(*args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "publish.os.replace = replace\n"
        "from assay.api.cli import main\n"
        f"sys.argv = ['assay', 'curate', {str(data)!r}, '--out', {str(out)!r}, '--steps', 'validate', '--quiet']\n"
        "main()\n")
    result = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=300)
    assert result.returncode == 143, result.stderr[-800:]
    assert "outputs were published" in result.stderr and "nothing new" not in result.stderr, result.stderr
    from assay.curation.publish import published_outputs

    assert "curated.jsonl" in published_outputs(out)
