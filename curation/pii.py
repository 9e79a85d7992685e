"""The PII step: find personal data in every string a model trains on, redact it or drop the record."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from typing import Any, NamedTuple

import orjson

from assay.curation.pii_engine import PiiEngine, Redaction
from assay.curation.steps import Batch, Record, Step
from assay.schemas.pii import PiiConfig, PiiReport, RedactedExample

Path = tuple[str | int, ...]
EXAMPLE_CHARS = 300
# Keys whose values are structure, not content, when every string of a rejected record is scrubbed.
_STRUCTURAL_KEYS = frozenset({"role", "id", "type"})
_MIN_RECORDS_PER_WORKER = 16


class TextSlot(NamedTuple):
    """Where one string sits in a record, whose turn it is, and what the policy says to do with PII."""

    path: Path
    role: str
    policy: str


@dataclass
class RecordOutcome:
    """What the step did to one record (picklable: it comes back from worker processes)."""

    record: Record
    changed: bool = False
    texts: int = 0
    rescanned: int = 0
    found: Counter[tuple[str, str]] = field(default_factory=Counter)  # (role, entity) -> count
    drop_roles: list[str] = field(default_factory=list)
    second_pass: Counter[str] = field(default_factory=Counter)
    residual: Counter[str] = field(default_factory=Counter)


def _get(obj: Any, path: Path) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _set(obj: Any, path: Path, value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def _field_paths(obj: Any, keys: list[str], prefix: Path = ()) -> Iterator[Path]:
    """Paths of the strings at a dotted field path; lists along the way are walked item by item."""
    if not keys:
        if isinstance(obj, str):
            yield prefix
        elif isinstance(obj, list):
            for i, item in enumerate(obj):
                yield from _field_paths(item, keys, (*prefix, i))
        return
    if isinstance(obj, dict) and keys[0] in obj:
        yield from _field_paths(obj[keys[0]], keys[1:], (*prefix, keys[0]))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _field_paths(item, keys, (*prefix, i))


def text_slots(record: Record, config: PiiConfig) -> list[TextSlot]:
    """Every string of a record that is trained on: each turn's content, then the configured fields."""
    slots = []
    for i, message in enumerate(record.get("messages") or ()):
        if not isinstance(message, dict):
            continue
        role = str(message.get("role", "")).lower()
        policy = config.policy_for(role)
        content = message.get("content")
        if isinstance(content, str):
            slots.append(TextSlot(("messages", i, "content"), role, policy))
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    continue
                # The same key message_text reads: OpenAI's `text`, else LLaMA-Factory's `value`.
                if isinstance(part.get("text"), str):
                    slots.append(TextSlot(("messages", i, "content", j, "text"), role, policy))
                elif isinstance(part.get("value"), str) and part.get("type", "text") == "text":
                    slots.append(TextSlot(("messages", i, "content", j, "value"), role, policy))
    for dotted in config.extra_fields:
        for path in _field_paths(record, dotted.split(".")):
            slots.append(TextSlot(path, f"field:{dotted}", config.default_policy))
    return slots


def string_paths(obj: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every string leaf of a JSON value (but role names, ids and part types)."""
    if isinstance(obj, str):
        yield prefix
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if key not in _STRUCTURAL_KEYS:
                yield from string_paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from string_paths(value, (*prefix, i))


def process_records(engine: PiiEngine, records: list[Record]) -> list[RecordOutcome]:
    """Analyse every slot of a chunk of records in one NER batch, redact, and rescan what changed."""
    config = engine.config
    slots = [(ri, slot) for ri, record in enumerate(records) for slot in text_slots(record, config)
             if slot.policy != "keep"]
    texts = [_get(records[ri], slot.path) for ri, slot in slots]
    redactions = [engine.redact(t, found) for t, found in zip(texts, engine.analyze(texts), strict=True)]
    outcomes = [RecordOutcome(record) for record in records]
    for (ri, slot), redaction in zip(slots, redactions, strict=True):
        outcome = outcomes[ri]
        outcome.texts += 1
        for det in redaction.detections:
            outcome.found[(slot.role, det.entity)] += 1
        if slot.policy == "drop" and redaction.detections and slot.role not in outcome.drop_roles:
            outcome.drop_roles.append(slot.role)
    if config.rescan:
        _rescan(engine, slots, redactions, outcomes)
    for (ri, slot), redaction in zip(slots, redactions, strict=True):
        if redaction.changed:
            _set(records[ri], slot.path, redaction.text)
            outcomes[ri].changed = True
    return outcomes


def _rescan(engine: PiiEngine, slots: list[tuple[int, TextSlot]], redactions: list[Redaction],
            outcomes: list[RecordOutcome]) -> None:
    """Scan redacted texts again. Redaction changes the context NER sees, so a second look can find a
    name the first missed: that is redacted in a second pass, and those texts are scanned once more;
    what this final scan still finds is the residual."""
    changed = [k for k, r in enumerate(redactions) if r.changed]
    second_pass = []
    for k, found in zip(changed, engine.residual([redactions[k] for k in changed]), strict=True):
        outcome = outcomes[slots[k][0]]
        outcome.rescanned += 1
        if found:
            outcome.second_pass.update(d.entity for d in found)
            redactions[k] = _merge_redactions(redactions[k], engine.redact(redactions[k].text, found))
            second_pass.append(k)
    for k, found in zip(second_pass, engine.residual([redactions[k] for k in second_pass]), strict=True):
        outcomes[slots[k][0]].residual.update(d.entity for d in found)


def _merge_redactions(first: Redaction, second: Redaction) -> Redaction:
    """The second pass's text, with the spans replaced by both passes (in the final text's offsets)."""
    replaced = list(second.replaced)
    for start, end in first.replaced:
        shift = sum((e2 - s2) - (d.end - d.start) for (s2, e2), d in zip(second.replaced, second.detections,
                                                                        strict=False) if d.end <= start)
        if not any(s < end + shift and start + shift < e for s, e in second.replaced):
            replaced.append((start + shift, end + shift))
    return Redaction(second.text, first.detections + second.detections, sorted(replaced))


def _blank_strings(value: Any) -> Any:
    """Every string replaced by a note of its length: what cannot be scanned is not written."""
    if isinstance(value, str):
        return f"<unscanned text, {len(value)} characters>"
    if isinstance(value, list):
        return [_blank_strings(v) for v in value]
    if isinstance(value, dict):
        return {k: (v if k in ("id", "role", "type") else _blank_strings(v)) for k, v in value.items()}
    return value


def scrub_value(engine: PiiEngine, value: Any) -> tuple[Any, int]:
    """Redact every string inside a JSON value (all roles, all fields); returns it and the hit count."""
    if isinstance(value, str):
        redaction = engine.redact(value, engine.analyze([value])[0])
        return redaction.text, len(redaction.detections)
    paths = list(string_paths(value))
    texts = [_get(value, p) for p in paths]
    hits = 0
    for path, text, found in zip(paths, texts, engine.analyze(texts), strict=True):
        if found:
            _set(value, path, engine.redact(text, found).text)
            hits += len(found)
    return value, hits


# -- worker processes ----------------------------------------------------------------------------

_WORKER_ENGINE: PiiEngine | None = None


def _init_worker(config_json: str) -> None:
    global _WORKER_ENGINE
    if _WORKER_ENGINE is None:  # forked workers inherit the parent's engine
        _WORKER_ENGINE = PiiEngine(PiiConfig.model_validate_json(config_json))


def _worker_process(records: list[Record]) -> list[RecordOutcome]:
    assert _WORKER_ENGINE is not None
    return process_records(_WORKER_ENGINE, records)


def default_workers(config: PiiConfig) -> int:
    return config.workers or max(1, min(2, os.cpu_count() or 1))


class PiiStep(Step[PiiConfig]):
    """Redacts PII in every chat turn (and configured fields); drops records where a role's policy says so."""

    name = "pii"

    def __init__(self, config: PiiConfig) -> None:
        super().__init__(config)
        self.engine = PiiEngine(self.config)  # fail early on a missing model, before reading input
        self.workers = default_workers(self.config)
        self._pool: Pool | None = None
        self.report = PiiReport(nlp_engine=self.config.nlp_engine, operator=self.config.operator,
                                model="" if self.config.nlp_engine == "patterns" else self.config.model,
                                entities=self.config.all_entities())
        self._by_role_entity: Counter[tuple[str, str]] = Counter()

    # -- the stream ----------------------------------------------------------------------------
    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            started = time.perf_counter()
            outcomes = [o for _, chunk in self.processable(batch, self._process) for o in chunk]
            kept = [o.record for o in outcomes if self._account(o)]
            self.report.seconds += time.perf_counter() - started
            yield kept

    def _process(self, batch: Batch) -> list[RecordOutcome]:
        if self.workers < 2 or len(batch) < 2 * _MIN_RECORDS_PER_WORKER:
            return process_records(self.engine, batch)
        pool = self._get_pool()
        size = max(_MIN_RECORDS_PER_WORKER, -(-len(batch) // (self.workers * 2)))
        chunks = [batch[i:i + size] for i in range(0, len(batch), size)]
        return [outcome for chunk in pool.map(_worker_process, chunks) for outcome in chunk]

    def _get_pool(self) -> Pool:
        if self._pool is None:
            global _WORKER_ENGINE
            methods = multiprocessing.get_all_start_methods()
            context: Any
            if "fork" in methods and os.name == "posix" and not _is_macos():
                _WORKER_ENGINE = self.engine  # inherited by the forked workers: no second model load
                context = multiprocessing.get_context("fork")
            else:
                context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.workers, initializer=_init_worker,
                                      initargs=(self.config.model_dump_json(),))
        return self._pool

    def _account(self, outcome: RecordOutcome) -> bool:
        """Add one record's outcome to the report; drop it if a role's policy says so. True = kept."""
        report = self.report
        report.records_scanned += 1
        report.texts_scanned += outcome.texts
        report.rescanned_texts += outcome.rescanned
        self._by_role_entity.update(outcome.found)
        for entity, n in outcome.second_pass.items():
            report.second_pass += n
            report.second_pass_by_entity[entity] = report.second_pass_by_entity.get(entity, 0) + n
        for entity, n in outcome.residual.items():
            report.residual += n
            report.residual_by_entity[entity] = report.residual_by_entity.get(entity, 0) + n
        if outcome.drop_roles:
            role = outcome.drop_roles[0]
            report.records_dropped += 1
            report.dropped_by_role[role] = report.dropped_by_role.get(role, 0) + 1
            entities = Counter[str]()
            for (r, entity), n in outcome.found.items():
                if r in outcome.drop_roles:
                    entities[entity] += n
            self._scrub_kept_turns(outcome.record)
            self.drop(outcome.record, f"pii_in_{role}".replace(":", "_"),
                      f"personal data found in the {role} turn and its policy is drop",
                      roles=outcome.drop_roles, entities=dict(sorted(entities.items())))
            return False
        if outcome.changed:
            report.records_changed += 1
            self.ctx.mark_changed(self.name)
            if len(report.examples) < self.config.report_examples:
                report.examples.append(_example(outcome.record, self.config))
        return True

    def _scrub_kept_turns(self, record: Record) -> None:
        """A dropped record goes to the rejects file: redact the turns its policy left alone too."""
        for slot in text_slots(record, self.config):
            if slot.policy == "keep":
                _set(record, slot.path, scrub_value(self.engine, _get(record, slot.path))[0])

    # -- hooks ---------------------------------------------------------------------------------
    def scrub(self, entries: list[dict[str, Any]]) -> None:
        """Redact rejected entries of steps that ran before this one (ours and later ones already are)."""
        steps = list(self.ctx.steps)
        own = steps.index(self.name) if self.name in steps else len(steps)
        for entry in entries:
            step = entry.get("step")
            # Records this step (or a later one) passed on are redacted already; a record this step
            # failed on (`step_error`) never was.
            already = step == self.name or (step in steps and steps.index(step) > own)
            if already and not (step == self.name and entry.get("reason") == "step_error"):
                continue
            hits = 0
            try:
                if isinstance(entry.get("record"), dict):
                    entry["record"], n = scrub_value(self.engine, entry["record"])
                    hits += n
                if isinstance(entry.get("raw"), str):
                    entry["raw"], n = self._scrub_raw(entry["raw"])
                    hits += n
            except Exception:  # the text the analyzer cannot read (e.g. over spaCy's length limit)
                for key in ("record", "raw"):
                    if key in entry:
                        entry[key] = _blank_strings(entry[key])
                hits += 1
            if hits:
                self.report.rejects_scrubbed += 1

    def _scrub_raw(self, raw: str) -> tuple[str, int]:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            text, hits = scrub_value(self.engine, raw)
            return str(text), hits
        if not isinstance(parsed, dict | list):
            text, hits = scrub_value(self.engine, raw)
            return str(text), hits
        value, hits = scrub_value(self.engine, parsed)
        return (orjson.dumps(value).decode() if hits else raw), hits

    def report_section(self) -> PiiReport:
        section = self.report
        by_entity: Counter[str] = Counter()
        by_role: Counter[str] = Counter()
        nested: dict[str, dict[str, int]] = {}
        for (role, entity), n in sorted(self._by_role_entity.items()):
            by_entity[entity] += n
            by_role[role] += n
            nested.setdefault(role, {})[entity] = n
        section.by_entity = dict(by_entity.most_common())
        section.by_role = dict(by_role.most_common())
        section.by_role_entity = nested
        section.detections = sum(by_entity.values())
        section.seconds = round(section.seconds, 3)
        return section

    def close(self) -> None:
        global _WORKER_ENGINE
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
        _WORKER_ENGINE = None


def _example(record: Record, config: PiiConfig) -> RedactedExample:
    turns = []
    for slot in text_slots(record, config):
        if slot.policy == "keep":  # never quote a turn that was left unredacted
            continue
        text = str(_get(record, slot.path))
        turns.append({"role": slot.role, "content": text if len(text) <= EXAMPLE_CHARS
                      else text[: EXAMPLE_CHARS - 1] + "…"})
    return RedactedExample(id=str(record.get("id")), turns=turns)


def _is_macos() -> bool:
    import sys

    return sys.platform == "darwin"
