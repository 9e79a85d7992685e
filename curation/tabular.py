"""Tabular inputs: Parquet, CSV and TSV files, folders of shards and Hugging Face dataset folders, read
lazily with polars in batches; each row becomes a record the way a JSONL line's keys do.

Rows feed the same validator as JSONL lines (`TableReader` has `LineReader`'s interface), so formats,
checks, ids and rejects are the same. A null cell is an absent key (CSV empty cells, and columns a
record of another shape does not use); a `messages` cell may be a list of structs (Parquet) or JSON text
(CSV); a row whose cells are all null is a blank line.
"""

from __future__ import annotations

import bisect
import csv
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from assay.curation.reader import InputFileError
from assay.schemas.errors import ErrorCode, RecordError
from assay.schemas.validation import ValidateConfig

if TYPE_CHECKING:
    import polars as pl

TABLE_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}
FORMAT_COLUMNS = ("messages", "instruction", "output", "prompt", "completion", "text")
"""Columns that make a record of a known format; a table needs at least one."""

BATCH_ROWS = 4096
# Hugging Face shard names: train-00000-of-00003.parquet, train-00000-of-00003-0a1b2c.parquet.
_HF_SHARD = re.compile(r"^(?P<split>[^-/]+)-\d+-of-\d+")
_DICT = dict
_LIST = list


def is_tabular(path: Path) -> bool:
    """Whether `path` is read by `TableReader`: a table file, or a folder (of shards)."""
    return path.is_dir() or path.suffix.lower() in TABLE_SUFFIXES


def dataset_files(path: Path, split: str | None = None) -> list[Path]:
    """The table files of `path`: itself, the shards of a folder, or one split of a Hugging Face dataset
    folder (`data/<split>-*.parquet`; `train` unless `split` names another). One clear error otherwise."""
    if not path.is_dir():
        if not path.exists():
            raise InputFileError(f"{path}: no such file")
        return [path]
    folder = path / "data" if (path / "data").is_dir() else path
    files = sorted(f for f in folder.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in TABLE_SUFFIXES)
    if not files:
        others = sorted(f.name for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))[:5]
        seen = f" (it holds {', '.join(others)})" if others else ""
        raise InputFileError(f"{folder}: is a directory holding no .parquet, .csv or .tsv shards{seen}; "
                             "a folder input is a set of table shards or a Hugging Face dataset folder")
    kinds = sorted({f.suffix.lower() for f in files})
    if len(kinds) > 1:
        raise InputFileError(f"{folder}: the folder mixes {' and '.join(kinds)} shards; keep one kind per dataset")
    splits: dict[str, list[Path]] = {}
    for f in files:
        match = _HF_SHARD.match(f.name)
        splits.setdefault(match["split"] if match else "", []).append(f)
    if split is not None:
        if split not in splits:
            named = ", ".join(sorted(s for s in splits if s)) or "none"
            raise InputFileError(f"{folder}: no shards of split '{split}' (splits found: {named})")
        return splits[split]
    if len(splits) == 1:
        return files
    if "train" in splits:
        return splits["train"]
    named = ", ".join(sorted(s or "(unnamed)" for s in splits))
    raise InputFileError(f"{folder}: several splits ({named}) and none is 'train'; choose one with --split "
                         "(validate) or `validate.split` (curate)")


def _polars_error(exc: Exception) -> str:
    """polars' message in one line, without its hints."""
    return " ".join(str(exc).split("\n\n")[0].split())


def check_csv_rows(path: Path, separator: str) -> None:
    """One error for the first row with more or fewer fields than the header (polars would fail on a
    longer row without saying where, and fill a shorter one with nulls)."""
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f, delimiter=separator)
            header = next(reader, None)
            if header is None:
                return
            for row_number, row in enumerate(reader, 1):
                if row and len(row) != len(header):
                    raise InputFileError(
                        f"{path}: ragged rows: row {row_number} (ending on line {reader.line_num}) has {len(row)} "
                        f"fields, the header has {len(header)}. Quote fields that hold the separator; nothing "
                        "was read from this file.")
    except csv.Error as exc:
        raise InputFileError(f"{path}: not a valid CSV file: {exc}") from exc


class TableReader:
    """Reads a table file or folder of shards; `records()` yields each row as a parsed record (the
    validator's `Parsed`: line None, record number, raw row, row as record, error)."""

    def __init__(self, path: Path, config: ValidateConfig, warnings: Counter[str], block_bytes: int = 0,
                 on_progress: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.config = config
        self.warnings = warnings
        self.on_progress = on_progress
        self.fast: Callable[[bytes], bool] | None = None  # JSONL only; never set to anything useful here
        self.fast_valid = 0
        self.lines_read = 0
        self.skipped_columns: list[str] = []
        self._starts: list[int] = []  # first record number of each shard read so far
        self._names: list[str] = []
        self._done_bytes = 0

    # -- where a record came from (only asked for rejects) ------------------------------------------
    def locate(self, record: int) -> tuple[str, int]:
        """(file, 1-based row in that file) of a record number."""
        i = bisect.bisect_right(self._starts, record) - 1
        return self._names[i], record - self._starts[i] + 1

    def bytes_read(self) -> int:
        return self._done_bytes

    def records(self) -> Iterator[tuple[int | None, int, Any, Any, RecordError | None]]:
        files = dataset_files(self.path, self.config.split)
        schemas = [self._schema(f) for f in files]  # every footer and header read now: bad ones fail first
        self._check_same_schema(files, schemas)
        self._check_usable(files[0], schemas[0])
        return self._rows(files, schemas[0])

    def _name(self, file: Path) -> str:
        return file.relative_to(self.path).as_posix() if self.path.is_dir() else file.name

    def _kind(self, file: Path) -> str:
        return TABLE_SUFFIXES[file.suffix.lower()]

    def _scan(self, file: Path) -> pl.LazyFrame:
        import polars as pl

        kind = self._kind(file)
        if kind == "parquet":
            return pl.scan_parquet(file)
        # CSV has no types: every cell is read as text, so nothing depends on guessing from the first rows.
        return pl.scan_csv(file, separator="\t" if kind == "tsv" else ",", infer_schema=False)

    def _schema(self, file: Path) -> dict[str, Any]:
        import polars as pl

        kind = self._kind(file)
        if kind != "parquet":
            check_csv_rows(file, "\t" if kind == "tsv" else ",")
        try:
            return dict(self._scan(file).collect_schema())
        except (pl.exceptions.PolarsError, OSError) as exc:
            what = "a valid Parquet file (corrupt or truncated footer?)" if kind == "parquet" else f"a valid {kind.upper()} file"
            raise InputFileError(f"{file}: not {what}: {_polars_error(exc)}") from exc

    def _check_same_schema(self, files: list[Path], schemas: list[dict[str, Any]]) -> None:
        first = schemas[0]
        for file, schema in zip(files[1:], schemas[1:], strict=True):
            if schema == first:
                continue
            a, b = self._name(files[0]), self._name(file)
            only_a = [c for c in first if c not in schema]
            only_b = [c for c in schema if c not in first]
            retyped = [f"'{c}' is {first[c]} in {a} but {schema[c]} in {b}" for c in first if c in schema
                       and first[c] != schema[c]]
            diffs = ([f"{a} has {', '.join(repr(c) for c in only_a)} that {b} lacks"] if only_a else []) + \
                    ([f"{b} has {', '.join(repr(c) for c in only_b)} that {a} lacks"] if only_b else []) + retyped
            raise InputFileError(f"{self.path}: mixed schemas across shards: {'; '.join(diffs)}. All shards of a "
                                 "dataset need the same columns and types; nothing was read.")

    def _check_usable(self, file: Path, schema: dict[str, Any]) -> None:
        if not any(c in schema for c in FORMAT_COLUMNS):
            has = ", ".join(repr(c) for c in list(schema)[:12]) or "none"
            raise InputFileError(
                f"{file}: no usable columns (it has {has}); a dataset table needs 'messages' (chat), "
                "'instruction'/'output', 'prompt'/'completion' or 'text'")

    def _select(self, schema: dict[str, Any]) -> list[Any]:
        """Columns as JSON can hold them: dates, times and decimals become text; binary columns (images,
        audio) are left out and named in the warnings."""
        import polars as pl

        columns: list[Any] = []
        for name, dtype in schema.items():
            if dtype == pl.Binary:
                if name not in self.skipped_columns:
                    self.skipped_columns.append(name)
                    self.warnings[f"binary_column_skipped:{name}"] += 1
                continue
            if dtype.is_temporal() or dtype.is_decimal():
                columns.append(pl.col(name).cast(pl.String))
            else:
                columns.append(pl.col(name))
        return columns

    def _rows(self, files: list[Path], schema: dict[str, Any]) -> Iterator[tuple[int | None, int, Any, Any,
                                                                                RecordError | None]]:
        import polars as pl

        record = 0
        columns = self._select(schema)
        to_record = self._to_record
        for file in files:
            self._starts.append(record + 1)
            self._names.append(self._name(file))
            start = record
            try:
                for frame in self._scan(file).select(columns).collect_batches(chunk_size=BATCH_ROWS):
                    for row in frame.to_dicts():
                        record += 1
                        obj, error = to_record(row)
                        if obj is None:
                            self.warnings["blank_line"] += 1
                            continue
                        yield None, record, obj, obj, error
                    self.lines_read = record
                    if self.on_progress is not None:
                        self.on_progress(self._done_bytes)
            except pl.exceptions.PolarsError as exc:
                reason = _polars_error(exc)
                if "utf-8" in reason.lower() and self._kind(file) != "parquet":
                    reason += " (CSV and TSV files must be UTF-8 text)"
                raise InputFileError(f"{file}: read error after row {record - start}: {reason}") from exc
            self._done_bytes += file.stat().st_size
        self.lines_read = record

    def _to_record(self, row: dict[str, Any]) -> tuple[dict[str, Any] | None, RecordError | None]:
        """The record a row stands for (None for a blank row), and an error when a cell cannot be one."""
        obj = {key: value for key, value in row.items() if value is not None}
        if not obj:
            return None, None
        messages = obj.get("messages")
        if type(messages) is _LIST:
            # Struct fields absent from a message come back as nulls: drop them, as absent keys.
            obj["messages"] = [{k: v for k, v in m.items() if v is not None} if type(m) is _DICT else m
                               for m in messages]
        elif type(messages) is str:
            try:
                obj["messages"] = orjson.loads(messages)
            except orjson.JSONDecodeError as exc:
                return obj, RecordError(code=ErrorCode.invalid_json, field="messages",
                                        message=f"the 'messages' cell is not JSON: {str(exc).split(': line ')[0]}")
            from assay.curation.validate_checks import nested_deeper_than, too_deep

            if nested_deeper_than(obj["messages"], self.config.max_depth - 1):
                return obj, too_deep(self.config.max_depth)
        return obj, None
