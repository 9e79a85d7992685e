"""The length filter, the worked example of a step added through the registry: one schemas module, one
curation module, one template and one registry line, and it is in the spec, the pipeline, the report
and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from assay.curation.length_filter import LengthFilterStep, measure, verdict
from assay.curation.pipeline import run_pipeline
from assay.curation.steps import StepContext
from assay.schemas.curation import CurationSpec
from assay.schemas.length_filter import LengthFilterConfig


def chat(record_id: str, answer: str, question: str = "a question") -> dict:
    return {"id": record_id, "messages": [{"role": "user", "content": question},
                                          {"role": "assistant", "content": answer}]}


RECORDS = [chat("ok", "A full answer of several words."), chat("terse", "Yes."),
           chat("no", "No"), chat("essay", "word " * 400)]


def write(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_step_is_in_the_spec_the_pipeline_and_the_report(tmp_path: Path) -> None:
    spec = CurationSpec.model_validate({"steps": ["validate", "length_filter"],
                                        "length_filter": {"min_chars": 10, "max_words": 100}})
    assert isinstance(spec.section("length_filter"), LengthFilterConfig)
    assert "length_filter" not in CurationSpec().steps  # opt-in: not a default step
    schema = CurationSpec.model_json_schema(by_alias=True)
    assert "length_filter" in schema["properties"] and "length_filter" in json.dumps(schema["properties"]["steps"])

    report = run_pipeline(spec, write(tmp_path, RECORDS), tmp_path / "out")
    row = report.funnel[-1]
    assert (row.step, row.records_in, row.kept, row.dropped) == ("length_filter", 4, 1,
                                                                 {"too_short": 2, "too_long": 1})
    section = report.section("length_filter")
    assert section is not None and (section.too_short, section.too_long, section.shortest_kept) == (2, 1, 31)
    rejected = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "rejected.jsonl").read_text().splitlines())}
    assert rejected["terse"]["message"] == "4 characters, fewer than min_chars 10"
    assert rejected["essay"]["details"] == {"chars": 1999, "words": 400}
    md = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    assert "## Answer length" in md and "| too short | 10 characters, 0 words | 2 |" in md
    assert '<section id="length_filter">' in html and "<h2>Answer length</h2>" in html


def test_the_command_line_has_its_flags(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "assay.api.cli", "curate"]
    help_text = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120).stdout
    assert "--min-chars" in help_text and "--max-chars" in help_text and "length_filter" in help_text
    out = tmp_path / "out"
    result = subprocess.run([*command, write(tmp_path, RECORDS), "--out", out, "--steps", "validate,length_filter",
                             "--min-chars", "10", "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in (out / "curated.jsonl").read_text().splitlines()] == ["ok", "essay"]


def test_measuring_is_apart_from_deciding_and_reads_the_chosen_roles() -> None:
    config = LengthFilterConfig(roles=["user"], min_words=3, max_chars=40)
    record = chat("r", "ignored", question="  how are you today  ")
    assert measure(record, config) == (17, 4)
    assert verdict(measure(record, config), config) is None
    assert verdict(measure(chat("r", "x", question="hi there"), config), config) == (
        "too_short", "2 words, fewer than min_words 3")


def test_limits_out_of_order_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"max_chars \(5\) is below min_chars \(10\)"):
        LengthFilterConfig(min_chars=10, max_chars=5)


def test_a_record_the_step_cannot_measure_costs_only_itself(tmp_path: Path) -> None:
    step = LengthFilterStep(LengthFilterConfig(min_chars=1)).bind(StepContext(tmp_path))
    broken = {"id": "b", "messages": None}
    kept = [r["id"] for batch in step.run(iter([[chat("a", "fine"), broken, chat("c", "also fine")]])) for r in batch]
    assert kept == ["a", "c"] and [d.reason for d in step.ctx.drops] == ["step_error"]
