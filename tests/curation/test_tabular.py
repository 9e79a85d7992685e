"""Tables as datasets: Parquet, CSV and TSV files, folders of shards and Hugging Face dataset folders go
through the same validator as JSONL; Parquet outputs; each kind of bad table is one clear error."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from assay.curation.pipeline import run_pipeline
from assay.curation.publish import MANIFEST, published_outputs
from assay.curation.reader import InputFileError
from assay.curation.validate import Rejected, Validator, validate_file
from assay.schemas.curation import CurationSpec
from assay.schemas.validation import ValidateConfig

ASSISTANT = {"role": "assistant", "content": "Paris."}


def chat(question: str, answer: str | None = "Paris.") -> list[dict[str, str]]:
    turns = [{"role": "user", "content": question}]
    if answer is not None:
        turns.append({"role": "assistant", "content": answer})
    return turns


def read_all(path: Path, config: ValidateConfig | None = None) -> tuple[list[dict[str, Any]], list[Rejected], Any]:
    validator = Validator(path, config or ValidateConfig())
    valid: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    for ok, bad in validator.batches(3):
        valid += ok
        rejected += bad
    return valid, rejected, validator.summary


def write_chat_parquet(path: Path, questions: list[str], **extra: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"messages": [chat(q) for q in questions], **extra}).write_parquet(path)
    return path


# -- reading ---------------------------------------------------------------------------------------

def test_parquet_with_nested_messages_validates_like_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "chat.parquet"
    messages = [chat("Capital of France?"), chat("No answer here", None),
                [{"role": "user", "content": "Hi", "name": "ann"}, ASSISTANT]]
    turn = pl.Struct({"role": pl.String, "content": pl.String, "name": pl.String})
    pl.DataFrame({"messages": messages, "category": ["geo", None, "greeting"], "id": ["a", "b", "c"]},
                 schema={"messages": pl.List(turn), "category": pl.String, "id": pl.String},
                 ).write_parquet(path, row_group_size=2)
    valid, rejected, summary = read_all(path)
    assert summary.format is not None and summary.format.value == "chat"
    assert (summary.records_read, summary.valid, summary.rejected) == (3, 2, 1)
    assert valid[0] == {"id": "a", "messages": chat("Capital of France?"), "category": "geo"}
    # A struct field another message has (`name`) is null here: it is left out, like an absent key.
    assert valid[1]["messages"][0] == {"role": "user", "content": "Hi", "name": "ann"}
    assert valid[1]["messages"][1] == ASSISTANT
    error = rejected[0].error
    assert (error.code.value, error.file, error.row, error.field) == ("no_assistant_turn", "chat.parquet", 2, "messages")
    assert orjson.loads(rejected[0].to_json()["raw"]) == {"messages": chat("No answer here", None), "id": "b"}


def test_csv_cells_with_quoted_newlines_and_json_messages(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text('prompt,completion,id\n"Write a haiku\nabout rain",Drops on the tin roof,7\n\n'
                    'Only a prompt,,8\n', encoding="utf-8")
    valid, rejected, summary = read_all(path)
    assert valid == [{"id": "7", "messages": [{"role": "user", "content": "Write a haiku\nabout rain"},
                                              {"role": "assistant", "content": "Drops on the tin roof"}]}]
    assert summary.blank == 1
    # Row numbers count data rows (the blank one too), not lines: the quoted newline does not shift them.
    assert (rejected[0].error.file, rejected[0].error.row, rejected[0].error.field) == ("pairs.csv", 3, "completion")

    chats = tmp_path / "chats.tsv"
    good, bad = orjson.dumps(chat("Q?")).decode(), '[{"role": "user"'
    chats.write_text(f"messages\ttopic\n{good}\tgeo\n{bad}\tgeo\n", encoding="utf-8")
    valid, rejected, _ = read_all(chats)
    assert valid[0]["messages"] == chat("Q?") and valid[0]["topic"] == "geo"
    assert (rejected[0].error.code.value, rejected[0].error.row, rejected[0].error.field) == ("invalid_json", 2,
                                                                                             "messages")


def test_instruction_columns_and_json_unfriendly_types(tmp_path: Path) -> None:
    path = tmp_path / "alpaca.parquet"
    pl.DataFrame({"instruction": ["Add", "Sub"], "input": ["2 and 2", None], "output": ["4", "0"],
                  "when": [datetime.date(2024, 1, 2)] * 2, "image": [b"\x89PNG", b"\x00"]}).write_parquet(path)
    valid, rejected, summary = read_all(path)
    assert not rejected
    assert valid[0]["messages"] == [{"role": "user", "content": "Add\n\n2 and 2"}, {"role": "assistant", "content": "4"}]
    assert valid[0]["when"] == "2024-01-02"
    assert "image" not in valid[0] and summary.warnings == {"binary_column_skipped:image": 1}


def test_a_folder_of_shards_reads_every_shard_and_names_the_shard_of_a_reject(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    write_chat_parquet(folder / "part-0.parquet", ["a", "b"])
    folder.joinpath("part-1.parquet").parent.mkdir(exist_ok=True)
    pl.DataFrame({"messages": [chat("c"), chat("d", None)]}).write_parquet(folder / "part-1.parquet")
    (folder / "README.md").write_text("not a shard")
    valid, rejected, summary = read_all(folder)
    assert [v["messages"][0]["content"] for v in valid] == ["a", "b", "c"]
    assert len({v["id"] for v in valid}) == 3
    assert (rejected[0].error.file, rejected[0].error.row, rejected[0].error.record) == ("part-1.parquet", 2, 4)
    assert summary.bytes_read == sum(f.stat().st_size for f in folder.glob("*.parquet"))


def test_a_hugging_face_dataset_folder_reads_train_unless_told_another_split(tmp_path: Path) -> None:
    data = tmp_path / "ds" / "data"
    write_chat_parquet(data / "train-00000-of-00002.parquet", ["t1", "t2"])
    write_chat_parquet(data / "train-00001-of-00002.parquet", ["t3"])
    write_chat_parquet(data / "test-00000-of-00001.parquet", ["e1"])
    (tmp_path / "ds" / "README.md").write_text("---\nlicense: mit\n---\n")
    assert [v["messages"][0]["content"] for v in read_all(tmp_path / "ds")[0]] == ["t1", "t2", "t3"]
    valid, _, _ = read_all(tmp_path / "ds", ValidateConfig(split="test"))
    assert [v["messages"][0]["content"] for v in valid] == ["e1"]
    with pytest.raises(InputFileError, match=r"no shards of split 'dev' \(splits found: test, train\)"):
        read_all(tmp_path / "ds", ValidateConfig(split="dev"))


# -- bad tables: one clear error each ---------------------------------------------------------------

def test_a_table_without_usable_columns_is_one_error_naming_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "nothing.parquet"
    pl.DataFrame({"question": ["q"], "answer": ["a"]}).write_parquet(path)
    with pytest.raises(InputFileError, match=r"no usable columns \(it has 'question', 'answer'\)"):
        validate_file(path)


def test_a_corrupt_parquet_footer_is_one_error(tmp_path: Path) -> None:
    good = write_chat_parquet(tmp_path / "good.parquet", ["a"])
    bad = tmp_path / "cut.parquet"
    bad.write_bytes(good.read_bytes()[:-12])
    with pytest.raises(InputFileError, match=r"cut.parquet: not a valid Parquet file \(corrupt or truncated footer"):
        validate_file(bad)


@pytest.mark.parametrize(("row", "fields"), [("a,b,c", 3), ("a", 1)])
def test_a_csv_with_ragged_rows_is_one_error_naming_the_row(tmp_path: Path, row: str, fields: int) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text(f'prompt,completion\n"two\nlines",ok\n{row}\nfine,row\n', encoding="utf-8")
    with pytest.raises(InputFileError, match=rf"ragged rows: row 2 \(ending on line 4\) has {fields} fields, the "
                                             "header has 2"):
        validate_file(path)


def test_shards_with_different_schemas_are_one_error_naming_the_difference(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    write_chat_parquet(folder / "a.parquet", ["x"], score=[1])
    write_chat_parquet(folder / "b.parquet", ["y"], score=["high"])
    with pytest.raises(InputFileError, match=r"mixed schemas across shards: 'score' is Int64 in a.parquet but "
                                             "String in b.parquet"):
        validate_file(folder)


def test_a_bad_input_publishes_nothing_and_keeps_the_previous_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = CurationSpec(steps=["validate"])
    run_pipeline(spec, write_chat_parquet(tmp_path / "good.parquet", ["a"]), out)
    before = published_outputs(out)
    folder = tmp_path / "mixed"
    write_chat_parquet(folder / "a.parquet", ["x"])
    write_chat_parquet(folder / "b.parquet", ["y"], extra=[1])
    with pytest.raises(InputFileError, match="mixed schemas"):
        run_pipeline(spec, folder, out)
    assert published_outputs(out) == before


# -- Parquet outputs -------------------------------------------------------------------------------

def test_parquet_outputs_have_the_documented_schema_and_replace_jsonl(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    pl.DataFrame({"messages": [chat("a"), chat("b", None), chat("c")], "topic": ["x", "y", None]}).write_parquet(source)
    out = tmp_path / "out"
    run_pipeline(CurationSpec(steps=["validate"]), source, out)
    assert (out / "curated.jsonl").is_file()
    report = run_pipeline(CurationSpec(steps=["validate"], output_format="parquet"), source, out)
    assert report.records_out == 2
    files = published_outputs(out)
    assert {"curated.parquet", "rejected.parquet"} <= set(files) and "curated.jsonl" not in files
    assert not (out / "curated.jsonl").exists() and not (out / "rejected.jsonl").exists()
    curated = pl.read_parquet(out / "curated.parquet")
    assert curated.schema["id"] == pl.String
    assert curated.schema["messages"] == pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
    assert curated["topic"].to_list() == ["x", None]
    rejects = pl.read_parquet(out / "rejected.parquet")
    assert rejects.columns == ["id", "step", "reason", "message", "details", "record", "raw", "raw_truncated",
                               "raw_bytes_replaced"]
    row = rejects.row(0, named=True)
    assert (row["reason"], orjson.loads(row["details"])["row"]) == ("no_assistant_turn", 2)
    assert orjson.loads((out / MANIFEST).read_bytes())["files"].keys() >= {"curated.parquet", "rejected.parquet"}


def test_an_empty_curated_set_is_still_a_readable_parquet_file(tmp_path: Path) -> None:
    source = tmp_path / "none.csv"
    source.write_text("prompt,completion\n,an answer without a prompt\n", encoding="utf-8")
    out = tmp_path / "out"
    run_pipeline(CurationSpec(steps=["validate"], output_format="parquet"), source, out)
    assert pl.read_parquet(out / "curated.parquet").height == 0
    assert pl.read_parquet(out / "rejected.parquet")["reason"].to_list() == ["missing_field"]
