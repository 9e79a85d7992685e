"""Character-level recall and precision of PII detection against texts with labelled spans.

Used by bench/pii_accuracy.py (whole data sets, side by side with Presidio's defaults) and by the
accuracy test (a slice). Whitespace is not counted: a detection that covers 'Main St' but not the
line break after it has found all of it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Span = tuple[int, int, str]  # start, end, type

# Gold types of presidio-research's generated data that are personal data we redact, mapped onto
# our entity names. ORGANIZATION, DATE_TIME, DOMAIN_NAME, TITLE (job titles), PREFIX (Mr., Dr.) and
# US_DRIVER_LICENSE are not in the default entity set and do not count towards the overall figure.
GOLD_TO_ENTITY: dict[str, str] = {
    "PERSON": "PERSON", "ADDRESS": "STREET_ADDRESS", "STREET_ADDRESS": "STREET_ADDRESS",
    "LOCATION": "LOCATION", "GPE": "LOCATION", "CREDIT_CARD": "CREDIT_CARD",
    "PHONE_NUMBER": "PHONE_NUMBER", "EMAIL_ADDRESS": "EMAIL_ADDRESS", "US_SSN": "US_SSN",
    "IBAN_CODE": "IBAN_CODE", "IP_ADDRESS": "IP_ADDRESS",
}


@dataclass
class LabelledText:
    text: str
    spans: list[Span]


@dataclass
class Scores:
    """Character counts per entity type; recall counts a gold character found by any detection (what
    matters for redaction); precision counts a predicted character that lies in any gold PII span."""

    gold: Counter[str] = field(default_factory=Counter)
    found: Counter[str] = field(default_factory=Counter)
    predicted: Counter[str] = field(default_factory=Counter)
    correct: Counter[str] = field(default_factory=Counter)

    def recall(self, entity: str | None = None) -> float:
        gold = self.gold[entity] if entity else sum(self.gold.values())
        found = self.found[entity] if entity else sum(self.found.values())
        return found / gold if gold else 0.0

    def precision(self, entity: str | None = None) -> float:
        predicted = self.predicted[entity] if entity else sum(self.predicted.values())
        correct = self.correct[entity] if entity else sum(self.correct.values())
        return correct / predicted if predicted else 0.0

    def f1(self, entity: str | None = None) -> float:
        p, r = self.precision(entity), self.recall(entity)
        return 2 * p * r / (p + r) if p + r else 0.0


def load_presidio_generated(path: Path) -> list[LabelledText]:
    """presidio-research's `{full_text, spans: [{entity_type, start_position, end_position}]}` list,
    with gold types mapped (types we do not redact are dropped)."""
    items = json.loads(path.read_text(encoding="utf-8"))
    return [LabelledText(item["full_text"], [
        (s["start_position"], s["end_position"], GOLD_TO_ENTITY[s["entity_type"]])
        for s in item["spans"] if s["entity_type"] in GOLD_TO_ENTITY]) for item in items]


def load_conll(path: Path, keep: Iterable[str] = ("person",)) -> list[LabelledText]:
    """WNUT-17 style CoNLL (token TAB B-/I-label, blank line between posts) as texts with spans."""
    wanted = {k.lower() for k in keep}
    texts: list[LabelledText] = []
    tokens: list[tuple[str, str]] = []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.strip():
            token, _, label = line.partition("\t")
            tokens.append((token, label.strip()))
        elif tokens:
            texts.append(_join_tokens(tokens, wanted))
            tokens = []
    return texts


def _join_tokens(tokens: list[tuple[str, str]], wanted: set[str]) -> LabelledText:
    parts: list[str] = []
    spans: list[Span] = []
    offset = 0
    for token, label in tokens:
        if parts:
            parts.append(" ")
            offset += 1
        kind = label[2:].lower() if label[:2] in ("B-", "I-") else ""
        if kind in wanted:
            if label.startswith("I-") and spans and spans[-1][1] == offset - 1:
                spans[-1] = (spans[-1][0], offset + len(token), spans[-1][2])
            else:
                spans.append((offset, offset + len(token), kind.upper()))
        parts.append(token)
        offset += len(token)
    return LabelledText("".join(parts), spans)


def score(texts: Sequence[LabelledText], predictions: Sequence[Iterable[Span]]) -> Scores:
    """Character-level scores of predictions (start, end, type) against the gold spans."""
    scores = Scores()
    for item, predicted in zip(texts, predictions, strict=True):
        text = item.text
        gold_chars = {i for s, e, _ in item.spans for i in range(s, e) if not text[i].isspace()}
        predicted = list(predicted)
        covered = {i for s, e, _ in predicted for i in range(s, e) if not text[i].isspace()}
        for s, e, entity in item.spans:
            chars = [i for i in range(s, e) if not text[i].isspace()]
            scores.gold[entity] += len(chars)
            scores.found[entity] += sum(1 for i in chars if i in covered)
        for s, e, entity in predicted:
            chars = [i for i in range(s, e) if not text[i].isspace()]
            scores.predicted[entity] += len(chars)
            scores.correct[entity] += sum(1 for i in chars if i in gold_chars)
    return scores


# -- held-out split and damage sets -------------------------------------------------------------------

def load_presidio_split(path: Path, part: str) -> list[LabelledText]:
    """presidio_generated_large.json split by template: `tuning` (even template ids, 67 templates) is
    what every setting of the training profile was tuned on; `held_out` (odd ids, 60 templates, 1,039
    texts) was never looked at while tuning and is where recall is reported."""
    if part not in ("tuning", "held_out"):
        raise ValueError(f"part must be 'tuning' or 'held_out', not {part!r}")
    items = json.loads(path.read_text(encoding="utf-8"))
    return [LabelledText(item["full_text"], [
        (s["start_position"], s["end_position"], GOLD_TO_ENTITY[s["entity_type"]])
        for s in item["spans"] if s["entity_type"] in GOLD_TO_ENTITY])
        for item in items if (item["template_id"] % 2 == 1) == (part == "held_out")]


# Auto-J prompts (autoj_scenario_traindata.jsonl, 0-based line numbers) that hold a private person's
# data: their own name, contact details or whereabouts, or those of a friend, colleague or customer
# (resumes, e-mails, call transcripts, "my friend Adi", "I live in Australia"). Redacting them is the
# step's job, not damage. Read by hand from every prompt the training profile changed; prompts with
# public figures, fictional or placeholder people (John Doe, Anytown) and business addresses are not here.
AUTOJ_PRIVATE_RECORDS = frozenset({
    31, 86, 140, 160, 178, 211, 280, 291, 327, 335, 336, 344, 367, 423, 426, 446, 468, 501, 514, 592, 599,
    701, 767, 775, 811, 823, 885, 909, 966, 1082, 1204, 1227, 1266, 1307, 1317, 1692, 1715, 1767, 1781,
    1784, 1940, 1944, 1956, 1957, 1963, 1983, 2116,
})


def load_damage_records(data: Path, name: str) -> list[list[str]]:
    """The texts of each record of a damage set (real data without private persons' data): `alpaca`
    (instruction, input, output of the 999 Alpaca demo records), `autoj` (each prompt; private ones
    excluded, see AUTOJ_PRIVATE_RECORDS), `gsm8k` (question and answer)."""
    folder = data / "instructions"
    if name == "alpaca":
        rows = json.loads((folder / "llamafactory_alpaca_en_demo.json").read_text(encoding="utf-8"))
        return [[r["instruction"], r.get("input", ""), r["output"]] for r in rows]
    if name == "autoj":
        lines = (folder / "autoj_scenario_traindata.jsonl").read_text(encoding="utf-8").splitlines()
        return [[json.loads(line)["instruction"]] for i, line in enumerate(lines)
                if i not in AUTOJ_PRIVATE_RECORDS]
    if name == "gsm8k":
        lines = (data / "benchmarks" / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
        return [[r["question"], r["answer"]] for r in map(json.loads, lines)]
    raise ValueError(f"unknown damage set {name!r}")


def changed_records(records: Sequence[Sequence[str]], detections: Sequence[Sequence[object]]) -> list[int]:
    """Indexes of records with at least one detection in any of their texts (detections given per text,
    in the order of the records' texts)."""
    changed, k = [], 0
    for i, texts in enumerate(records):
        if any(detections[k + j] for j in range(len(texts))):
            changed.append(i)
        k += len(texts)
    return changed
