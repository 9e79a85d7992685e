"""Property-based checks: the validator never crashes, loses no line, and agrees with the pydantic contracts."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from assay.curation.validate import Validator, check_chat, check_instruction
from assay.schemas.records import ChatRecord, InstructionRecord
from assay.schemas.validation import ValidateConfig

VALID_LINES = [
    json.dumps({"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "hello"}], "id": "x"}),
    json.dumps({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}),
    json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "caf\u00e9 \u2603"}]},
                             {"role": "assistant", "content": "ok"}], "category": "misc"}),
]


@st.composite
def mutated_line(draw: st.DrawFn) -> bytes:
    line = bytearray(draw(st.sampled_from(VALID_LINES)).encode())
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "swap"]))
        if not line:
            break
        i = draw(st.integers(0, len(line) - 1))
        if kind == "flip":
            line[i] = draw(st.integers(0, 255))
        elif kind == "delete":
            del line[i]
        elif kind == "insert":
            line[i:i] = draw(st.sampled_from([b"\xff", b"\\", b'"', b"{", b"]", b",", b"null", b"\r", b"\xef\xbb\xbf"]))
        elif kind == "truncate":
            del line[i:]
        else:
            line = bytearray(line.replace(b'"assistant"', draw(st.sampled_from([b'"bot"', b"1", b"null", b'"user"']))))
    return bytes(line).replace(b"\n", b" ")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(mutated_line(), st.sampled_from([b"", b"   ", b"\r"])), min_size=1, max_size=30))
def test_mutated_lines_never_crash_and_every_line_is_accounted_for(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    validator = Validator(path, ValidateConfig(format=None))
    try:
        batches = list(validator.batches(4))
    except Exception as exc:  # only the documented whole-file errors may escape
        from assay.curation.reader import InputFileError

        assert isinstance(exc, InputFileError), repr(exc)
        return
    summary = validator.summary
    assert summary.valid + summary.rejected + summary.blank == summary.lines_read == len(lines)
    assert sum(len(v) for v, _ in batches) == summary.valid
    assert sum(len(r) for _, r in batches) == summary.rejected


texts = st.sampled_from(["", " ", "\n\t", "hi", " x ", "caf\u00e9"])
content = st.one_of(texts, st.integers(), st.none(),
                    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "", "image"])},
                                                   optional={"text": st.one_of(texts, st.integers())}), max_size=2))
message = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "system", "tool", "bot", 3]),
                                             "content": content, "name": texts})
chat = st.fixed_dictionaries({}, optional={"messages": st.one_of(st.lists(st.one_of(message, st.integers()), max_size=4),
                                                                 texts), "category": texts})


def contract_accepts(model: type, record: dict) -> bool:
    try:
        model.model_validate(record)
    except ValidationError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(record=chat)
def test_the_fast_chat_check_accepts_exactly_what_the_pydantic_contract_accepts(record: dict) -> None:
    assert (check_chat(record, require_assistant=True) is None) == contract_accepts(ChatRecord, record), record


instruction = st.fixed_dictionaries({}, optional={
    "instruction": st.one_of(texts, st.integers()), "input": st.one_of(texts, st.none(), st.integers()),
    "output": st.one_of(texts, st.integers()), "system": st.one_of(texts, st.integers()),
    "instances": st.lists(st.fixed_dictionaries({"output": texts}, optional={"input": texts}), max_size=2)})


@settings(max_examples=400, deadline=None)
@given(record=instruction)
def test_the_fast_instruction_check_accepts_exactly_what_the_pydantic_contract_accepts(record: dict) -> None:
    assert (check_instruction(record) is None) == contract_accepts(InstructionRecord, record), record


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(mutated_line(), min_size=1, max_size=30), block_bytes=st.sampled_from([64, 300, 1 << 22]))
def test_counting_and_keeping_reach_the_same_verdicts(tmp_path: Path, lines: list[bytes], block_bytes: int) -> None:
    # `assay validate` takes a faster path (typed decoding) than the pipeline; verdicts must not differ.
    from assay.curation.reader import InputFileError
    from assay.curation.validate import validate_file

    path = tmp_path / "same.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    try:
        counted = validate_file(path, ValidateConfig(format=None, detect_records=3), block_bytes=block_bytes)
    except InputFileError:
        return
    keeping = Validator(path, ValidateConfig(format=None, detect_records=3))
    kept_errors = [r.error for _, rejected in keeping.batches(5) for r in rejected]
    assert counted.valid == keeping.summary.valid
    assert counted.errors_by_code == keeping.summary.errors_by_code
    assert counted.first_errors == kept_errors[: len(counted.first_errors)]
    assert (counted.lines_read, counted.blank, counted.warnings) == (
        keeping.summary.lines_read, keeping.summary.blank, keeping.summary.warnings)
