"""The step contract and the pipeline around it: failure isolation, step instances, the conservation
invariant, per-step timing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.curation.pipeline import PipelineError, run_pipeline
from assay.curation.steps import Batch, Step, StepConfigError, StepContext
from assay.schemas.curation import CurationSpec


class Upper(Step):
    name = "upper"

    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for whole in batches:
            yield [r for batch, _ in self.processable(whole, self.shout) for r in batch]

    @staticmethod
    def shout(batch: Batch) -> list[str]:
        return [r["messages"][0]["content"].upper() for r in batch]


def make(tmp_path: Path) -> Upper:
    return Upper(None).bind(StepContext(tmp_path))


def test_a_record_the_step_fails_on_is_dropped_with_the_error_type_and_the_rest_go_on(tmp_path: Path) -> None:
    step = make(tmp_path)
    good = [{"id": str(i), "messages": [{"role": "user", "content": f"secret {i}"}]} for i in range(3)]
    bad = {"id": "b", "messages": [{"role": "user", "content": None}]}
    kept = [r["id"] for batch in step.run(iter([[good[0], bad, good[1]], [good[2]]])) for r in batch]
    assert kept == ["0", "1", "2"]
    [drop] = step.ctx.drops
    assert (drop.record["id"], drop.reason, drop.details["error"]) == ("b", "step_error", "AttributeError")
    assert drop.details["where"].startswith("test_steps.py:")
    assert "secret" not in drop.message and step.ctx.dropped[("upper", "step_error")] == 1


def test_settings_errors_are_not_treated_as_bad_records(tmp_path: Path) -> None:
    step = make(tmp_path)

    def broken(batch: Batch) -> None:
        raise StepConfigError("model not installed")

    with pytest.raises(StepConfigError):
        step.processable([{"id": "1"}, {"id": "2"}], broken)
    assert not step.ctx.drops


# ---------------------------------------------------------------- steps in a pipeline


def chat(i: int) -> dict:
    return {"id": f"r{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                        {"role": "assistant", "content": f"answer {i}"}]}


def write_input(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(n)))
    return path


class DropOdd(Step[None]):
    """Drops every odd-numbered record, with a reason."""

    name = "drop_odd"

    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            kept = []
            for record in batch:
                if int(record["id"][1:]) % 2:
                    self.drop(record, "odd")
                else:
                    kept.append(record)
            yield kept


class Loses(Step[None]):
    """A buggy step: the last record of every batch vanishes without a reason."""

    name = "loses"

    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            yield batch[:-1]


class Sleeps(Step[float]):
    """Works `config` seconds per batch."""

    name = "sleeps"

    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            time.sleep(self.config)
            yield batch


class Idle(Step[None]):
    name = "idle"

    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        yield from batches


def test_a_step_instance_runs_in_the_pipeline_without_being_registered(tmp_path: Path) -> None:
    report = run_pipeline(CurationSpec(), write_input(tmp_path, 6), tmp_path / "out", steps=[DropOdd(None)])
    assert report.steps == ["validate", "drop_odd"]
    assert [(row.step, row.records_in, row.kept, row.dropped) for row in report.funnel] == [
        ("validate", 6, 6, {}), ("drop_odd", 6, 3, {"odd": 3})]
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["id"], r["step"], r["reason"]) for r in rejected] == [("r1", "drop_odd", "odd"),
                                                                    ("r3", "drop_odd", "odd"),
                                                                    ("r5", "drop_odd", "odd")]


def test_names_and_instances_mix_and_keep_their_order(tmp_path: Path) -> None:
    spec = CurationSpec.model_validate({"dedup": {"near": False}})
    path = tmp_path / "in.jsonl"  # four texts, each twice
    path.write_text("".join(json.dumps({**chat(i % 4), "id": f"c{i}"}) + "\n" for i in range(8)))
    report = run_pipeline(spec, path, tmp_path / "out", steps=["dedup", Idle(None)])
    assert [row.step for row in report.funnel] == ["validate", "dedup", "idle"]
    assert report.funnel[1].dropped == {"exact_duplicate": 4} and report.funnel[2].records_in == 4
    assert report.section("dedup") is not None


def test_a_step_that_loses_a_record_fails_the_run_and_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = CurationSpec.model_validate({"batch_size": 4})
    with pytest.raises(PipelineError, match=r"step 'loses' lost records: 10 in \+ 0 added != 7 out \+ 0 dropped"):
        run_pipeline(spec, write_input(tmp_path, 10), out, steps=[Loses(None)])
    assert list(out.iterdir()) == []  # no curated.jsonl that looks complete, no work folder left


def test_each_step_is_timed_alone_and_validation_is_timed_too(tmp_path: Path) -> None:
    spec = CurationSpec.model_validate({"batch_size": 100})
    report = run_pipeline(spec, write_input(tmp_path, 5_000), tmp_path / "out",
                          steps=[Sleeps(0.04), Idle(None)])
    seconds = {row.step: row.seconds for row in report.funnel}
    # 50 batches: the sleeping step works 2 s; the idle step after it waits for it all that time
    # (a cumulative figure would give it over 2 s) but does nothing itself.
    assert 2.0 <= seconds["sleeps"] < 3.5
    assert seconds["idle"] < 0.5
    assert 0.0 < seconds["validate"] < 5.0
