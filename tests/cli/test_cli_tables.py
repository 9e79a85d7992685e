"""`assay validate` and `assay curate` on tables: Parquet in and out, and bad tables as one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl


def assay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assay.api.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def chat(question: str, answer: str | None) -> list[dict[str, str]]:
    turns = [{"role": "user", "content": question}]
    return turns + ([{"role": "assistant", "content": answer}] if answer else [])


def test_validate_a_parquet_file_names_file_row_and_column_and_writes_parquet_rejects(tmp_path: Path) -> None:
    path = tmp_path / "chat.parquet"
    pl.DataFrame({"messages": [chat("Hi", "Hello"), chat("Lonely", None)]}).write_parquet(path)
    rejects = tmp_path / "rejects.parquet"
    result = assay("validate", path, "--rejects", rejects)
    assert result.returncode == 1, result.stderr
    assert "chat.parquet row 2, column messages: no_assistant_turn" in result.stdout
    row = pl.read_parquet(rejects).row(0, named=True)
    assert row["reason"] == "no_assistant_turn" and json.loads(row["raw"]) == {"messages": chat("Lonely", None)}


def test_curate_a_dataset_folder_into_parquet(tmp_path: Path) -> None:
    data = tmp_path / "ds" / "data"
    data.mkdir(parents=True)
    pl.DataFrame({"prompt": ["a", "b"], "completion": ["1", "2"]}).write_parquet(data / "train-00000-of-00001.parquet")
    pl.DataFrame({"prompt": ["z"], "completion": ["9"]}).write_parquet(data / "test-00000-of-00001.parquet")
    out = tmp_path / "out"
    result = assay("curate", tmp_path / "ds", "--out", out, "--steps", "validate", "--output-format", "parquet",
                   "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"curated 2 of 2 records -> {out / 'curated.parquet'}" in result.stdout
    assert pl.read_parquet(out / "curated.parquet")["messages"].list.len().to_list() == [2, 2]
    result = assay("curate", tmp_path / "ds", "--out", out, "--steps", "validate", "--set", "validate.split=test",
                   "--quiet")
    assert result.returncode == 0 and "curated 1 of 1 records" in result.stdout
    result = assay("curate", tmp_path / "ds", "--out", tmp_path / "ds" / "out", "--steps", "validate", "--quiet")
    assert result.returncode == 2 and "inside the input folder" in result.stderr


def test_bad_tables_are_one_line_and_exit_2(tmp_path: Path) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("prompt,completion\na,b,c\n")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    for path, message in ((ragged, "ragged rows: row 1"), (corrupt, "not a valid Parquet file")):
        result = assay("validate", path)
        assert result.returncode == 2, result.stdout
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    result = assay("curate", ragged, "--out", tmp_path / "out", "--output-format", "xml", "--quiet")
    assert result.returncode == 2 and "output_format" in result.stderr
