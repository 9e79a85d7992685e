"""Reading a judge's reply: the one place that turns raw text (and logprobs) into a score or a choice.

Only the LAST result marker counts, and it must be well formed: a score the judge quotes inside its feedback
("a perfect answer would get [RESULT] 5 ...") never wins over the verdict at the end, and an echoed format
line after the verdict ("[RESULT] (an integer between 1 and 5)") makes the reply unparseable rather than
falling back to an earlier number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from assay.schemas.judge import Choice, OutputFormat

# Every "[RESULT]" marker; what follows it is read separately so a malformed last marker is a failure.
_RESULT_MARKER = re.compile(r"\[\s*RESULT\s*\]", re.IGNORECASE)
# ASCII digits only: int() would also accept other scripts' digits.
_SCORE_AFTER_MARKER = re.compile(r"\s*:?\s*\(?\s*([0-9]+)(?![0-9]|\.[0-9])\s*\)?")
_RATING = re.compile(r"\[\[\s*([0-9]+(?:\.[0-9]+)?)\s*\]\]")
_BRACKETED_CHOICE = re.compile(r"\[\[\s*([ABC])\s*\]\]")


@dataclass(frozen=True)
class ParsedScore:
    score: float
    start: int  # offset of the score's first character in the text


@dataclass(frozen=True)
class ParsedChoice:
    """A pairwise verdict in the terms of the order shown: A = the response shown first."""

    shown: str  # "A", "B" or "TIE"
    start: int


def parse_label(text: str, labels: Sequence[str], marker: re.Pattern[str] = _RESULT_MARKER) -> tuple[str, int] | None:
    """The label named after the LAST marker, as a whole word (so INCORRECT never reads as CORRECT), with its
    offset; None when the last marker is not followed by exactly one of `labels`."""
    markers = list(marker.finditer(text))
    if not markers:
        return None
    tail_start = markers[-1].end()
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    pattern = re.compile(rf"\s*:?\s*\(?\s*(?:response|assistant|answer|output)?\s*({alternatives})(?![\w])",
                         re.IGNORECASE)
    match = pattern.match(text, tail_start)
    if match is None:
        return None
    found = match.group(1).upper()
    canonical = next(label for label in labels if label.upper() == found)
    return canonical, match.start(1)


def parse_score(text: str, fmt: OutputFormat, valid: Sequence[float]) -> ParsedScore | None:
    """The score of the last result marker, if it is one of `valid`."""
    if fmt == "mt_bench":
        ratings = list(_RATING.finditer(text))
        if not ratings:
            return None
        last = ratings[-1]
        value = float(last.group(1))
        lo, hi = min(valid), max(valid)
        return ParsedScore(value, last.start(1)) if lo <= value <= hi else None
    markers = list(_RESULT_MARKER.finditer(text))
    if not markers:
        return None
    match = _SCORE_AFTER_MARKER.match(text, markers[-1].end())
    if match is None:
        return None
    score = float(int(match.group(1)))
    return ParsedScore(score, match.start(1)) if score in valid else None


def parse_choice(text: str, fmt: OutputFormat) -> ParsedChoice | None:
    """A (first shown), B (second shown) or TIE from the last verdict marker."""
    if fmt == "mt_bench":
        found = list(_BRACKETED_CHOICE.finditer(text))
        if not found:
            return None
        last = found[-1]
        return ParsedChoice({"A": "A", "B": "B", "C": "TIE"}[last.group(1)], last.start(1))
    parsed = parse_label(text, ("A", "B", "TIE"))
    if parsed is None:
        return None
    label, start = parsed
    return ParsedChoice(label, start)


def choice_in_record_terms(shown: str, order: str) -> Choice:
    """Map a verdict about the shown order back to the record: in order "ba", A (shown first) is response_b."""
    if shown == "TIE":
        return "tie"
    first, second = ("a", "b") if order == "ab" else ("b", "a")
    return first if shown == "A" else second  # type: ignore[return-value]


def weighted_score(tokens: Sequence[tuple[str, Sequence[tuple[str, float]]]], text: str, fmt: OutputFormat,
                   valid: Sequence[float]) -> float | None:
    """The probability-weighted score at the token that carries the parsed score.

    `tokens` are (token text, top alternatives as (text, logprob)) as the backend returned them. The score is
    found again in the concatenated token texts, so offsets agree with the tokens. Weighting needs the score to
    be one whole token and every valid score to be a single character (a "1" could otherwise start "10"); else
    None and the caller uses the parsed integer.
    """
    if not tokens or any(len(str(int(v))) > 1 for v in valid) or any(v != int(v) for v in valid):
        return None
    joined = "".join(token for token, _ in tokens)
    parsed = parse_score(joined, fmt, valid)
    if parsed is None:
        return None
    offset = 0
    for token, alternatives in tokens:
        if offset <= parsed.start < offset + len(token):
            if token.strip() != str(int(parsed.score)):
                return None
            mass: dict[int, float] = {}
            for alternative, logprob in alternatives:
                key = alternative.strip()
                if key.isascii() and key.isdigit() and float(key) in valid:
                    mass[int(key)] = mass.get(int(key), 0.0) + math.exp(logprob)
            total = sum(mass.values())
            if total <= 0:
                return None
            return sum(score * p for score, p in mass.items()) / total
        offset += len(token)
    return None


def strip_think(text: str) -> str:
    """Drop a leading <think>...</think> block some judges emit, so markers inside it are not read."""
    return re.sub(r"^\s*<think>.*?</think>", "", text, count=1, flags=re.DOTALL)
