"""Settings and report section of the duplicate removal step."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.8, gt=0.0, le=1.0)
    num_perm: int = Field(128, ge=16)
    ngram: int = Field(5, ge=1)


class DedupReport(BaseModel):
    exact_duplicates: int = 0
    near_duplicates: int = 0
