"""Settings and report section of the topic balancing step."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BalanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic_field: str | None = None
    max_share: float | None = Field(None, gt=0.0, le=1.0)
    seed: int = 0


class BalanceReport(BaseModel):
    before: dict[str, int] = Field(default_factory=dict)
    after: dict[str, int] = Field(default_factory=dict)
