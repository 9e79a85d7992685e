"""The step contract's shared machinery: per-record failure isolation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
    spec = CurationSpec()
    return Upper(spec, StepContext(spec, tmp_path, tmp_path / "in.jsonl"))


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
