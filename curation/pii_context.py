"""When a detection is personal data: the context rules of the `training` profile.

A generic NER model calls every capitalised name a PERSON and every proper noun of geography a
LOCATION. In training data most of them are public (authors, historical figures, countries), fictional
(story characters, word-problem names) or not names at all (`Convert`, `bush`, a variable in code).
Redacting them teaches a model to write placeholders. The rules here keep a NER name or place only
where the text shows it belongs to a private person, and keep pattern identifiers (e-mail, phone, card,
...) out of code and maths, where digits and dotted numbers are versions, values and table cells.

Pure functions over a text and its detections: no Presidio, no model.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import regex

NER_NAMES = frozenset({"PERSON", "LOCATION", "NRP"})
# Identifiers that stay redacted inside code and maths: an e-mail or an IBAN is someone's wherever it is.
_IDENTIFIERS_IN_CODE = frozenset({"EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS"})
# How far (characters) an identifier makes the names around it personal: an address block, a signature.
IDENTIFIER_REACH = 250
CUE_REACH = 48


class Span(NamedTuple):
    start: int
    end: int


# -- code, maths and links --------------------------------------------------------------------------

_ZONES = regex.compile(
    r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)"  # fenced code blocks (to the end of the text if unclosed)
    r"|`[^`\n]+`"  # inline code
    r"|\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|\\begin\{(\w+\*?)\}.*?\\end\{\1\}"  # display and inline LaTeX
    r"|(?<![\w$])\$(?=[^\s$\d])[^$\n]{1,400}?(?<=[^\s\\])\$(?![\w$])"  # $x^2$ but not "$5 and $10"
    r"|\b(?:https?|ftp)://[^\s<>\"')\]]+|\bwww\.[^\s<>\"')\]]+",  # links
    regex.DOTALL)
# A line that is code: starts with a keyword of a common language, or reads like a statement or call.
_CODE_LINE = regex.compile(
    r"(?m)^[ \t]*(?:def|class|import|from\s+[\w.]+\s+import|return|elif|else:|try:|except|raise|"
    r"async\s+def|await|lambda|print\(|public|private|protected|static|void|function|var|let|const|"
    r"#include|#define|using\s+namespace|package|fn|impl|struct|enum|SELECT|INSERT|UPDATE|DELETE|CREATE|"
    r"ALTER|DROP|FROM|WHERE|JOIN)\b.*$"
    r"|^[ \t]*[\w.\[\]\"']+\s*(?:[-+*/%]?=|==|->|=>)\s*\S.*$"  # x = ..., a.b += ..., f => ...
    r"|^[ \t]*[\w.]+\([^()\n]*\)[;{]?[ \t]*$"  # call(...) or call(...);
    r"|^.*[;{}][ \t]*$")  # a statement or block line
_WORD_PROBLEM = regex.compile(r"(?i)\b(?:how\s+(?:many|much|long|far|old)|what\s+(?:is|was)\s+the\s+"
                              r"(?:total|sum|difference|average|product|number)|in\s+total)\b|<<|####")
_NUMBER = regex.compile(r"\d+(?:[.,]\d+)?")


def code_and_math(text: str) -> list[Span]:
    """Spans of code (fenced, inline, lines that read as code), LaTeX and URLs."""
    spans = [Span(m.start(), m.end()) for m in _ZONES.finditer(text)]
    if any(c in text for c in ";{}=()"):
        spans += [Span(m.start(), m.end()) for m in _CODE_LINE.finditer(text) if m.group(0).strip()]
    return sorted(spans)


def is_word_problem(text: str) -> bool:
    """Arithmetic word problems ('Natalia sold 48 clips ... how many?'): their names are invented."""
    return _WORD_PROBLEM.search(text) is not None and len(_NUMBER.findall(text)) >= 2


def inside(spans: list[Span], start: int, end: int) -> bool:
    return any(s <= start and end <= e for s, e in spans)


def public_ip(value: str) -> bool:
    """Only globally routable addresses can point at a person; 127.0.0.1, 10.x and 192.168.x cannot."""
    try:
        return ipaddress.ip_address(value.strip("[]")).is_global
    except ValueError:
        return True  # Presidio's pattern matched something ipaddress will not parse: keep the hit


# -- personal context -------------------------------------------------------------------------------

RELATION = (r"(?:friend|partner|wife|husband|spouse|son|daughter|kids?|child(?:ren)?|mother|mom|mum|"
             r"father|dad|brother|sister|sibling|boss|manager|supervisor|colleague|co-?worker|neighbou?r|"
             r"grand(?:ma|pa|mother|father|son|daughter)|uncle|aunt|cousin|niece|nephew|fianc[ée]e?|"
             r"boyfriend|girlfriend|landlord|landlady|tenant|room-?mate|flatmate|client|customer|patient|"
             r"employee|applicant|teacher|doctor|lawyer|therapist|coach|tutor|student|ex)")
# Words right before a name or place that tie it to a private person: self-identification, family and
# work relations, greetings and sign-offs, record labels, contact requests, account holders.
_CUE_BEFORE = regex.compile(
    r"(?i)(?:"
    r"\b(?:my|our|your)\s+(?:\w+\s+){0,2}" + RELATION + r"(?:'s|’s)?(?:\s*,|\s+(?:is|was|named|called))?"
    r"|\b(?:my|his|her|their|your|the|full|legal|first|last|maiden|middle|nick|user|account|sur|"
    + RELATION + r"(?:'s|’s))\s*names?\s*(?:is|was|are|were|:|-|\?)?"
    r"|\bname\s*(?:is|was|:)|\bcalls?\s+me|\bi\s+am|\bi'?m|\bi’m|\bthis\s+is|\bit'?s\s+me"
    r"|\b(?:dear|hi|hello|hey|greetings|signed|regards|sincerely|cheers|thanks|thank\s+you|best|love|yours|"
    r"truly|respectfully)[\s,:!-]*|\b(?:to|from|cc|attn|attention|by)\s*:"
    r"|\b(?:call|phone|text|e-?mail|contact|message|ask|tell|meet|met|visit|invite|pay|reach|ping|"
    r"follow\s+up\s+with|speak\s+(?:to|with)|talk\s+(?:to|with)|forward\s+(?:it\s+)?to|on\s+behalf\s+of|"
    r"care\s+of|c/o|(?:it'?s|is|was)\s+under|under\s+the\s+name|beneficiary|guardian|holder|owner|signatory|patient|client|"
    r"customer|employee|candidate|applicant|tenant|resident|commenter|reader|listener|viewer|subscriber|"
    r"caller|member|assistant\s+to|secretary\s+to)\s*:?"
    r")(?:\s*(?:mr|mrs|ms|miss|mx|dr|prof)\.?)?\s*$")
# Words right before a place that make it where a private person lives, comes from or is.
_PLACE_CUE = regex.compile(
    r"(?i)(?:\b(?:live[sd]?|living|reside[sd]?|residing|stay(?:ing|ed|s)?|based|located|born|grew\s+up|"
    r"raised|moved|moving|relocat(?:ed|ing)|arriv(?:e|ed|ing)|land(?:ed|ing)?|"
    r"fl(?:y|ying|ew)|travel(?:l?ed|l?ing)?|trip|vacation|holiday|visited|visiting|originally|hometown|"
    r"home|address|from|(?:i'?m|i\s+am|we'?re|we\s+are|here)\s+(?:in|at))\b[\s\w,]{0,20}$)")
# "She moved here from Cuba": where someone the writer knows comes from.
_HERE_FROM = regex.compile(r"(?i)\b(?:moved|came|relocated|emigrated|immigrated)\s+(?:over\s+)?here\s+from\s*$")
_FIRST_PERSON = regex.compile(r"\b(?:I|I'm|I’m|I've|I'd|I'll|(?i:me|my|mine|myself|we|we're|our|ours)|us)\b")
# Words after a name that tie it to a private record: "Maria Souza, the billing clerk, said", "Jo here".
_CUE_AFTER = regex.compile(r"(?i)^(?:\s+here\b|\s*[,(]\s*(?:\d{1,3}\b|age\b|born\b|dob\b|ssn\b)|"
                           r"\s*(?:'s|’s)\s+(?:phone|number|e-?mail|address|account|card|birthday|date\s+of\s+birth|"
                           r"ssn|passport|licen[cs]e|salary|diagnosis)\b"
                           r"|\s+as\s+(?:an?\s+|the\s+|my\s+|our\s+)?(?:guardian|beneficiary|emergency\s+contact|"
                           r"co-?signer|authori[sz]ed\s+user|dependent|next\s+of\s+kin|account\s+holder)\b)")
# Public figures, authors and eponyms: the words around a name that say it is not a private person.
_PUBLIC_BEFORE = regex.compile(
    r"(?i)(?:\b(?:president|king|queen|prince|princess|emperor|empress|pope|saint|st\.|lord|lady|sir|"
    r"senator|governor|minister|chancellor|general|admiral|author|writer|poet|novelist|playwright|painter|"
    r"artist|composer|singer|rapper|band|actor|actress|director|scientist|physicist|chemist|biologist|"
    r"mathematician|philosopher|economist|inventor|explorer|pharaoh|prophet|apostle|god|goddess|character|"
    r"protagonist|hero|heroine|villain|narrator|footballer|player|athlete|coach|ceo|founder|chairman)\s+"
    r"|\b(?:by|according\s+to|featuring|starring|written\s+by|directed\s+by|painted\s+by|quote\s+by)\s+$"
    r")$")
_PUBLIC_AFTER = regex.compile(
    r"(?i)^(?:\s*(?:'s|’s)?\s*(?:law|laws|theorem|equation|equations|principle|constant|effect|"
    r"distribution|transform|algorithm|method|model|number|numbers|function|series|test|index|scale|"
    r"syndrome|disease|cycle|process|conjecture|hypothesis|paradox|inequality|lemma|space|curve|integral|"
    r"operator|matrix|polynomial|rule|coefficient|type|orbitals?|diagram|formula|approximation|limit|"
    r"machine|code|novel|book|books|poem|play|plays|painting|paintings|symphony|album|song|film|movie|"
    r"series|prize|award|era|dynasty|empire|administration|presidency)\b"
    r"|\s+et\s+al\b|\s*\(\s*(?:1[5-9]|20)\d\d[a-z]?\s*[),;]|\s*,\s*(?:1[5-9]|20)\d\d[a-z]?\s*\)"
    r"|-\p{Lu})")
_CITATION_BEFORE = regex.compile(r"(?:\(|;\s*|\bsee\s+|\bcf\.\s*)$")
# The writer's own name earlier in the sentence: "My name appears incorrectly ... correct it to Jo Doe".
_OWN_NAME = regex.compile(r"(?i)\b(?:my|our)\s+(?:\w+\s+)?names?\b")
# A name that opens a sentence and is spoken to: "Clotilde, can I please speak to your boss?"
_VOCATIVE_AFTER = regex.compile(r"(?i)^\s*,\s*(?:can|could|would|will|please|you|(?:do|did|are|have)\s+you)\b")
_SENTENCE_START = regex.compile(r"(?:^|[.!?\n]\s*|^\s*(?:hi|hello|hey|dear)\s+)$")


@dataclass
class TextFacts:
    """What the rules need to know about a whole text, computed once."""

    zones: list[Span]
    word_problem: bool
    one_case: bool  # no lower- or no upper-case letters at all: shape tests on capitals say nothing


def text_facts(text: str) -> TextFacts:
    letters = [c for c in text if c.isalpha()]
    one_case = bool(letters) and (not any(c.islower() for c in letters) or not any(c.isupper() for c in letters))
    return TextFacts(code_and_math(text), is_word_problem(text), one_case)


def looks_like_a_name(value: str, facts: TextFacts) -> bool:
    """A name or place is one to three capitalised words (particles like 'van', 'de' allowed); not a
    heading, a code token, or a fragment with digits or markup."""
    words = value.split()
    if not words or len(words) > 5 or any(c.isdigit() or c in "*_#@<>[]{}|=/\\:;" for c in value):
        return False
    if facts.one_case:
        return True
    capitalised = [w for w in words if w[:1].isupper()]
    if not capitalised or words[0][:1].islower() and len(words) == 1:
        return False
    # SELECT, NASA, AI: all-capital tokens longer than an initial are acronyms or code
    return not any(len(w.strip(".'’-")) > 1 and w.isupper() for w in words)


# A sentence ends at . ? ! before a space, or at a line break; not at "Dr. " or "Mrs. ".
_SENTENCE_END = regex.compile(r"(?<!\b(?i:mr|mrs|ms|mx|dr|prof|st|jr|sr|vs|etc|no|e\.g|i\.e))[.?!](?= )|\n")


def _sentence_start(text: str, start: int) -> int:
    ends = [m.end() for m in _SENTENCE_END.finditer(text, max(0, start - 400), start)]
    return ends[-1] if ends else max(0, start - 400)


def _sentence(text: str, start: int, end: int) -> str:
    lo = _sentence_start(text, start) - 1
    his = [i for i in (text.find(". ", end), text.find("\n", end), text.find("? ", end), text.find("! ", end))
           if i >= 0]
    return text[lo + 1: min(his) if his else len(text)]


def personal(text: str, entity: str, start: int, end: int, identifiers: list[Span],
             people: Sequence[Span] = ()) -> bool:
    """Whether a NER name or place at [start, end) is tied to a private person by its context. `people`:
    the names already found personal in this text; a place in the same sentence is theirs."""
    if any(_tied(text, start, end, s, e) for s, e in identifiers):
        return True
    before = text[max(0, start - CUE_REACH):start]
    if entity == "LOCATION":
        lo, sentence = _sentence_start(text, start), _sentence(text, start, end)
        if any(lo <= s and e <= lo + len(sentence) for s, e in people):
            return True
        return _HERE_FROM.search(before) is not None or _PLACE_CUE.search(before) is not None \
            and _FIRST_PERSON.search(sentence) is not None
    after = text[end:end + 40]
    if _PUBLIC_BEFORE.search(before) or _PUBLIC_AFTER.search(after) or _CITATION_BEFORE.search(before):
        return False  # an author, a king, an eponym ('Kohn-Sham', 'Slater type orbitals'), a citation
    if _CUE_BEFORE.search(before) or _CUE_AFTER.search(after):
        return True
    return _OWN_NAME.search(text[_sentence_start(text, start):start]) is not None \
        or (_SENTENCE_START.search(text[max(0, start - 12):start]) is not None
            and _VOCATIVE_AFTER.search(after) is not None)


# Where prose moves on to another sentence: ". How do I ...", "? Is ...". Lines are no break: an address
# block or a signature puts the name and its identifiers on lines of their own.
_PROSE_BREAK = regex.compile(r"(?<=[\p{Ll}\d)\]\"'])(?<!\b(?i:mr|mrs|ms|mx|dr|prof|st|jr|sr|vs|etc|no))[.?!]+[\"')\]]*"
                             r"[ \t]+(?=\p{Lu})")


def _near(start: int, end: int, id_start: int, id_end: int) -> bool:
    return id_start - IDENTIFIER_REACH < end and start < id_end + IDENTIFIER_REACH


def _tied(text: str, start: int, end: int, id_start: int, id_end: int) -> bool:
    """Whether an identifier at [id_start, id_end) makes the name at [start, end) personal: near it, and
    not in another sentence of prose ("My email is jo@x.org. How do I parse a dictionary in Python?")."""
    if not _near(start, end, id_start, id_end):
        return False
    lo, hi = (end, id_start) if end <= id_start else (id_end, start)
    return _PROSE_BREAK.search(text[max(0, lo - 1):hi + 1]) is None  # a character each side for the look-arounds


class ContextDecision(NamedTuple):
    keep: bool
    reason: str  # why a detection was left alone: code_or_math, not_a_name, no_personal_context, ...


def decide(text: str, facts: TextFacts, entity: str, start: int, end: int, identifiers: list[Span],
           names_and_places: str, skip_code_and_math: bool, people: Sequence[Span] = ()) -> ContextDecision:
    """Keep or leave one detection, under the profile's settings. `people`: the personal names of the
    text decided so far (places are decided after names)."""
    value = text[start:end]
    if entity in NER_NAMES:
        if names_and_places == "never":
            return ContextDecision(False, "names_off")
        if skip_code_and_math and _overlaps(facts.zones, start, end):
            return ContextDecision(False, "code_or_math")
        if names_and_places == "everywhere":
            return ContextDecision(True, "")
        if not looks_like_a_name(value, facts):
            return ContextDecision(False, "not_a_name")
        if facts.word_problem and not any(_near(start, end, s, e) for s, e in identifiers):
            return ContextDecision(False, "word_problem")
        if not personal(text, entity, start, end, identifiers, people):
            return ContextDecision(False, "no_personal_context")
        return ContextDecision(True, "")
    if entity == "IP_ADDRESS" and skip_code_and_math and (not public_ip(value) or text[start - 1:start] == "/"):
        # 10.0.0.1 and 127.0.0.1 point at no one; Chrome/111.0.0.0 is a version
        return ContextDecision(False, "not_a_public_ip")
    if skip_code_and_math and entity not in _IDENTIFIERS_IN_CODE and _overlaps(facts.zones, start, end):
        return ContextDecision(False, "code_or_math")
    return ContextDecision(True, "")


def _overlaps(spans: list[Span], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in spans)


def identifier_spans(detections: Iterable[tuple[int, int, str]]) -> list[Span]:
    """Where the pattern identifiers of a text are (names and places are not identifiers)."""
    return [Span(s, e) for s, e, entity in detections if entity not in NER_NAMES]
