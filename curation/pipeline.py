"""The curation pipeline: validate, then each configured step, streaming batches; every drop accounted for.

Outputs land in the output folder only when the whole run succeeded: everything is written to
temporary names first and renamed at the end, so a crash never leaves half a dataset that looks done.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from assay.curation.lengths import LengthProfile
from assay.curation.steps import Batch, Step, StepContext, load_step_class, record_text
from assay.curation.validate import Validator
from assay.schemas.curation import CurationSpec
from assay.schemas.report import DropExample, QualityReport, StepFunnel

OUTPUT_FILES = ("curated.jsonl", "rejected.jsonl", "report.json", "report.html", "report.md")
STEP_OUTPUT_FILES = ("topics.json",)
"""Files steps may add; one left by an earlier run that this run did not write is removed, so the
folder never mixes two runs."""
EXAMPLES_PER_REASON = 3
PREVIEW_CHARS = 240

ProgressCallback = Callable[[str, int, int, float], None]
"""Called as (step, records_in, records_kept, seconds) after batches; used for terminal progress."""


class PipelineError(Exception):
    """The pipeline's own invariants broke (a step lost records): a bug, reported loudly."""


class _StepMeter:
    """Counts the records flowing into and out of one step."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.records_in = 0
        self.kept = 0
        self.seconds = 0.0

    def count_in(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            self.records_in += len(batch)
            yield batch

    def count_out(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                self.seconds += time.perf_counter() - started
                return
            self.seconds += time.perf_counter() - started
            self.kept += len(batch)
            if batch:
                yield batch


def _json_line(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS) + b"\n"


def _preview(entry: dict[str, Any]) -> str:
    record = entry.get("record")
    text = record_text(record) if isinstance(record, dict) else str(entry.get("raw", ""))
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


class Pipeline:
    def __init__(self, spec: CurationSpec, input_path: str | Path, out_dir: str | Path,
                 progress: ProgressCallback | None = None) -> None:
        self.spec = spec
        self.input_path = Path(input_path)
        self.out_dir = Path(out_dir)
        self.progress = progress

    def run(self) -> QualityReport:
        started = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".assay-run-", dir=self.out_dir))
        try:
            report = self._run(work, started)
            for name in OUTPUT_FILES:  # publish only a complete run
                os.replace(work / name, self.out_dir / name)
            produced = set()
            for path in (work / "extra").iterdir():  # step outputs such as topics.json
                os.replace(path, self.out_dir / path.name)
                produced.add(path.name)
            for name in set(STEP_OUTPUT_FILES) - produced:
                (self.out_dir / name).unlink(missing_ok=True)
            return report
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, work: Path, started: float) -> QualityReport:
        spec = self.spec
        ctx = StepContext(spec, work, self.input_path)
        validator = Validator(self.input_path, spec.validate_)
        steps: list[Step] = [load_step_class(name)(spec, ctx) for name in spec.steps if name != "validate"]
        meters = {"validate": _StepMeter("validate"), **{s.name: _StepMeter(s.name) for s in steps}}
        lengths = LengthProfile(spec.report.tokenizer)  # loads the tokenizer now: a bad name fails early
        examples: dict[str, list[DropExample]] = {}
        reasons: Counter[tuple[str, str]] = Counter()

        curated = (work / "curated.jsonl").open("wb")
        rejected = (work / "rejected.jsonl").open("wb")

        def write_rejections(entries: list[dict[str, Any]]) -> None:
            if not entries:
                return
            for step in steps:
                step.scrub(entries)
            rejected.write(b"".join(_json_line(e) for e in entries))
            for entry in entries:
                key = f"{entry['step']}:{entry['reason']}"
                reasons[(entry["step"], entry["reason"])] += 1
                bucket = examples.setdefault(key, [])
                if len(bucket) < EXAMPLES_PER_REASON:
                    details = {k: v for k, v in entry.get("details", {}).items() if k != "message"}
                    bucket.append(DropExample(id=str(entry.get("id")), step=entry["step"], reason=entry["reason"],
                                              message=entry.get("message", ""), preview=_preview(entry),
                                              details=details))

        def source() -> Iterator[Batch]:
            meter = meters["validate"]
            for valid, bad in validator.batches(spec.batch_size):
                meter.records_in += len(valid) + len(bad)
                meter.kept += len(valid)
                write_rejections([r.to_json() for r in bad])
                lengths.add_before(valid)
                self._tick(meter)
                if valid:
                    yield valid

        stream: Iterator[Batch] = source()
        for step in steps:
            meter = meters[step.name]
            stream = meter.count_out(step.run(meter.count_in(stream)))

        try:
            for batch in stream:
                write_rejections([d.to_json() for d in ctx.drops])
                ctx.drops.clear()
                lengths.add_after(batch)
                curated.write(b"".join(_json_line(r) for r in batch))
                for step in steps:
                    self._tick(meters[step.name])
            write_rejections([d.to_json() for d in ctx.drops])
            ctx.drops.clear()
        finally:
            curated.close()
            rejected.close()
            for step in steps:
                step.close()

        funnel = self._funnel(meters, reasons, ctx)
        report = QualityReport(
            input_path=str(self.input_path), output_dir=str(self.out_dir), steps=list(spec.steps),
            spec=spec.model_dump(mode="json", by_alias=True), records_in=validator.summary.records_read,
            records_out=funnel[-1].kept if funnel else 0, seconds=time.perf_counter() - started,
            funnel=funnel, validation=validator.summary,
            lengths=lengths.sections(),
            examples=examples,
        )
        for step in steps:
            step.fill_report(report)
        from assay.curation.report import write_reports

        write_reports(report, work)
        return report

    def _funnel(self, meters: dict[str, _StepMeter], reasons: Counter[tuple[str, str]],
                ctx: StepContext) -> list[StepFunnel]:
        funnel = []
        for name, meter in meters.items():
            dropped = {reason: n for (step, reason), n in sorted(reasons.items()) if step == name}
            row = StepFunnel(step=name, records_in=meter.records_in, kept=meter.kept, dropped=dropped,
                             changed=ctx.changed.get(name, 0), added=ctx.added.get(name, 0),
                             seconds=round(meter.seconds, 3))
            if row.records_in + row.added != row.kept + row.dropped_total:
                raise PipelineError(
                    f"step '{name}' lost records: {row.records_in} in + {row.added} added != {row.kept} out + "
                    f"{row.dropped_total} dropped")
            funnel.append(row)
        for previous, current in itertools.pairwise(funnel):
            if previous.kept != current.records_in:
                raise PipelineError(f"records lost between '{previous.step}' and '{current.step}'")
        return funnel

    def _tick(self, meter: _StepMeter) -> None:
        if self.progress is not None:
            self.progress(meter.name, meter.records_in, meter.kept, meter.seconds)


def run_pipeline(spec: CurationSpec, input_path: str | Path, out_dir: str | Path,
                 progress: ProgressCallback | None = None) -> QualityReport:
    """Curate `input_path` into `out_dir` (curated.jsonl, rejected.jsonl, report.{json,html,md})."""
    return Pipeline(spec, input_path, out_dir, progress).run()

