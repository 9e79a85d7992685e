"""Publishing a run's outputs as one unit, checked with real signals sent in the middle of a publish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from assay.curation.pipeline import run_pipeline
from assay.curation.publish import MANIFEST, OUTPUT_FILES, OutputError, published_outputs
from assay.schemas.curation import CurationSpec

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
SPEC = CurationSpec.model_validate({"steps": ["validate"]})


def dataset(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({**CHAT, "id": f"{path.stem}-{i}"}) + "\n" for i in range(n)))
    return path


# The second run is made to receive a signal from inside its publish: right after its first file moves.
DRIVER = textwrap.dedent("""
    import os, signal, sys
    from assay.curation import publish
    from assay.curation.pipeline import run_pipeline
    from assay.schemas.curation import CurationSpec

    real_replace, moves = os.replace, []
    def replace(src, dest):
        real_replace(src, dest)
        moves.append(dest)
        if len(moves) == 1:
            os.kill(os.getpid(), getattr(signal, sys.argv[3]))
    publish.os.replace = replace
    run_pipeline(CurationSpec.model_validate({"steps": ["validate"]}), sys.argv[1], sys.argv[2])
    print("the run returned", flush=True)
""")


def _default_signals() -> None:
    # A suite started with nohup or in the background hands its children SIGHUP / SIGINT ignored, and a
    # process rightly keeps an inherited "ignore"; the driver stands for a user's foreground run.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def publish_with_a_signal(tmp_path: Path, out: Path, signame: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", DRIVER, str(dataset(tmp_path / "second.jsonl", 5)), str(out), signame],
                          capture_output=True, text=True, timeout=120, preexec_fn=_default_signals)


def test_a_published_folder_lists_its_files_in_a_manifest_written_last(tmp_path: Path) -> None:
    out = tmp_path / "o"
    run_pipeline(SPEC, dataset(tmp_path / "first.jsonl", 3), out)
    files = published_outputs(out)
    assert set(files) == set(OUTPUT_FILES)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["files"]["curated.jsonl"]["bytes"] == (out / "curated.jsonl").stat().st_size
    assert not list(out.glob(".assay-run-*"))


def test_sigterm_during_a_publish_waits_until_every_file_is_in_place(tmp_path: Path) -> None:
    out = tmp_path / "o"
    run_pipeline(SPEC, dataset(tmp_path / "first.jsonl", 3), out)
    result = publish_with_a_signal(tmp_path, out, "SIGTERM")
    assert result.returncode == -signal.SIGTERM, result.stderr[-800:]  # the default action, once published
    assert "the run returned" not in result.stdout
    files = published_outputs(out)  # a complete run, and only the second one
    assert json.loads(files["report.json"].read_text())["input_path"].endswith("second.jsonl")
    assert [json.loads(line)["id"] for line in files["curated.jsonl"].read_text().splitlines()] == [
        f"second-{i}" for i in range(5)]


@pytest.mark.parametrize("signame", ["SIGINT", "SIGHUP"])
def test_other_termination_signals_are_held_too(tmp_path: Path, signame: str) -> None:
    out = tmp_path / "o"
    run_pipeline(SPEC, dataset(tmp_path / "first.jsonl", 3), out)
    result = publish_with_a_signal(tmp_path, out, signame)
    assert result.returncode != 0 and "the run returned" not in result.stdout
    assert json.loads(published_outputs(out)["report.json"].read_text())["input_path"].endswith("second.jsonl")


def test_a_publish_cut_short_by_sigkill_is_never_taken_for_a_complete_run(tmp_path: Path) -> None:
    out = tmp_path / "o"
    run_pipeline(SPEC, dataset(tmp_path / "first.jsonl", 3), out)
    result = publish_with_a_signal(tmp_path, out, "SIGKILL")
    assert result.returncode == -signal.SIGKILL
    assert json.loads((out / "curated.jsonl").read_text().splitlines()[0])["id"] == "second-0"  # moved first
    assert json.loads((out / "report.json").read_text())["input_path"].endswith("first.jsonl")  # not yet
    with pytest.raises(OutputError, match="no manifest.json"):
        published_outputs(out)
    run_pipeline(SPEC, dataset(tmp_path / "third.jsonl", 2), out)  # the next run repairs the folder
    assert json.loads(published_outputs(out)["report.json"].read_text())["input_path"].endswith("third.jsonl")
    assert not list(out.glob(".assay-run-*"))


def test_a_file_changed_after_publishing_makes_the_folder_untrusted(tmp_path: Path) -> None:
    out = tmp_path / "o"
    run_pipeline(SPEC, dataset(tmp_path / "first.jsonl", 3), out)
    with (out / "curated.jsonl").open("a") as handle:
        handle.write(json.dumps(CHAT) + "\n")
    with pytest.raises(OutputError, match="mixes runs"):
        published_outputs(out)


def test_a_topics_file_of_an_earlier_run_is_not_left_beside_a_newer_run(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "topics.json").write_text("{}")
    (out / "mine.txt").write_text("a file of the user")
    run_pipeline(SPEC, dataset(tmp_path / "first.jsonl", 3), out)
    assert not (out / "topics.json").exists() and (out / "mine.txt").read_text() == "a file of the user"
    assert os.listdir(out) and "topics.json" not in published_outputs(out)
