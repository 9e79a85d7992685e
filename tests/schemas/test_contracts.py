"""The pydantic contracts: formats, pass-through of extra fields, the spec, and the exported JSON Schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from assay.schemas.curation import CurationSpec
from assay.schemas.export import EXPORTED, export_schemas, stale_schemas
from assay.schemas.records import (
    CanonicalRecord,
    ChatRecord,
    InstructionRecord,
    PromptCompletionRecord,
    TextRecord,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "json"


def test_extra_fields_are_kept() -> None:
    rec = ChatRecord.model_validate({"messages": [{"role": "assistant", "content": "x", "weight": 0}],
                                     "category": "c", "meta": {"k": [1]}})
    dumped = rec.model_dump(exclude_none=True)
    assert dumped["category"] == "c" and dumped["meta"] == {"k": [1]} and dumped["messages"][0]["weight"] == 0


@pytest.mark.parametrize(("model", "record"), [
    (ChatRecord, {"messages": [{"role": "robot", "content": "x"}]}),
    (ChatRecord, {"messages": [{"role": "user", "content": "x"}]}),
    (InstructionRecord, {"instruction": "x"}),
    (InstructionRecord, {"instruction": " ", "output": "y"}),
    (PromptCompletionRecord, {"prompt": "x", "completion": 3}),
    (TextRecord, {"text": ""}),
    (CanonicalRecord, {"messages": [{"role": "user", "content": "x"}]}),
])
def test_invalid_records_fail_their_contract(model: type, record: dict) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(record)


def test_the_spec_rejects_unknown_keys_by_name(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("steps: [validate]\nvalidate:\n  max_line_bytes: 10\n  colour: blue\n")
    with pytest.raises(ValidationError, match="colour"):
        CurationSpec.from_yaml(path)


def test_the_spec_always_starts_with_validation() -> None:
    assert CurationSpec(steps=["pii"]).steps == ["validate", "pii"]
    assert CurationSpec().steps[0] == "validate"


def test_export_writes_one_schema_per_contract(tmp_path: Path) -> None:
    written = export_schemas(tmp_path)
    assert sorted(p.stem for p in written) == sorted(EXPORTED)
    assert stale_schemas(tmp_path) == []
    (tmp_path / "chat_record.json").write_text("{}")
    assert stale_schemas(tmp_path) == ["chat_record.json"]


def test_the_committed_json_schemas_are_up_to_date() -> None:
    stale = stale_schemas(SCHEMA_DIR)
    assert not stale, f"run `assay schemas export`: out of date: {stale}"


def test_the_finetune_spec_loads_from_yaml_and_names_unknown_keys(tmp_path: Path) -> None:
    from assay.schemas.training import FineTuneSpec

    path = tmp_path / "finetune.yaml"
    path.write_text("model: tiny\nlearning_rate: 1.0e-3\nlora:\n  r: 8\n  target_modules: [q_proj, v_proj]\n")
    spec = FineTuneSpec.from_yaml(path)
    assert spec.model == "tiny" and spec.lora.r == 8 and spec.lora.alpha == 32 and spec.lora.dropout == 0.05
    assert spec.lora.target_modules == ["q_proj", "v_proj"]
    assert FineTuneSpec().lora.target_modules == "all-linear" and FineTuneSpec().model == "smollm2-135m-instruct"
    path.write_text("lora:\n  rank: 8\n")
    with pytest.raises(ValidationError, match="rank"):
        FineTuneSpec.from_yaml(path)
    with pytest.raises(ValidationError, match="cuda"):
        FineTuneSpec(quantization="4bit", device="cpu")
