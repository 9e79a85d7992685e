"""The contract every curation step follows, and the context the pipeline hands it.

A step is a small class with one `run(batches)` generator: batches of canonical records in, batches of
kept records out. Whatever it does not pass on it must hand to `ctx.drop(...)` with a reason; the
pipeline checks that records in = records out + records dropped for every step.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import traceback
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import orjson
from pydantic import BaseModel
from typing_extensions import Self

from assay.schemas import registry
from assay.schemas.errors import RecordError

Record = dict[str, Any]
Batch = list[Record]
T = TypeVar("T")
log = logging.getLogger("assay.curation")


def message_text(message: dict[str, Any]) -> str:
    """The text of one chat message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict):
                value = part.get("text") if part.get("text") is not None else part.get("value")
                if isinstance(value, str) and part.get("type", "text") == "text":
                    texts.append(value)
        return "\n".join(texts)
    return ""


# What the PII step writes in place of a value: <PERSON>, <EMAIL_ADDRESS>, <PERSON_1a2b3c4d> (hash).
PII_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*[A-Z0-9]>")


def strip_placeholders(text: str) -> str:
    """The text without PII placeholders: topic features and near-duplicate shingles must not make
    `person` a topic word or two records alike because both had a name redacted."""
    return PII_PLACEHOLDER.sub(" ", text) if "<" in text else text


def record_text(record: Record, roles: tuple[str, ...] | None = None) -> str:
    """All turns of a record (optionally only some roles) joined by blank lines."""
    return "\n\n".join(
        message_text(m) for m in record.get("messages", ()) if roles is None or m.get("role") in roles
    )


class StepConfigError(ValueError):
    """A step's settings cannot work with this input or machine (a model that is not installed, a
    missing corpus file, a label field no record has): shown to the user as one clear error."""


@dataclass
class Drop:
    """A record a step removed, with why. `details` must never hold raw PII."""

    record: Record
    step: str
    reason: str
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.record.get("id"), "step": self.step, "reason": self.reason,
                "message": self.message, "details": self.details, "record": self.record}


class SpillFile:
    """Records parked on disk by a step that needs the whole dataset before deciding (dedup, balance)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._out = path.open("wb")

    def write(self, batch: Batch) -> None:
        self._out.write(b"".join(orjson.dumps(r) + b"\n" for r in batch))
        self.count += len(batch)

    def read(self, batch_size: int) -> Iterator[Batch]:
        if not self._out.closed:
            self._out.close()
        batch: Batch = []
        with self.path.open("rb") as f:
            for line in f:
                batch.append(orjson.loads(line))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch
        self.path.unlink(missing_ok=True)


class StepContext:
    """What the pipeline gives a step: a scratch folder, the batch size, and the drop sink."""

    def __init__(self, work_dir: Path, batch_size: int = 512, steps: Sequence[str] = (),
                 sink: Callable[[list[Drop]], None] | None = None) -> None:
        self.work_dir = work_dir
        self.batch_size = batch_size
        self.steps = tuple(steps)  # the run's steps in order, validate first
        self.extra_dir = work_dir / "extra"  # files a step adds to the output folder (topics.json, ...)
        self.extra_dir.mkdir(parents=True, exist_ok=True)
        self.drops: list[Drop] = []  # handed to `sink` once a batch is full and whenever the pipeline asks
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.changed: Counter[str] = Counter()
        self.added: Counter[str] = Counter()  # copies a step created (upsampling), counted like drops
        self._sink = sink
        self._spills = 0

    def drop(self, record: Record, step: str, reason: str, message: str = "", **details: Any) -> None:
        self.drops.append(Drop(record, step, reason, message, details))
        self.dropped[(step, reason)] += 1
        # A step that drops while it reads (dedup's decontamination) yields nothing for a long time:
        # its drops go out now rather than pile up in memory.
        if self._sink is not None and len(self.drops) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Hand the drops so far to the sink (the pipeline writes them to rejected.jsonl)."""
        if self._sink is not None and self.drops:
            drops, self.drops = self.drops, []
            self._sink(drops)

    def mark_changed(self, step: str, count: int = 1) -> None:
        self.changed[step] += count

    def mark_added(self, step: str, count: int = 1) -> None:
        """Declare records a step yields that it did not receive (e.g. upsampled copies)."""
        self.added[step] += count

    def spill(self, name: str) -> SpillFile:
        self._spills += 1
        return SpillFile(self.work_dir / f"{name}-{self._spills}.jsonl")


ConfigT = TypeVar("ConfigT")


class Step(ABC, Generic[ConfigT]):
    """Base of every curation step after validation.

    Built from its settings alone (`DedupStep(DedupConfig(...))`), so it can be made and tested without a
    pipeline; the pipeline then `bind`s it to the run's context before `run`.
    """

    name: ClassVar[str]

    def __init__(self, config: ConfigT) -> None:
        self.config = config
        self._ctx: StepContext | None = None

    def bind(self, ctx: StepContext) -> Self:
        """Attach the run's context (scratch folder, drop sink); returns the step."""
        self._ctx = ctx
        return self

    @property
    def ctx(self) -> StepContext:
        if self._ctx is None:
            raise RuntimeError(f"step {self.name} is not bound to a run: call step.bind(StepContext(...)) first")
        return self._ctx

    @abstractmethod
    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """Consume batches of records and yield the kept ones; drop the rest through `self.drop`."""

    def drop(self, record: Record, reason: str, message: str = "", **details: Any) -> None:
        self.ctx.drop(record, self.name, reason, message, **details)

    def processable(self, batch: Batch, process: Callable[[Batch], T]) -> list[tuple[Batch, T]]:
        """Run `process` on the batch; if it raises, run it record by record and drop the records it
        fails on (reason `step_error`), so one bad record costs itself, not the run.

        Returns (records, result) pairs to commit: normally one pair for the whole batch. The drop
        names the exception's type and where it was raised, never its text, which may quote the data.
        `StepConfigError` is not a per-record failure and propagates.
        """
        try:
            return [(batch, process(batch))]
        except StepConfigError:
            raise
        except Exception:
            if len(batch) == 1:
                self._drop_failed(batch[0], *sys.exc_info()[1:2])
                return []
        pairs = []
        for record in batch:
            try:
                pairs.append(([record], process([record])))
            except StepConfigError:
                raise
            except Exception as exc:
                self._drop_failed(record, exc)
        return pairs

    def _drop_failed(self, record: Record, exc: BaseException | None) -> None:
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc is not None and exc.__traceback__ else None
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "unknown"
        name = type(exc).__name__
        # no record id: ids are dataset values and may be personal data
        log.warning("step %s failed on a record: %s at %s", self.name, name, where)
        self.drop(record, "step_error", f"the {self.name} step failed on this record ({name} at {where})",
                  error=name, where=where)

    def report_section(self) -> BaseModel | None:
        """This step's section of the report (asked after `run` is exhausted); None: the funnel row only."""
        return None

    def scrub(self, entries: list[dict[str, Any]]) -> None:  # noqa: B027 - optional hook
        """Clean rejected entries (`Drop.to_json()` / `Rejected.to_json()` dicts, any step's) in place
        before they are written or quoted in the report: the PII step redacts `raw` and `record`."""

    def scrub_errors(self, errors: list[RecordError]) -> None:  # noqa: B027 - optional hook
        """Clean the validation summary's first errors in place before the report is written (their
        messages quote rejected values): the PII step redacts them."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models, pools and files."""


def load_step_class(name: str) -> type[Step[Any]]:
    """The class of the registered step `name`, imported now: its libraries (presidio, torch) load only
    when the step runs."""
    module_name, _, class_name = registry.declaration(name).implementation.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Step)):
        raise TypeError(f"{module_name}:{class_name}, registered for step '{name}', is not a Step")
    return cls
