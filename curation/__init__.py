"""Dataset steps: read and validate, PII redaction, deduplication, topic balancing; the pipeline; the report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assay.curation.pipeline import run_pipeline as run_pipeline


def __getattr__(name: str) -> Any:
    # Lazy so `import curation` stays cheap for the CLI.
    if name == "run_pipeline":
        from assay.curation.pipeline import run_pipeline

        return run_pipeline
    raise AttributeError(name)
