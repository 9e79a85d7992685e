"""The length filter: measure each record's answer, then drop it if it is too short or too long.

Measuring is kept apart from deciding, so the figures feed the report whatever the limits are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from assay.curation.steps import Batch, Record, Step, record_text
from assay.schemas.length_filter import LengthFilterConfig, LengthFilterReport

TOO_SHORT = "too_short"
TOO_LONG = "too_long"


class Length(NamedTuple):
    chars: int
    words: int


def measure(record: Record, config: LengthFilterConfig) -> Length:
    text = record_text(record, tuple(config.roles)).strip()
    return Length(len(text), len(text.split()))


def verdict(length: Length, config: LengthFilterConfig) -> tuple[str, str] | None:
    """(reason, message) for a record outside the limits, None for one inside."""
    if length.chars < config.min_chars:
        return TOO_SHORT, f"{length.chars} characters, fewer than min_chars {config.min_chars}"
    if length.words < config.min_words:
        return TOO_SHORT, f"{length.words} words, fewer than min_words {config.min_words}"
    if config.max_chars is not None and length.chars > config.max_chars:
        return TOO_LONG, f"{length.chars} characters, more than max_chars {config.max_chars}"
    if config.max_words is not None and length.words > config.max_words:
        return TOO_LONG, f"{length.words} words, more than max_words {config.max_words}"
    return None


class LengthFilterStep(Step[LengthFilterConfig]):
    name = "length_filter"

    def __init__(self, config: LengthFilterConfig) -> None:
        super().__init__(config)
        self.report = LengthFilterReport(**config.model_dump())

    def run(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for whole in batches:
            kept: Batch = []
            for batch, lengths in self.processable(whole, self._measure):
                for record, length in zip(batch, lengths, strict=True):
                    if self._keep(record, length):
                        kept.append(record)
            yield kept

    def _measure(self, records: Batch) -> list[Length]:
        return [measure(r, self.config) for r in records]

    def _keep(self, record: Record, length: Length) -> bool:
        report = self.report
        report.records_in += 1
        outside = verdict(length, self.config)
        if outside is not None:
            reason, message = outside
            report.too_short += reason == TOO_SHORT
            report.too_long += reason == TOO_LONG
            self.drop(record, reason, message, chars=length.chars, words=length.words)
            return False
        report.kept += 1
        report.shortest_kept = min(report.shortest_kept or length.chars, length.chars)
        report.longest_kept = max(report.longest_kept or 0, length.chars)
        return True

    def report_section(self) -> LengthFilterReport:
        return self.report
