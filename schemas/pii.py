"""Settings and report section of the PII redaction step."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PiiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entities: list[str] = Field(
        default_factory=lambda: [
            "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN",
            "IBAN_CODE", "IP_ADDRESS", "LOCATION", "STREET_ADDRESS",
        ]
    )
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)


class PiiReport(BaseModel):
    records_scanned: int = 0
    records_changed: int = 0
    by_entity: dict[str, int] = Field(default_factory=dict)
    by_role: dict[str, int] = Field(default_factory=dict)
    residual: int = 0
