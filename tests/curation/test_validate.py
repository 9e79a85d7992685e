"""The streaming validator: formats, error codes, warnings, containers and the real files in the wild."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest

from assay.curation.validate import InputFileError, Validator, validate_file
from assay.schemas.errors import ErrorCode
from assay.schemas.records import RecordFormat
from assay.schemas.validation import ValidateConfig

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_lines(tmp_path: Path, lines: list[str | bytes], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def run(path: Path, **config: object) -> tuple[list[dict], list, object]:
    validator = Validator(path, ValidateConfig(**config))  # type: ignore[arg-type]
    valid, rejected = [], []
    for good, bad in validator.batches(7):
        valid += good
        rejected += bad
    return valid, rejected, validator.summary


def only_error(path: Path, **config: object):
    _, rejected, _ = run(path, **config)
    assert len(rejected) == 1, [r.error for r in rejected]
    return rejected[0].error


# -- formats -----------------------------------------------------------------------------------------

def test_chat_records_are_kept_with_their_extra_fields(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [json.dumps({**CHAT, "id": "a1", "category": "greeting", "meta": {"x": 1}})])
    valid, rejected, summary = run(path)
    assert not rejected and summary.format is RecordFormat.chat and summary.format_detected
    assert valid == [{"id": "a1", **CHAT, "category": "greeting", "meta": {"x": 1}}]


def test_instruction_records_become_user_and_assistant_turns(tmp_path: Path) -> None:
    rec = {"instruction": "Add", "input": "2 and 3", "output": "5", "system": "Be brief.", "source": "x"}
    valid, _, summary = run(write_lines(tmp_path, [json.dumps(rec)]))
    assert summary.format is RecordFormat.instruction
    assert valid[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    assert valid[0]["source"] == "x" and valid[0]["id"] == "data-L1"


def test_self_instruct_instances_become_turn_pairs(tmp_path: Path) -> None:
    rec = {"id": "t0", "instruction": "Antonym?", "instances": [{"input": "hot", "output": "cold"},
                                                                   {"input": "up", "output": "down"}]}
    valid, _, _ = run(write_lines(tmp_path, [json.dumps(rec)]))
    roles = [m["role"] for m in valid[0]["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert valid[0]["messages"][3]["content"] == "down"


def test_prompt_completion_and_text_formats_normalise(tmp_path: Path) -> None:
    valid, _, summary = run(write_lines(tmp_path, [json.dumps({"prompt": "Q", "completion": "A"})]))
    assert summary.format is RecordFormat.prompt_completion
    assert [m["role"] for m in valid[0]["messages"]] == ["user", "assistant"]
    valid, _, summary = run(write_lines(tmp_path, [json.dumps({"text": "plain"})], "t.jsonl"))
    assert summary.format is RecordFormat.text
    assert valid[0]["messages"] == [{"role": "assistant", "content": "plain"}]


def test_multipart_content_is_accepted(tmp_path: Path) -> None:
    rec = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"},
                                                     {"type": "image_url", "value": "a.jpg"}]},
                        {"role": "assistant", "content": "A cat."}]}
    valid, rejected, _ = run(write_lines(tmp_path, [json.dumps(rec)]))
    assert not rejected and valid[0]["messages"][0]["content"][1]["value"] == "a.jpg"


def test_a_file_with_no_responses_is_a_prompt_set(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [json.dumps({"instruction": f"Q{i}", "category": "c"}) for i in range(5)])
    valid, rejected, summary = run(path)
    assert not rejected and summary.prompt_only and "prompt-only" in summary.format_note
    assert valid[0]["messages"] == [{"role": "user", "content": "Q0"}]


def test_missing_output_is_an_error_when_other_records_have_one(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [json.dumps({"instruction": "Q", "output": "A"}), json.dumps({"instruction": "Q2"})])
    error = only_error(path)
    assert (error.code, error.field, error.line) == (ErrorCode.missing_field, "output", 2)


# -- error codes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "code", "field"),
    [
        ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}', ErrorCode.invalid_json, None),
        ("[1, 2]", ErrorCode.not_an_object, None),
        ('"just a string"', ErrorCode.not_an_object, None),
        ('{"foo": 1}', ErrorCode.unknown_format, None),
        ('{"messages": "hello"}', ErrorCode.wrong_type, "messages"),
        ('{"messages": [{"content": "x"}]}', ErrorCode.missing_field, "messages[0].role"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', ErrorCode.invalid_role, "messages[0].role"),
        ('{"messages": [{"role": "user", "content": 5}]}', ErrorCode.wrong_type, "messages[0].content"),
        ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}',
         ErrorCode.empty_content, "messages[1].content"),
        ('{"messages": [{"role": "user", "content": "x"}]}', ErrorCode.no_assistant_turn, "messages"),
        ('{"messages": [], "id": "z"}', ErrorCode.empty_content, "messages"),
        ('{"id": {"a": 1}, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}',
         ErrorCode.wrong_type, "id"),
    ],
)
def test_each_error_code_names_line_field_and_reason(tmp_path: Path, line: str, code: ErrorCode, field: str | None) -> None:
    path = write_lines(tmp_path, [json.dumps(CHAT), line])
    error = only_error(path)
    assert error.code is code
    assert error.field == field
    assert error.line == 2 and error.record == 2
    assert error.message


def test_json_syntax_errors_carry_the_column(tmp_path: Path) -> None:
    error = only_error(write_lines(tmp_path, [json.dumps(CHAT), '{"messages": [}']))
    assert error.code is ErrorCode.invalid_json and error.column == 15


def test_invalid_utf8_is_reported_with_its_byte_position(tmp_path: Path) -> None:
    bad = b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'
    error = only_error(write_lines(tmp_path, [json.dumps(CHAT), bad]))
    assert error.code is ErrorCode.invalid_utf8 and error.column == bad.index(b"\xe9") + 1


def test_lines_over_the_size_limit_are_rejected_without_reading_them_whole(tmp_path: Path) -> None:
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 5000}, {"role": "assistant", "content": "y"}]})
    path = write_lines(tmp_path, [json.dumps(CHAT), big, json.dumps(CHAT)])
    valid, rejected, summary = run(path, max_line_bytes=1000)
    assert [r.error.code for r in rejected] == [ErrorCode.line_too_long]
    assert rejected[0].raw.line == 2 and len(rejected[0].raw.data) == 1000
    assert len(valid) == 2 and summary.records_read == 3


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [json.dumps({**CHAT, "id": 7}), json.dumps({**CHAT, "id": "7"})])
    error = only_error(path)
    assert error.code is ErrorCode.duplicate_id and error.line == 2


def test_records_of_another_format_are_rejected_not_guessed(tmp_path: Path) -> None:
    lines = [json.dumps(CHAT)] * 3 + [json.dumps({"prompt": "a", "completion": "b"})]
    path = write_lines(tmp_path, lines)
    error = only_error(path, detect_records=2)
    assert error.code is ErrorCode.format_mismatch and "prompt_completion" in error.message


def test_mixed_formats_among_the_first_records_are_one_file_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [json.dumps(CHAT), json.dumps({"prompt": "a", "completion": "b"})])
    with pytest.raises(InputFileError, match="mixed record formats.*chat 1.*prompt_completion 1"):
        run(path)


def test_an_explicit_format_rejects_records_of_other_formats(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [json.dumps(CHAT), json.dumps({"prompt": "a", "completion": "b"})])
    valid, rejected, summary = run(path, format=RecordFormat.chat)
    assert len(valid) == 1 and rejected[0].error.code is ErrorCode.format_mismatch
    assert not summary.format_detected


# -- warnings and containers ----------------------------------------------------------------------------

def test_blank_lines_bom_and_crlf_are_warnings_not_errors(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(CHAT).encode() + b"\r\n\r\n  \n" + json.dumps(CHAT).encode() + b"\r\n")
    valid, rejected, summary = run(path)
    assert len(valid) == 2 and not rejected
    assert summary.warnings == {"bom": 1, "crlf": 3, "blank_line": 2}
    assert summary.valid + summary.rejected + summary.blank == summary.lines_read == 4


def test_gzip_and_json_array_files_are_read(tmp_path: Path) -> None:
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wb") as f:
        f.write((json.dumps(CHAT) + "\n").encode() * 3)
    assert run(gz)[2].valid == 3
    arr = tmp_path / "d.json"
    arr.write_text(json.dumps([CHAT, {"messages": "x"}, CHAT], indent=2))
    valid, rejected, summary = run(arr)
    assert len(valid) == 2 and rejected[0].error.record == 2 and rejected[0].error.line is None
    assert valid[0]["id"] == "d-1"


def test_a_pretty_printed_array_in_a_jsonl_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps([CHAT, CHAT], indent=4))
    with pytest.raises(InputFileError, match="pretty-printed JSON array.*rename it to .json"):
        run(path)


def test_an_unreadable_file_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        run(tmp_path / "missing.jsonl")
    with pytest.raises(InputFileError, match="is a directory"):
        run(tmp_path)


def test_rejects_keep_the_raw_line_and_the_reason(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [json.dumps(CHAT), "not json at all"])
    entries = []
    summary = validate_file(path, rejects=lambda r: entries.append(orjson.loads(orjson.dumps(r.to_json()))))
    assert summary.rejected == 1
    assert entries[0]["raw"] == "not json at all"
    assert entries[0]["reason"] == "invalid_json" and entries[0]["details"]["line"] == 2


# -- the real files -------------------------------------------------------------------------------------

def test_the_real_pretty_printed_jsonl_gets_one_error(external_data: Path) -> None:
    path = external_data / "instructions/malformed_in_the_wild/datajuicer_demo-dataset_json-array-in-.jsonl"
    with pytest.raises(InputFileError, match="pretty-printed JSON array"):
        validate_file(path)


def test_the_real_file_with_a_trailing_blank_line_validates_with_a_warning(external_data: Path) -> None:
    path = external_data / "instructions/malformed_in_the_wild/llamafactory_v1_multimodal_demo_blank-line.jsonl"
    summary = validate_file(path)
    assert summary.rejected == 0 and summary.valid > 0 and summary.warnings == {"blank_line": 1}


@pytest.mark.parametrize("name", ["autoj_scenario_traindata.jsonl", "llamafactory_alpaca_en_demo.json",
                                  "selfinstruct_seed_tasks.jsonl", "selfinstruct_user_oriented_instructions.jsonl"])
def test_the_shared_instruction_datasets_validate_cleanly(external_data: Path, name: str) -> None:
    summary = validate_file(external_data / "instructions" / name)
    assert summary.rejected == 0 and summary.valid > 100, summary.first_errors[:3]


def test_generated_ids_never_collide_with_given_ones(tmp_path: Path) -> None:
    path = write_lines(tmp_path, [json.dumps({**CHAT, "id": "data-L2"}), json.dumps(CHAT),
                                  json.dumps({**CHAT, "id": "data-L4"}), json.dumps(CHAT)], "data.jsonl")
    valid, rejected, _ = run(path)
    assert [r["id"] for r in valid] == ["data-L2", "data-L2~2", "data-L4", "data-L4~2"]
    later = write_lines(tmp_path, [json.dumps(CHAT), json.dumps({**CHAT, "id": "late-L1"})], "late.jsonl")
    valid, rejected, _ = run(later)
    assert [r["id"] for r in valid] == ["late-L1"]
    assert rejected[0].error.code is ErrorCode.duplicate_id and rejected[0].error.line == 2
