"""Checks that need no model: regex, valid JSON, length limits, exact match and containment of the reference."""

from __future__ import annotations

import json
import re

from assay.schemas.judge import (
    Check,
    ContainsCheck,
    ExactMatchCheck,
    JsonValidCheck,
    MaxLengthCheck,
    RegexCheck,
)


def _normalise(text: str, case_sensitive: bool) -> str:
    collapsed = " ".join(text.split())
    return collapsed if case_sensitive else collapsed.casefold()


def _json_body(text: str) -> str:
    # Models often wrap JSON in a Markdown code fence; the fence is not part of the answer.
    stripped = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*\n(.*?)\n?```", stripped, flags=re.DOTALL | re.IGNORECASE)
    return fenced.group(1) if fenced else stripped


def run_check(check: Check, response: str, reference: str | None) -> bool | None:
    """True (passed), False (failed) or None (not applicable: the check needs a reference the item lacks)."""
    if isinstance(check, RegexCheck):
        found = re.search(check.pattern, response, flags=re.IGNORECASE if check.ignore_case else 0) is not None
        return found if check.must_match else not found
    if isinstance(check, JsonValidCheck):
        try:
            json.loads(_json_body(response))
        except ValueError:
            return False
        return True
    if isinstance(check, MaxLengthCheck):
        within_chars = check.chars is None or len(response) <= check.chars
        within_words = check.words is None or len(response.split()) <= check.words
        return within_chars and within_words
    if isinstance(check, ExactMatchCheck | ContainsCheck):
        if reference is None:
            return None
        answer, expected = _normalise(response, check.case_sensitive), _normalise(reference, check.case_sensitive)
        return answer == expected if isinstance(check, ExactMatchCheck) else expected in answer
    raise TypeError(f"unknown check {type(check).__name__}")
