"""validate.max_expanded_bytes: a small .gz cannot make the reader decompress without end."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import orjson
import pytest

from assay.curation.reader import ExpandedSizeError
from assay.curation.validate import validate_file
from assay.schemas.validation import ValidateConfig

LINE = orjson.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]})


def _bomb(path: Path, lines: int) -> Path:
    with gzip.open(path, "wb", compresslevel=9) as out:
        block = (LINE + b"\n") * 10_000
        for _ in range(lines // 10_000):
            out.write(block)
    return path


@pytest.mark.parametrize("name", ["bomb.jsonl.gz", "bomb.json.gz"])
def test_a_gzip_expanding_past_the_limit_stops_after_reading_the_limit(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".json.gz"):
        with gzip.open(path, "wb") as out:
            out.write(b"[" + b",".join([LINE] * 200_000) + b"]")
    else:
        _bomb(path, 200_000)
    tracemalloc.start()
    # The error is raised by the reader the moment the limit is passed (16 MB would follow); speed
    # belongs in bench/upload_lanes.py, not in a timed test on a shared machine.
    with pytest.raises(ExpandedSizeError, match=f"{name}: expands to more than 1000000 bytes"):
        validate_file(path, ValidateConfig(max_expanded_bytes=1_000_000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 30_000_000


def test_a_gzip_within_the_limit_validates_as_before(tmp_path: Path) -> None:
    path = _bomb(tmp_path / "ok.jsonl.gz", 20_000)
    expanded = len(gzip.decompress(path.read_bytes()))
    summary = validate_file(path, ValidateConfig(max_expanded_bytes=expanded))
    assert summary.records_read == 20_000
    with pytest.raises(ExpandedSizeError):
        validate_file(path, ValidateConfig(max_expanded_bytes=expanded - 1))
