"""Hostile and damaged input: records nested too deep, truncated and corrupt archives.

Each must end as a per-record rejection or one clear file error, in bounded time and memory.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.curation.validate import InputFileError, Validator, validate_file
from assay.schemas.errors import ErrorCode
from assay.schemas.validation import ValidateConfig

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def nested(depth: int) -> object:
    """A value `depth` containers deep, alternating arrays and objects."""
    value: object = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def with_extra(depth: int) -> dict:
    """A valid chat record whose extra field makes the record `depth` levels deep in all."""
    return {**CHAT, "meta": nested(depth - 1)} if depth > 1 else dict(CHAT)


def keep_and_count(path: Path, config: ValidateConfig) -> tuple[list, list, object, object]:
    validator = Validator(path, config)
    valid, rejected = [], []
    for good, bad in validator.batches(3):
        valid += good
        rejected += bad
    return valid, rejected, validator.summary, validate_file(path, config)


# -- nesting depth ----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_records_nested_deeper_than_the_limit_are_rejected_as_too_deep(tmp_path: Path, suffix: str) -> None:
    records = [with_extra(256), with_extra(257), CHAT, {"messages": nested(300)}, [nested(300)]]
    path = tmp_path / f"deep{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(records))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    valid, rejected, kept, counted = keep_and_count(path, ValidateConfig())
    assert len(valid) == 2 and [r.error.record for r in rejected] == [2, 4, 5]
    assert {r.error.code for r in rejected} == {ErrorCode.too_deep}
    assert "256 levels" in rejected[0].error.message
    assert counted.errors_by_code == kept.errors_by_code == {"too_deep": 3}  # both paths agree
    assert all(json.loads(json.dumps(r.to_json()))["reason"] == "too_deep" for r in rejected)


def test_the_depth_limit_is_a_setting(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(with_extra(d)) + "\n" for d in (4, 5, 6)))
    _, rejected, _, counted = keep_and_count(path, ValidateConfig(max_depth=5))
    assert [r.error.record for r in rejected] == [3] and counted.rejected == 1
    with pytest.raises(ValueError):
        ValidateConfig(max_depth=5000)  # past Python's recursion limit, later steps could not walk them


def test_lines_deeper_than_the_parsers_own_limits_are_too_deep_not_a_crash(tmp_path: Path) -> None:
    # msgspec (the counting path) stops at Python's recursion limit, orjson at 1024 levels.
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(CHAT) + "\n" + json.dumps(CHAT)[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}\n"
                    + "[" * 100_000 + "]" * 100_000 + "\n")
    _, rejected, kept, counted = keep_and_count(path, ValidateConfig())
    assert [r.error.code for r in rejected] == [ErrorCode.too_deep] * 2
    assert counted.errors_by_code == kept.errors_by_code == {"too_deep": 2}


def test_the_counting_fast_path_survives_a_line_deeper_than_pythons_recursion_limit(tmp_path: Path) -> None:
    # The typed fast path takes over after format detection, from the next block on (small blocks here).
    path = tmp_path / "d.jsonl"
    deep = json.dumps(CHAT)[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"
    path.write_text((json.dumps(CHAT) + "\n") * 150 + deep + "\n")
    summary = validate_file(path, block_bytes=256)
    assert summary.errors_by_code == {"too_deep": 1} and summary.valid == 150


# The command line, reporting its own peak memory (VmHWM counts only this program: the rusage of a child
# also counts the parent it was forked from, a whole test session here).
MEASURED_CLI = """
import runpy, sys
sys.argv = ["assay", *sys.argv[1:]]
try:
    runpy.run_module("assay.api.cli", run_name="__main__")
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print("PEAK_KB", peak.split()[1], file=sys.stderr)
"""


def test_a_100000_deep_json_array_is_rejected_in_bounded_time_and_memory(tmp_path: Path) -> None:
    # 600 KB that took 38 s and 10.5 GB when ijson built items with prefixes growing with the depth.
    path = tmp_path / "bomb.json"
    path.write_bytes(b"[" + json.dumps(CHAT).encode() + b", " + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"]")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", MEASURED_CLI, "validate", str(path), "--json"],
                            capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    assert result.returncode == 1, result.stderr[-800:]
    summary = json.loads(result.stdout)
    assert summary["valid"] == 1 and summary["errors_by_code"] == {"too_deep": 1}
    peak_mb = int(result.stderr.split("PEAK_KB")[1].split()[0]) / 1024
    assert seconds < 20, seconds  # about 2 s on a busy machine, most of it starting Python
    assert peak_mb < 400, peak_mb  # about 40 MB


# -- damaged archives ---------------------------------------------------------------------------------

def test_a_truncated_gzip_file_is_one_read_error_naming_the_file_and_the_byte(tmp_path: Path) -> None:
    whole = gzip.compress(b"".join(json.dumps({**CHAT, "id": i}).encode() + b"\n" for i in range(5000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    for read in (lambda: validate_file(path), lambda: list(Validator(path).batches())):
        with pytest.raises(InputFileError) as caught:
            read()
        message = str(caught.value)
        assert str(path) in message and "truncated" in message
        assert f"byte {len(whole) // 2:,}" in message, message


def test_corrupt_gzip_data_is_one_read_error(tmp_path: Path) -> None:
    whole = bytearray(gzip.compress(json.dumps([{**CHAT, "id": i} for i in range(3000)]).encode()))
    whole[len(whole) // 2: len(whole) // 2 + 50] = b"\x00" * 50
    path = tmp_path / "bad.json.gz"
    path.write_bytes(bytes(whole))
    with pytest.raises(InputFileError, match=r"bad\.json\.gz: (read error at byte|invalid JSON)"):
        validate_file(path)


def test_a_truncated_json_array_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text(json.dumps([CHAT] * 3)[:-20])
    with pytest.raises(InputFileError, match=r"cut\.json: invalid JSON after record 2: .*premature EOF"):
        validate_file(path)


# -- the depth bound agrees with measuring ------------------------------------------------------------

text = st.text(alphabet=st.sampled_from("ab[]{}\"\\ é"), max_size=12)


@st.composite
def deep_records(draw: st.DrawFn) -> dict:
    record = {"messages": [{"role": draw(st.sampled_from(["user", "assistant"])), "content": "x" + draw(text)},
                           {"role": "assistant", "content": draw(text) + "y"}]}
    for _ in range(draw(st.integers(0, 2))):
        record[draw(st.sampled_from(["meta", "tags", "k"]))] = nested(draw(st.integers(0, 9)))
    if draw(st.booleans()):
        record["messages"][0]["extra"] = nested(draw(st.integers(0, 9)))
    return record


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(deep_records(), min_size=1, max_size=8), compact=st.booleans())
def test_counting_and_keeping_agree_with_the_measured_depth(tmp_path: Path, records: list[dict], compact: bool) -> None:
    path = tmp_path / "p.jsonl"
    separators = (",", ":") if compact else (", ", ": ")
    path.write_text("".join(json.dumps(r, separators=separators) + "\n" for r in records))
    config = ValidateConfig(max_depth=6)
    _, rejected, kept, counted = keep_and_count(path, config)
    expected = [i + 1 for i, r in enumerate(records) if depth(r) > 6]
    assert [r.error.record for r in rejected] == expected
    assert counted.errors_by_code == kept.errors_by_code
    assert counted.valid == kept.valid == len(records) - len(expected)
