"""The curation pipeline: validate, then each configured step, streaming batches; every drop accounted for.

Outputs land in the output folder only when the whole run succeeded, published as one unit
(`curation/publish.py`): a crash or a signal never leaves half a dataset, or two runs mixed, that looks
done.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from assay.curation.lengths import LengthProfile
from assay.curation.publish import (
    OutputError,
    OutputFolder,
    output_files,
    output_paths,
    refuse_overwriting_inputs,
)
from assay.curation.reader import InputFileError, check_readable
from assay.curation.steps import Batch, Step, StepContext, load_step_class, record_text
from assay.curation.validate import Validator
from assay.schemas.curation import CurationSpec
from assay.schemas.report import DropExample, QualityReport, StepFunnel

EXAMPLES_PER_REASON = 3
PREVIEW_CHARS = 240
T = TypeVar("T")

ProgressCallback = Callable[[str, int, int, float], None]
"""Called as (step, records_in, records_kept, seconds) after batches; used for terminal progress."""


log = logging.getLogger("assay.curation")


class PipelineError(Exception):
    """The pipeline's own invariants broke (a step lost records): a bug, reported loudly."""


class NoValidRecords(InputFileError):
    """The run left no record to publish and the spec (or the caller's default) says to fail then."""

    code = "no_valid_records"


class _Stopwatch:
    """Time spent inside `next()` on an iterator."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed(self, items: Iterator[T]) -> Iterator[T]:
        while True:
            started = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - started
            yield item


class _StepMeter:
    """Counts the records flowing into and out of one step, and the time spent inside it.

    Steps are chained generators: asking a step for a batch runs the steps before it too. A step's own
    time is the time spent getting batches out of it less the time it spent waiting for its input.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.records_in = 0
        self.kept = 0
        self.outside = _Stopwatch()  # next() on the step: its own work and its input's
        self.waiting = _Stopwatch()  # next() on the step's input

    @property
    def seconds(self) -> float:
        return max(0.0, self.outside.seconds - self.waiting.seconds)

    def count_in(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in self.waiting.timed(batches):
            self.records_in += len(batch)
            yield batch

    def count_out(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in self.outside.timed(batches):
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
    """One curation run: validation, then each step, streaming batches, into `out_dir`.

    `steps` overrides `spec.steps` with names of registered steps or ready-made Step instances (which
    is how a step is tried alone, registered or not); the spec still supplies validation, the batch
    size and the report settings.
    """

    def __init__(self, spec: CurationSpec, input_path: str | Path, out_dir: str | Path,
                 progress: ProgressCallback | None = None, steps: Sequence[str | Step[Any]] | None = None,
                 fail_on_empty_default: bool = False) -> None:
        self.spec = spec
        self.input_path = Path(input_path)
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.fail_on_empty_default = fail_on_empty_default  # when the spec leaves `fail_on_empty` unset
        self.output = OutputFolder(self.out_dir)
        self.steps: list[str | Step[Any]] = [s for s in (spec.steps if steps is None else steps) if s != "validate"]
        self.step_names = [s if isinstance(s, str) else s.name for s in self.steps]
        if len(set(self.step_names)) != len(self.step_names) or "validate" in self.step_names:
            raise ValueError(f"every step of a run needs its own name: {', '.join(self.step_names)}")

    def run(self) -> QualityReport:
        started = time.perf_counter()
        # Everything that can be refused is refused before the output folder is created or touched.
        check_readable(self.input_path, self.spec.validate_.split)
        refuse_overwriting_inputs(self._inputs(), output_paths(self.out_dir))
        if self.input_path.is_dir() and self.out_dir.resolve().is_relative_to(self.input_path.resolve()):
            raise OutputError(f"--out {self.out_dir} is inside the input folder {self.input_path}; its outputs "
                              "would be read as shards by the next run. Choose a folder outside it.")
        with self.output as work:
            report = self._run(work, started)
            empty = empty_result(report)
            if empty is not None:
                fail = self.spec.fail_on_empty if self.spec.fail_on_empty is not None else self.fail_on_empty_default
                if fail:
                    raise NoValidRecords(f"{self.input_path}: no valid records: {empty}; nothing was published")
                log.warning("%s: the curated dataset is empty: %s (fail_on_empty, or --fail-on-empty, makes "
                            "this an error)", self.input_path, empty)
            if self.spec.output_format == "parquet":
                from assay.curation.table_output import jsonl_to_parquet

                jsonl_to_parquet(work / "curated.jsonl", work / "curated.parquet", "curated")
                jsonl_to_parquet(work / "rejected.jsonl", work / "rejected.parquet", "rejects")
            self.output.publish(output_files(self.spec.output_format), work / "extra")
            return report

    def _inputs(self) -> list[str | Path | None]:
        """Files the run reads besides its input: none of them may be overwritten by an output."""
        dedup = getattr(self.spec, "dedup", None)
        return [self.input_path, *getattr(dedup, "against", ()), *getattr(dedup, "decontaminate", ())]

    def _build_steps(self, ctx: StepContext) -> list[Step[Any]]:
        steps: list[Step[Any]] = []
        try:
            for item in self.steps:
                step = load_step_class(item)(self.spec.section(item)) if isinstance(item, str) else item
                steps.append(step.bind(ctx))
        except BaseException:
            for step in steps:  # a later step's settings failed: release what the earlier ones hold
                step.close()
            raise
        return steps

    def _run(self, work: Path, started: float) -> QualityReport:
        spec = self.spec
        validator = Validator(self.input_path, spec.validate_)
        lengths = LengthProfile(spec.report.tokenizer)  # loads the tokenizer now: a bad name fails early
        examples: dict[str, list[DropExample]] = {}
        reasons: Counter[tuple[str, str]] = Counter()
        steps: list[Step[Any]] = []

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

        ctx = StepContext(work, spec.batch_size, ["validate", *self.step_names],
                          sink=lambda drops: write_rejections([d.to_json() for d in drops]))
        steps = self._build_steps(ctx)
        meters = {"validate": _StepMeter("validate"), **{s.name: _StepMeter(s.name) for s in steps}}
        curated = (work / "curated.jsonl").open("wb")
        rejected = (work / "rejected.jsonl").open("wb")

        def source() -> Iterator[Batch]:
            meter = meters["validate"]
            for valid, bad in meter.outside.timed(validator.batches(spec.batch_size)):
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
                ctx.flush()
                lengths.add_after(batch)
                curated.write(b"".join(_json_line(r) for r in batch))
                for step in steps:
                    self._tick(meters[step.name])
            ctx.flush()
        finally:
            curated.close()
            rejected.close()
            for step in steps:
                step.close()

        funnel = self._funnel(meters, reasons, ctx)
        for step in steps:
            step.scrub_errors(validator.summary.first_errors)
        sections = {step.name: step.report_section() for step in steps}
        report = QualityReport(
            input_path=str(self.input_path), output_dir=str(self.out_dir), steps=list(meters),
            spec=spec.model_dump(mode="json", by_alias=True), records_in=validator.summary.records_read,
            records_out=funnel[-1].kept if funnel else 0, seconds=time.perf_counter() - started,
            funnel=funnel, validation=validator.summary,
            lengths=lengths.sections(),
            examples=examples,
            **{name: section for name, section in sections.items() if name in QualityReport.model_fields},
        )
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


def empty_result(report: QualityReport) -> str | None:
    """Why a run kept no record, in words for the user; None when it kept some."""
    if report.records_out:
        return None
    summary = report.validation
    if summary is None or summary.records_read == 0:
        if summary is not None and summary.blank:
            return f"the input holds only blank lines ({summary.blank})"
        return "the input is empty"
    if summary.valid == 0:
        codes = ", ".join(f"{code} {n}" for code, n in sorted(summary.errors_by_code.items(), key=lambda kv: -kv[1]))
        binary = " (it does not look like text)" if summary.errors_by_code.get("invalid_utf8") else ""
        return f"all {summary.records_read} records were rejected by validation{binary}: {codes}"
    dropped = ", ".join(f"{row.step} {row.dropped_total}" for row in report.funnel if row.dropped_total)
    return f"every record was dropped ({dropped})"


def run_pipeline(spec: CurationSpec, input_path: str | Path, out_dir: str | Path,
                 progress: ProgressCallback | None = None, steps: Sequence[str | Step[Any]] | None = None,
                 fail_on_empty_default: bool = False) -> QualityReport:
    """Curate `input_path` into `out_dir` (curated.jsonl and rejected.jsonl, or their .parquet twins with
    `spec.output_format`, and report.{json,html,md}).

    `fail_on_empty_default` applies when the spec leaves `fail_on_empty` unset: a run that keeps no
    record then raises `NoValidRecords` instead of publishing an empty dataset with a warning.
    """
    return Pipeline(spec, input_path, out_dir, progress, steps, fail_on_empty_default).run()

