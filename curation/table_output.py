"""Parquet outputs: the curated set and the rejects, converted from the JSONL a run writes as it goes.

Runs stream JSON Lines (one record at a time, any shape); the conversion is one streamed polars pass
(`scan_ndjson` -> `sink_parquet`, zstd) at the end, before the outputs are published. Schemas
(docs/formats.md):

- curated: `id` string, `messages` list<struct<role string, content string>>, then every other field of
  the records as a column of its own type, inferred over all records (null where a record lacks it).
  A field whose values differ in type between records (a string here, an object there; message
  contents given as lists of parts next to plain strings) is written as JSON text.
- rejects: fixed, whatever the steps: `id`, `step`, `reason`, `message` strings; `details` and
  `record` (the dropped record, for steps after validation) as JSON text; `raw` (the input line or row
  as read, for validation) string; `raw_truncated`, `raw_bytes_replaced` booleans.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

OutputFormat = Literal["jsonl", "parquet"]
COMPRESSION: Literal["zstd"] = "zstd"


def _rejects_schema() -> dict[str, Any]:
    import polars as pl

    text, flag = pl.String, pl.Boolean
    return {"id": text, "step": text, "reason": text, "message": text, "details": text, "record": text,
            "raw": text, "raw_truncated": flag, "raw_bytes_replaced": flag}


def _curated_empty_schema() -> dict[str, Any]:
    import polars as pl

    return {"id": pl.String, "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String}))}


def jsonl_to_parquet(source: Path, dest: Path, kind: Literal["curated", "rejects"]) -> None:
    """Write the JSONL file `source` as Parquet to `dest`, streamed, with the schema of its kind."""
    import polars as pl

    if kind == "rejects":
        frame = pl.scan_ndjson(source, schema=_rejects_schema())
    elif source.stat().st_size == 0:
        frame = pl.LazyFrame(schema=_curated_empty_schema())
    else:
        frame = pl.scan_ndjson(source, infer_schema_length=None)
    frame.sink_parquet(dest, compression=COMPRESSION)
