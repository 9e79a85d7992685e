"""Recognizers Presidio lacks or gets wrong on training data: street addresses, national phone formats.

Also the cheap per-text pre-checks that decide which recognizers can possibly match a text, so the
expensive ones (phonenumbers over many regions) run only on texts with enough digits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import phonenumbers
import regex
from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    LocalRecognizer,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts

from assay.curation.pii_context import RELATION
from assay.schemas.pii import CustomRecognizer

# Street types in English and the European languages street names in real data come in. Words
# that also occur in ordinary prose ("way", "place", "court") only count after a building number.
_STREET_TYPES = (
    r"street|st|road|rd|avenue|ave|av|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|square|sq|"
    r"terrace|ter|highway|hwy|parkway|pkwy|way|crescent|cres|close|circle|cir|trail|trl|row|walk|"
    r"alley|plaza|hill|grove|gardens|mews|wharf|quay|park|green|rise|vale|view|heights|causeway|"
    r"crossing|path|pike|loop|run|point|ridge|route|rte|expressway|freeway|mall|center|centre"
)
# Street words that precede the name ("Rua X", "Calle X", "ul. X", "Avenue des X").
_STREET_PREFIXES = (
    r"rue|rua|r\.|via|viale|vicolo|piazza|piazzale|corso|largo|calle|c/|avenida|avda\.?|av\.|"
    r"bd|bld|chemin|allée|allee|impasse|quai|estrada|travessa|"
    r"praça|praca|rodovia|alameda|camino|carrera|carretera|paseo|ronda|rúa|ul\.|ulica|ulitsa|"
    r"al\.|aleja|os\.|pl\.|str\.|strada|calea|bulevardul|odos|οδός|leoforos|ruta|jalan|jl\.|"
    r"cesta|ulice|nám\.|náměstí|utca|út|tér|gatan|vägen|gata|vei|veien|vej|gade|tie|katu"
)
# Compound suffixes (German, Dutch, Nordic, Finnish, ...): "Genterstrasse 49", "Koskikatu 83".
_STREET_SUFFIXES = (
    r"strasse|straße|str\.|weg|gasse|platz|allee|ring|damm|ufer|steig|chaussee|markt|"
    r"straat|laan|plein|kade|gracht|dijk|singel|"
    r"gatan|vägen|gränd|torget|stigen|gata|veien|vegen|vei|gate|vej|gade|stræde|alle|"
    r"katu|tie|kuja|polku|väylä|rinne|tanhua|"
    r"utca|út|ulica|ulice|cesta|ova|eva|ská|ský"
)
_UNIT = r"(?:apt\.?|apartment|suite|ste\.?|unit|flat|floor|fl\.|room|rm\.?|bldg\.?|building|" \
        r"p\.?\s?o\.?\s?box|post\s+office\s+box|box)\s*#?\s*\d+[a-z]?\b"
_WORD = r"[^\W\d_][\w'’.\-]*"  # a word that starts with a letter (any script)
_NUM = r"\d{1,5}[a-zA-Z]?(?:[-/]\d{1,4}[a-zA-Z]?)?"
_SP = r"[ \t]+"

_CAP = r"\p{Lu}\p{Ll}[\w'’\-]*"  # a Title-case word: street names are capitalised, prose words are not
_PARTICLE = (r"(?:de|da|do|dos|das|di|del|della|dalla|delle|degli|dei|des|du|la|le|les|van|von|der|den|ter|y|e|"
             r"of|the|on|am|an|im|al|el|ibn|bin)")
_DIRECTION = r"(?:[NSEW]|NE|NW|SE|SW)\.?"
_NAME_WORDS = rf"(?:{_DIRECTION}{_SP})?(?:{_PARTICLE}{_SP}){{0,3}}{_CAP}(?:{_SP}(?:{_CAP}|{_PARTICLE}))*"
# Street words written apart after the name: "Gyula utca 76", "Pernilles vei 115", "Praesidenten Str. 20"
_STREET_WORDS_AFTER = (r"utca|u\.|ulica|út|tér|vei|veien|vej|gade|gata|gatan|vägen|allee|allé|plads|straat|weg|"
                       r"enparantza|katu|tie|strasse|straße|str\.|gasse|platz|odboje|náměstí|nám\.")
_UNITS = r"(?:kg|km|cm|mm|m|g|mg|ml|lb|lbs|ft|in|min|sec|hrs?|mph|gb|mb|tb|usd|eur|gen|type|level|step|page)"
_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
# Units that stand for an address on their own; "room 101", "floor 3", "box 5" only next to a street line.
_STRONG_UNIT = r"(?:apt\.?|apartment|suite|ste\.|p\.?\s?o\.?\s?box|post\s+office\s+box)\s*#?\s*\d+[a-z]?\b"

_ADDRESS_ANCHORS: tuple[tuple[str, float], ...] = (
    # 12 Main Street / 658 Sunburst Drive Apt. 4: the words between the number and the street type are
    # capitalised ("0 lies in the way", "6 million square miles" are prose)
    (rf"\b{_NUM}{_SP}(?!(?i:{_MONTHS})\b){_NAME_WORDS}{_SP}(?=\p{{Lu}})(?i:{_STREET_TYPES})\b\.?", 0.6),
    # Rua Graciliano Ramos 1950 / ul. Lubartowska 42 / Via Roma 12: the name after the prefix is
    # capitalised ("via diplomacy", "tie a thread" are prose; "et al. 2019" a citation)
    (rf"(?<!\w)(?<!\bet\s)(?i:{_STREET_PREFIXES}){_SP}{_NAME_WORDS}{_SP}{_NUM}\b", 0.5),
    # 23 49 boulevard Amiral Courbet: a number before the prefix
    (rf"\b{_NUM}{_SP}(?i:{_STREET_PREFIXES}){_SP}{_NAME_WORDS}", 0.5),
    # Gosposka ulica 47 / Erzsébet tér 19 / Agip u. 96.
    (rf"{_CAP}(?:{_SP}{_CAP}){{0,2}}{_SP}(?i:{_STREET_WORDS_AFTER}){_SP}{_NUM}\b", 0.5),
    # R Cachoeira 112 / Λ. Πεντέλης 152: one-letter abbreviations of Rua and Leoforos
    (rf"(?<!\w)(?:R|Λ\.){_SP}{_NAME_WORDS}{_SP}{_NUM}\b", 0.5),
    # ... without a number it names a street, not a home: only after "lives on", "address:", ...
    (rf"(?<!\w)(?<!\bet\s)(?i:{_STREET_PREFIXES}){_SP}{_NAME_WORDS}", 0.2),
    # Avenue des Tuileries / Place Vendôme: English words as prefixes only capitalised, before a name
    (rf"(?<![\w.]\s)(?<!\w)(?:Avenue|Boulevard|Place|Route|Plaza|Cours){_SP}(?:{_PARTICLE}{_SP})?{_CAP}"
     rf"(?:{_SP}(?:{_CAP}|{_NUM})){{0,3}}", 0.45),
    # Genterstrasse 49 / Koskikatu 83 / Paul-Nevermann-Platz 47: a capitalised compound ("scoring 105" is prose)
    (rf"\b\p{{Lu}}[\w'’.\-]*?(?i:{_STREET_SUFFIXES}){_SP}{_NUM}\b", 0.6),
    # 18 Třebčínská 860 / 52 Tavcarjeva 73: a number, one to three Title-case words, a number
    # ("2 keys and 3", "5 NHL players in 2021", "1 March 2012" are not addresses)
    # (nor are table rows: "2007 Thriller 174", "1 Stock 2 Stock 3", "65 Kg 20")
    (rf"(?<!\d[ \t])\b{_NUM}{_SP}(?!(?i:{_MONTHS}|{_UNITS})\b){_CAP}(?:{_SP}(?:{_CAP}|{_PARTICLE})){{0,2}}{_SP}{_NUM}\b"
     rf"(?![.,]\d)(?![ \t]+\p{{Lu}}\p{{Ll}}+[ \t]+\d)", 0.45),
    # Apt. 441 / Suite 992 / P.O. Box 101
    (rf"(?<!\w)(?i:{_STRONG_UNIT})", 0.55),
    # USNS Márquez FPO AP 08653 (US military addresses)
    (r"(?i)\b(?:USNS|USNV|USS|USCGC|PSC|Unit)\s+\w+(?:,?\s+Box\s+\d+)?\s*\n?\s*[AF]PO\s+A[AEP]\s+\d{5}\b", 0.7),
    # the corner of Koepoortwal 115 and Hansen Street: a meeting point named by two streets
    (rf"(?:\b(?i:the){_SP})?\b(?i:corner){_SP}(?i:of){_SP}[^\n,;:?!]{{2,60}}?{_SP}(?i:and){_SP}{_NAME_WORDS}"
     rf"(?:{_SP}(?i:{_STREET_TYPES})\b\.?|{_SP}{_NUM}\b)", 0.6),
    # Boyle Street / Main Road: a street name without a number says where a street is, not where a
    # person lives; it counts only after "lives on", "address:", ... (the context boost)
    (r"\b\p{Lu}[\w'’\-]+[ \t]+(?:Street|Road|Avenue|Lane|Drive|Boulevard|Terrace|Crescent)\b", 0.2),
)
# "moved to Princeton in 1933": words that put a year or a count after a place, never inside a street line
_NOT_IN_A_STREET = r"(?i:in|since|on|during|until|till|by|from|for|after|before|around|circa|about|at|and|with)"
_ZIP_CONTEXT = re.compile(
    r"(?i)\b(?:zip(?:\s*code)?|post(?:al)?\s*code|postcode|plz|cep|código postal|code postal)\b\s*"
    r"(?:is|:|=|-)?\s*(\d{5}(?:-\d{4})?|\d{4,6}|[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2})\b")
# A line or comma-separated piece that continues an address: city, state, country, postcode.
_CONTINUATION = re.compile(
    rf"^[ \t]*(?:(?:{_WORD}|[A-Z]{{2,3}}|\d{{4,6}}(?:-\d{{3,4}})?|{_UNIT})[ \t,]*){{1,6}}$", re.IGNORECASE)
_WEAK_UNIT = re.compile(rf"(?<!\w){_UNIT}", re.IGNORECASE)
_PROSE_WORDS = frozenset(re.findall(r"\w+", """
    i you he she we they it is are was were be been am the a an to of for and or but please call
    me my your his her our their this that these those there here what when where which who how
    can could would should will shall may might must do does did have has had not no yes if then
    so as at by with from on in into about after before last next this today tomorrow office fax
    mobile phone tel email desk cell home work thanks thank hello hi dear regards best"""))
_ADDRESS_CONTEXT = re.compile(
    r"(?i)\b(?:address(?:es)?|lives?\s+(?:at|on|in)|lived\s+(?:at|in)|located\s+at|sent\s+to|send\s+"
    r"(?:it|them|this)?\s*to|deliver(?:ed)?\s+to|ship(?:ped)?\s+to|taxi\s+to|meet\s+(?:me\s+)?at|"
    r"moved\s+to|office\s+is\s+at|return\s+to|mail\s+to|residing\s+at|resides\s+at)\b[\s:,-]*$")


_SEPARATOR = re.compile(r"(?:[ \t]*[\n,][^\w\n]{0,4})+[ \t]*")


_SAME_LINE_PLACE = regex.compile(r"[ \t]+((?:\p{Lu}[\w'’\-]*\.?(?:[ \t]+|(?=[\n,?!]|\.?\s|\.?$))){1,6})")


def _continuation_end(text: str, end: int, limit: int = 5) -> int:
    """Extend an address over the lines or comma pieces after it that look like city/country/postcode
    (and, after a house or unit number, over capitalised words on the same line: 'Apt. 8 KAJAANI Fiji')."""
    if end and text[end - 1].isdigit():
        m = _SAME_LINE_PLACE.match(text, end)
        if m and not any(w.lower().strip(".") in _PROSE_WORDS for w in m.group(1).split()):
            end = m.start(1) + len(m.group(1).rstrip())
    for _ in range(limit):
        m = _SEPARATOR.match(text, end)
        if not m:
            break
        piece_start = m.end()
        piece = text[piece_start:_piece_end(text, piece_start)]
        newline = "\n" in m.group(0)
        words = piece.split()
        prose = next((i for i, w in enumerate(words) if w.lower().strip(".'’") in _PROSE_WORDS), None)
        if prose is not None:  # "Fiji 34730 last night": keep the place, stop before the prose
            piece = piece[: piece.index(words[prose])] if prose else ""
        if not piece.strip() or not _looks_like_place(piece, newline):
            break
        end = piece_start + len(piece.rstrip())
        if prose is not None:
            break
    return end


def _piece_end(text: str, start: int) -> int:
    stop = re.search(r"[,\n;:!?()\[\]<>\"]|\.(?=\s|$)", text[start:])
    return start + (stop.start() if stop else len(text) - start)


def _looks_like_place(piece: str, newline: bool) -> bool:
    words = piece.split()
    if not words or len(words) > (6 if newline else 4):
        return False
    if "@" in piece:
        return False
    if not _CONTINUATION.match(piece):
        return False
    # On the same line a place must be capitalised or a postcode; on its own line anything short goes.
    return newline or any(w[:1].isupper() or w[:1].isdigit() for w in words)


def _building_number_start(text: str, start: int) -> int:
    """Pull in a building number (and a comma-free prefix number) just before an anchor: '24 14 rue'."""
    m = re.search(rf"(?:\b{_NUM}{_SP}){{1,2}}$", text[max(0, start - 16):start])
    return start - len(m.group(0)) if m else start


class StreetAddressRecognizer(LocalRecognizer):
    """Street addresses, international: street lines, units, postcodes, and the city/country lines that
    follow them. Presidio ships no recognizer for STREET_ADDRESS."""

    def __init__(self, supported_language: str = "en") -> None:
        from faker.providers.address.en_US import Provider as UsAddresses

        # 4521 Kim Mountain / 12 Prince Harbor: the USPS suffixes (faker ships the list) count only
        # capitalised after a capitalised name, since many are plain words ("2 keys", "3 ways").
        usps = "|".join(sorted({re.escape(x) for x in UsAddresses.street_suffixes}, key=len, reverse=True))
        capital = r"[A-ZÀ-ÖØ-Þ][\w'’.\-]*"
        usps_anchor = (rf"\b{_NUM}{_SP}(?:{capital}{_SP}){{1,3}}(?:{usps})\b", 0.55)
        self._anchors = [(regex.compile(p), s) for p, s in (*_ADDRESS_ANCHORS, usps_anchor)]
        # After 'lives at' / 'address is', a number and one to three capitalised words are enough.
        self._after_context = regex.compile(rf"\b{_NUM}{_SP}(?:{capital}{_SP}?){{1,3}}"
                                            rf"|\b{capital}(?:{_SP}(?!{_NOT_IN_A_STREET}\b)[\w'’.\-]+){{0,3}}"
                                            rf"{_SP}{_NUM}\b")
        super().__init__(supported_entities=["STREET_ADDRESS"], name="StreetAddressRecognizer",
                         supported_language=supported_language)

    def load(self) -> None:  # patterns are compiled in __init__
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        cased = title_cased(text)  # all-lower or all-upper text: read its words as if capitalised
        spans: list[tuple[int, int, float]] = []
        for pattern, score in self._anchors:
            for m in pattern.finditer(cased):
                start, end = _building_number_start(text, m.start()), m.end()
                boost = 0.3 if _ADDRESS_CONTEXT.search(text[max(0, start - 40):start]) else 0.0
                spans.append((start, _continuation_end(text, end), min(1.0, score + boost)))
        for m in _WEAK_UNIT.finditer(text):  # "Room 12": an address part only next to a street line
            spans.append((m.start(), m.end(), 0.3))
        for m in self._after_context.finditer(cased):
            if _ADDRESS_CONTEXT.search(text[max(0, m.start() - 40):m.start()]):
                spans.append((m.start(), _continuation_end(text, m.end()), 0.7))
        for m in _ZIP_CONTEXT.finditer(text):
            spans.append((m.start(1), m.end(1), 0.6))
        return [_result(self, "STREET_ADDRESS", s, e, score)
                for s, e, score in _merge(spans) if _worth_reporting(text[s:e])]


_ADDRESS_WORD = re.compile(rf"(?i)\b(?:{_STREET_TYPES}|{_STREET_PREFIXES}|apt|suite|box)\b|\w(?:{_STREET_SUFFIXES})\b")


def title_cased(text: str) -> str:
    """Text whose letters are all one case and that has a street word, with each word's first letter
    upper-cased (same length); other text unchanged."""
    if any(c.islower() for c in text) and any(c.isupper() for c in text) or not _ADDRESS_WORD.search(text):
        return text
    chars = list(text.lower())
    for i, c in enumerate(chars):
        if c.isalpha() and (i == 0 or not chars[i - 1].isalnum()) and len(c.upper()) == 1:
            chars[i] = c.upper()
    return "".join(chars)


def _result(recognizer: EntityRecognizer, entity: str, start: int, end: int, score: float) -> RecognizerResult:
    """A result tagged with its recognizer, as Presidio's context enhancement expects."""
    metadata = {RecognizerResult.RECOGNIZER_NAME_KEY: str(getattr(recognizer, "name", "")),
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: str(recognizer.id)}
    explanation = AnalysisExplanation(recognizer=str(getattr(recognizer, "name", "")), original_score=score)
    return RecognizerResult(entity, start, end, score, analysis_explanation=explanation,
                            recognition_metadata=metadata)


def _merge(spans: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    merged: list[tuple[int, int, float]] = []
    for start, end, score in sorted(spans):
        if merged and start <= merged[-1][1] + 1:
            prev = merged[-1]
            merged[-1] = (prev[0], max(prev[1], end), max(prev[2], score))
        else:
            merged.append((start, end, score))
    return merged


def _worth_reporting(value: str) -> bool:
    return len(value.strip()) >= 4  # "12 St" alone says nothing


# -- person names in telling context ---------------------------------------------------------------

# Ana, McCathie, J., and the particles of "Donald van der Voet"
_NAME = (r"(?-i:(?:(?:van|von|der|den|de|da|di|del|du|la|le|ter|bin|ibn|al)[ \t]+){0,2}"
         r"(?:\p{Lu}[\p{Ll}'’\-]+(?:\p{Lu}[\p{Ll}'’\-]+)?|\p{Lu}\.))")
_PERSON_CONTEXT = (
    # "my name is Ana Souza", "call me Tilly", "Name: Jo Park", "signed, Bea Lind"
    (rf"(?:\bmy\s+name\s+is|\bname\s*:|\bcall\s+me|\bcalls\s+me|\bi\s+am\s+called|\bsigned,?)"
     rf"\s+(?P<name>{_NAME}(?:[ \t]+{_NAME}){{0,3}})", 0.7),
    # "Mr. Carr", "Dr. Peter Garcia": the title goes with the name
    (rf"(?P<name>\b(?:mr|mrs|ms|miss|mx|dr|prof|sir|madam|dame)\.?[ \t]+{_NAME}(?:[ \t]+{_NAME}){{0,2}})", 0.7),
    # "it's under Shannon Linden", "my partner's name Roberto Yamamura", "maiden name is McCathie",
    # "What's your name? April Martin", "add Tammy Gyarmathy as guardian"
    (rf"(?:\b(?:it'?s|it’s|is|was)\s+under|\bunder\s+the\s+name|(?:\b{RELATION}(?:'s|’s)|\bmaiden|\bfull|\blegal|\bfirst|"
     rf"\blast)\s+name(?:\s+is|\s*:)?|\byour\s+name\s*\?)\s+(?P<name>{_NAME}(?:[ \t]+{_NAME}){{0,3}})", 0.6),
    (rf"\badd\s+(?P<name>{_NAME}(?:[ \t]+{_NAME}){{0,3}})\s+as\s+(?:an?\s+|the\s+|my\s+)?(?:guardian|beneficiary|"
     rf"emergency\s+contact|co-?signer|authori[sz]ed\s+user|dependent)\b", 0.6),
    # "I'm Crystal, reachable at ...": a self-introduction followed by how to reach the writer
    (rf"\b(?:i'?m|i’m|i\s+am|this\s+is)\s+(?P<name>{_NAME}(?:[ \t]+{_NAME}){{0,2}})\s*,?\s+(?:and\s+)?(?:i'?m\s+)?"
     rf"(?:reachable|you\s+can\s+(?:reach|call|e-?mail|text)|my\s+(?:number|phone|e-?mail|cell|address))\b", 0.6),
)
# In text without capitals ("my name is ana souza") only the phrases that leave no doubt
_LOWER_NAME = (r"(?!(?:and|or|but|is|was|i|im|from|at|in|on|to|of|for|with|the|a|an|my|your|here|please|"
               r"thanks|and)\b)(?-i:\p{Ll}[\p{Ll}'’\-]+)")
_PERSON_CONTEXT_LOWER = (
    (rf"(?:\bmy\s+name\s+is|\bname\s*:|\bcalls?\s+me|(?:\b{RELATION}(?:'s|’s)|\bmaiden|\bfull|\blegal)\s+name(?:\s+is|\s*:)?|"
     rf"\byour\s+name\s*\?)\s+(?!(?:his|her|our|their)\b)(?P<name>{_LOWER_NAME}(?:[ \t]+{_LOWER_NAME}){{0,2}})", 0.5),
    (rf"\badd\s+(?P<name>{_LOWER_NAME}(?:[ \t]+{_LOWER_NAME}){{0,2}})\s+as\s+(?:an?\s+|the\s+|my\s+)?"
     rf"(?:guardian|beneficiary|emergency\s+contact|co-?signer|authori[sz]ed\s+user|dependent)\b", 0.5),
)


class PersonContextRecognizer(LocalRecognizer):
    """Names introduced by a phrase that leaves no doubt ('my name is', a title), which small NER
    models miss in lower-case or unusual names."""

    def __init__(self, supported_language: str = "en") -> None:
        import regex  # \p{Lu}: capitals of every script

        self._patterns = [(regex.compile(p, regex.IGNORECASE), s) for p, s in _PERSON_CONTEXT]
        self._lower_patterns = [(regex.compile(p, regex.IGNORECASE), s) for p, s in _PERSON_CONTEXT_LOWER]
        super().__init__(supported_entities=["PERSON"], name="PersonContextRecognizer",
                         supported_language=supported_language)

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        patterns = self._patterns if any(c.isupper() for c in text) else self._lower_patterns
        return [_result(self, "PERSON", m.start("name"), m.end("name"), score)
                for pattern, score in patterns for m in pattern.finditer(text)]


# -- phone numbers ---------------------------------------------------------------------------------

_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+\-./])(?:\+|00)?(?:\(\d{1,4}\)|\d{1,5})(?:[ .\-/]{0,2}(?:\(\d{1,5}\)|\d{1,6})){0,6}"
    r"(?:\s*(?:x|ext\.?|extension|#)\s*\d{1,6})?(?![\w/])(?!-\d)(?![.,]\d)")
_DATE_LIKE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b|\b\d{1,2}[-/.]\d{1,2}[-/.]\d{4}\b")
_YEAR_RANGE = re.compile(r"^(?:1[5-9]|20)\d\d\s*[-/]\s*(?:(?:1[5-9]|20)\d\d|\d\d)$")
_SSN_LIKE = re.compile(r"^\d{3}-\d{2}-\d{4}$")  # US_SSN's shape; the SSN recognizer names it
_IPV4_LIKE = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
# Written the way phone numbers are and numbers in prose are not: +44 ..., (415) 555-0172, 415-555-0172
_PHONE_SHAPED = re.compile(r"^(?:(?:\+|00)\d|\(\d{1,5}\)\s?\d|\d{3}[-.]\d{3}[-.]\d{4}(?!\d))")  # 8017x598 too
# Arithmetic around a number ("$4500-600 =", "<<1200/1000=1.2>>"), or a row of a table of numbers
_ARITHMETIC_BEFORE = re.compile(r"(?:[=$€£<*/+×÷^]|\d[ \t]+)[ \t]*$")
_ARITHMETIC_AFTER = re.compile(r"^[ \t]*(?:[=>*/+×÷^%]|[ \t]\d)")
_PHONE_CONTEXT_WORDS = re.compile(
    r"(?i)\b(?:phone|telephone|tel|cell|mobile|call(?:ed|ing)?|fax|office|number|reach(?:able)?|contact|whats\s?app|"
    r"sms|text|desk|dial|ring|answering|line|hotline|extension|ext|ph|mob|no)\b")


class LenientPhoneRecognizer(LocalRecognizer):
    """Phone numbers in national formats ('699 956 915', '(37) 788-063') as well as international
    ones: a candidate must be a possible number for one of the configured regions (libphonenumber).
    A number written the way phone numbers are (+44 ..., (415) 555-..., 415-555-0172) counts alone;
    digit groups that prose, tables and sums also have count only next to a word like 'call' or 'phone'."""

    def __init__(self, regions: Iterable[str], supported_language: str = "en") -> None:
        self.regions = list(regions) or ["US"]
        super().__init__(supported_entities=["PHONE_NUMBER"], name="LenientPhoneRecognizer",
                         supported_language=supported_language)

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        results = []
        for m in _PHONE_CANDIDATE.finditer(text):
            candidate = m.group(0)
            if _ARITHMETIC_BEFORE.search(text[max(0, m.start() - 3):m.start()]) \
                    or _ARITHMETIC_AFTER.match(text[m.end():m.end() + 3]):
                continue
            score = self._score(candidate)
            if score and not _PHONE_SHAPED.match(candidate):
                near = text[max(0, m.start() - 40):m.start()] + " " + text[m.end():m.end() + 20]
                score = score + 0.2 if _PHONE_CONTEXT_WORDS.search(near) else 0.0
            if score:
                results.append(_result(self, "PHONE_NUMBER", m.start(), m.end(), min(score, 1.0)))
        return results

    def _score(self, candidate: str) -> float:
        core = re.split(r"\s*(?:x|ext\.?|extension|#)\s*\d", candidate)[0].strip()
        digits = sum(c.isdigit() for c in core)
        if digits < 7 or digits > 15 or _DATE_LIKE.search(core) or _IPV4_LIKE.match(core) \
                or _SSN_LIKE.match(core) or _YEAR_RANGE.match(core):
            return 0.0
        groups = re.split(r"[ .\-/()]+", core.lstrip("+("))
        if core.count(".") == 1 and not re.search(r"[ \-/()]", core):  # 17260.238: a decimal
            return 0.0
        if len(groups) > 5 or (len(groups[0]) == 1 and not core.startswith(("+", "("))
                               and any(len(g) < 3 for g in groups[1:])):  # 1 22 55 12316: a table row
            return 0.0
        separated = bool(re.search(r"[ .\-/()]", core)) or core.startswith("+")
        regions = [None] if core.startswith(("+", "00")) else self.regions
        best = 0.0
        for region in regions:
            try:
                number = phonenumbers.parse(core.replace("00", "+", 1) if core.startswith("00") else core,
                                            region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number) and (separated or digits >= 10):
                return 0.6
            if separated and phonenumbers.is_possible_number(number):
                best = 0.4
        return best


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# 13-19 digits in one run, or in the groups cards are printed in (4-4-4-4[-3], Amex 4-6-5), same separator
_CARD_CANDIDATE = re.compile(r"(?<![\d\-.,/])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{4,5})"
                             r"(?![\d\-/]|[.,]\d)")


class LongCardRecognizer(LocalRecognizer):
    """Payment card numbers of 13 to 19 digits that pass the Luhn check and start like a card (2-6).
    Presidio's own pattern stops at 17 digits and misses 19-digit Visa/UnionPay numbers; it also takes
    any grouping ("1000 2000 3000 4000" in a table), which this one does not."""

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(supported_entities=["CREDIT_CARD"], name="LongCardRecognizer",
                         supported_language=supported_language)

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        results = []
        for m in _CARD_CANDIDATE.finditer(text):
            digits = _NON_DIGITS.sub("", m.group(0))
            if digits[0] in "23456" and luhn_valid(digits) and len(set(digits)) > 1 \
                    and not _ARITHMETIC_BEFORE.search(text[max(0, m.start() - 3):m.start()]) \
                    and not _ARITHMETIC_AFTER.match(text[m.end():m.end() + 3]):
                results.append(_result(self, "CREDIT_CARD", m.start(), m.end(), 0.9))
        return results


# -- pre-checks and factories ----------------------------------------------------------------------

_NON_DIGITS = re.compile(r"\D+")
_IBAN_HINT = re.compile(r"\b[A-Za-z]{2}\d{2}")
_IP_HINT = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}")


def entities_worth_checking(text: str, entities: list[str]) -> list[str]:
    """The configured entities whose recognizers could match `text` at all (cheap regex tests)."""
    digits = len(_NON_DIGITS.sub("", text))
    checks: dict[str, Callable[[], bool]] = {
        "EMAIL_ADDRESS": lambda: "@" in text,
        "CREDIT_CARD": lambda: digits >= 12,
        "US_SSN": lambda: digits >= 9,
        "PHONE_NUMBER": lambda: digits >= 7,
        "IBAN_CODE": lambda: digits >= 10 and _IBAN_HINT.search(text) is not None,
        "IP_ADDRESS": lambda: _IP_HINT.search(text) is not None,
    }
    return [e for e in entities if e not in checks or checks[e]()]


class RegexTimeout(RuntimeError):
    """A custom pattern ran past its time limit on one text (e.g. `(a|a)*$`): the record fails, it is
    never written unscanned."""


class CustomPatternRecognizer(LocalRecognizer):
    """A spec's regex recognizer run by the `regex` engine with a time limit per text. Presidio's own
    PatternRecognizer waits 60 s and then drops the match silently, which would let the PII through."""

    def __init__(self, spec: CustomRecognizer, timeout_s: float) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        self._patterns = [regex.compile(p) for p in spec.patterns]
        super().__init__(supported_entities=[spec.entity], name=spec.name, supported_language="en",
                         context=spec.context)

    def load(self) -> None:
        return None

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        results = []
        for k, pattern in enumerate(self._patterns):
            try:
                matches = [m.span() for m in pattern.finditer(text, timeout=self.timeout_s)]
            except TimeoutError:
                raise RegexTimeout(f"custom recognizer '{self.spec.name}' pattern {k + 1} took over "
                                   f"{self.timeout_s} s on one text") from None
            results += [_result(self, self.spec.entity, s, e, self.spec.score) for s, e in matches if e > s]
        return results


def custom_recognizer(spec: CustomRecognizer, timeout_s: float = 1.0) -> EntityRecognizer:
    """A time-limited regex recognizer from a spec entry."""
    return CustomPatternRecognizer(spec, timeout_s)
