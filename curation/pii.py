"""The PII step: find personal data in every string a model trains on, redact it or drop the record."""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from typing import Any, NamedTuple

import orjson

from assay.curation.pii_engine import PiiEngine, Redaction
from assay.curation.steps import Batch, Record, Step
from assay.schemas.errors import RecordError
from assay.schemas.pii import PiiConfig, PiiReport, RedactedExample, RedactionSample

Path = tuple[str | int, ...]
EXAMPLE_CHARS = 300
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
    fields: Counter[str] = field(default_factory=Counter)  # texts scanned per role or field
    samples: list[tuple[str, str]] = field(default_factory=list)
    keys_redacted: int = 0
    left_alone: Counter[tuple[str, str]] = field(default_factory=Counter)  # of its chunk, on the first outcome


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
    """Every string of a record the step scans: each turn's content (under its role's policy), then,
    with `scope: all_strings` (the default), every other string value: the id, message fields such as
    `name`, extra fields and metadata at any depth (under `default_policy`); with `scope: turns`, only
    the dotted paths of `extra_fields`."""
    slots = []
    content_paths: set[Path] = set()
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
    content_paths = {slot.path for slot in slots}
    if config.scope == "all_strings":
        for path in string_paths(record):
            if path not in content_paths and not _is_structure(record, path):
                slots.append(TextSlot(path, "field:" + field_name(path), config.default_policy))
        return slots
    for dotted in config.extra_fields:
        for path in _field_paths(record, dotted.split(".")):
            if path not in content_paths:
                slots.append(TextSlot(path, f"field:{dotted}", config.default_policy))
    return slots


def field_name(path: Path) -> str:
    """A string's field as the report names it: keys joined by dots, list positions left out, and keys
    that are not plain identifiers shown as `*` (a key can itself be personal data)."""
    return ".".join(k if _PLAIN_KEY.fullmatch(k) else "*" for k in path if isinstance(k, str)) or "(value)"


_ROLE_NAMES = frozenset({"system", "user", "assistant", "tool", "function", "developer", "human", "gpt",
                         "observation", "model"})
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "image", "audio", "video"})


def _is_structure(record: Record, path: Path) -> bool:
    """A role name or a content part's type: format, not content (anything else in those places, an
    e-mail address used as a role, is scanned)."""
    value = _get(record, path)
    if path[-1] == "role":
        return str(value).lower() in _ROLE_NAMES
    return path[-1] == "type" and len(path) >= 4 and value in _PART_TYPES


def string_paths(obj: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every string leaf of a JSON value (object keys are handled apart, by `scrub_keys`)."""
    if isinstance(obj, str):
        yield prefix
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from string_paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from string_paths(value, (*prefix, i))


_PLAIN_KEY = re.compile(r"[a-z_][a-z0-9_]{0,40}")


def _key_holders(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            yield from _key_holders(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _key_holders(value)


def scrub_keys(engine: PiiEngine, obj: Any) -> int:
    """Redact the object keys of a JSON value in place (`{"jo@x.org": 3}` becomes `{"<EMAIL_ADDRESS>": 3}`);
    returns how many keys changed. Keys that are plain identifiers (`messages`, `role`) are not analysed."""
    holders = [(d, k) for d in _key_holders(obj) for k in d if isinstance(k, str) and not _PLAIN_KEY.fullmatch(k)]
    if not holders:
        return 0
    changed = 0
    by_dict: dict[int, dict[str, str]] = {}
    for (holder, key), found in zip(holders, engine.analyze([k for _, k in holders]), strict=True):
        if found:
            by_dict.setdefault(id(holder), {})[key] = engine.redact(key, found).text
    for holder in {id(d): d for d, _ in holders}.values():
        renames = by_dict.get(id(holder))
        if renames:
            items = [(renames.get(k, k), v) for k, v in holder.items()]
            holder.clear()
            for k, v in items:  # two keys redacted to the same placeholder: later ones get a suffix
                name, n = k, 1
                while name in holder:
                    n += 1
                    name = f"{k}_{n}"
                holder[name] = v
            changed += len(renames)
    return changed


def process_records(engine: PiiEngine, records: list[Record]) -> list[RecordOutcome]:
    """Analyse every slot of a chunk of records in one NER batch, redact, and rescan what changed."""
    config = engine.config
    slots = [(ri, slot) for ri, record in enumerate(records) for slot in text_slots(record, config)
             if slot.policy != "keep"]
    texts = [_get(records[ri], slot.path) for ri, slot in slots]
    left_before = Counter(engine.left_alone)
    redactions = [engine.redact(t, found) for t, found in zip(texts, engine.analyze(texts), strict=True)]
    outcomes = [RecordOutcome(record) for record in records]
    if outcomes:
        outcomes[0].left_alone = engine.left_alone - left_before
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
        outcomes[ri].fields[slot.role] += 1
        if redaction.changed:
            _set(records[ri], slot.path, redaction.text)
            outcomes[ri].changed = True
            if len(outcomes[ri].samples) < 2:
                outcomes[ri].samples.extend(redaction_samples(redaction))
    if config.scope == "all_strings":
        for outcome in outcomes:
            keys = scrub_keys(engine, outcome.record)
            if keys:
                outcome.changed = True
                outcome.keys_redacted += keys
    return outcomes


SAMPLE_CONTEXT = 40


def redaction_samples(redaction: Redaction) -> list[tuple[str, str]]:
    """(entity, the redacted text around one replaced span): what a reader needs to judge precision,
    taken from the redacted text so no original value is quoted."""
    samples = []
    for (start, end), det in zip(redaction.replaced, redaction.detections, strict=False):
        text = redaction.text
        lo, hi = max(0, start - SAMPLE_CONTEXT), min(len(text), end + SAMPLE_CONTEXT)
        snippet = ("…" if lo else "") + " ".join(text[lo:hi].split()) + ("…" if hi < len(text) else "")
        samples.append((det.entity, snippet))
    return samples


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
    """Every string (keys too) replaced by a note of its length: what cannot be scanned is not written."""
    if isinstance(value, str):
        return f"<unscanned text, {len(value)} characters>"
    if isinstance(value, list):
        return [_blank_strings(v) for v in value]
    if isinstance(value, dict):
        return {(k if isinstance(k, str) and _PLAIN_KEY.fullmatch(k) else f"<unscanned key {i}>"): _blank_strings(v)
                for i, (k, v) in enumerate(value.items())}
    return value


def scrub_value(engine: PiiEngine, value: Any) -> tuple[Any, int]:
    """Redact every string inside a JSON value (all roles, ids, types, all fields, object keys); returns
    it and the hit count."""
    if isinstance(value, str):
        redaction = engine.redact(value, engine.analyze([value])[0])
        return redaction.text, len(redaction.detections)
    keys = scrub_keys(engine, value)
    paths = list(string_paths(value))
    texts = [_get(value, p) for p in paths]
    hits = 0
    for path, text, found in zip(paths, texts, engine.analyze(texts), strict=True):
        if found:
            _set(value, path, engine.redact(text, found).text)
            hits += len(found)
    return value, hits + keys


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
                                entities=self.config.all_entities(), profile=self.config.profile,
                                names_and_places=self.config.names_mode(),
                                skip_code_and_math=self.config.skips_code_and_math(), scope=self.config.scope)
        self._by_role_entity: Counter[tuple[str, str]] = Counter()
        self._fields: Counter[str] = Counter()
        self._left_alone: Counter[tuple[str, str]] = Counter()
        self._samples: dict[str, list[str]] = {}

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
        self._fields.update(outcome.fields)
        self._left_alone.update(outcome.left_alone)
        report.keys_redacted += outcome.keys_redacted
        for entity, context in outcome.samples:
            shown = self._samples.setdefault(entity, [])
            if len(shown) < self.config.report_examples:
                shown.append(context)
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
            self._scrub_explanation(entry)
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

    def _scrub_explanation(self, entry: dict[str, Any]) -> None:
        """An error message and its details can quote the value they reject ("role 'jo@x.org' is not
        one of ..."): they are redacted like the record."""
        try:
            if isinstance(entry.get("message"), str):
                entry["message"] = scrub_value(self.engine, entry["message"])[0]
            if entry.get("details"):
                entry["details"] = scrub_value(self.engine, entry["details"])[0]
        except Exception:
            entry["message"] = "<unscanned message>"
            entry["details"] = _blank_strings(entry.get("details"))

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

    def scrub_errors(self, errors: list[RecordError]) -> None:
        """The validation summary's first errors quote what they reject ("role 'jo@x.org' is not one
        of ..."): redacted before the report is written."""
        for error in errors:
            error.message = str(scrub_value(self.engine, error.message)[0])
            if error.field:
                error.field = str(scrub_value(self.engine, error.field)[0])

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
        section.texts_by_field = dict(self._fields.most_common())
        section.left_alone = {f"{entity}:{reason}": n for (entity, reason), n in self._left_alone.most_common()}
        section.samples = [RedactionSample(entity=entity, context=context) for entity in section.by_entity
                           for context in self._samples.get(entity, [])]
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
