"""Export the JSON Schemas of the data contracts to schemas/json/, and detect stale exports."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from assay.schemas.curation import CurationSpec
from assay.schemas.cycle import CycleConfig, GateDecision
from assay.schemas.evaluation import BenchmarkReport, EvalSpec
from assay.schemas.judge import JudgeComparison, JudgeReport, JudgeVerdict, Rubric
from assay.schemas.records import (
    CanonicalRecord,
    ChatRecord,
    InstructionRecord,
    PromptCompletionRecord,
    TextRecord,
)
from assay.schemas.report import QualityReport
from assay.schemas.training import FineTuneSpec, TrainingEvent, TrainingReport

EXPORTED: dict[str, type[BaseModel]] = {
    "chat_record": ChatRecord,
    "instruction_record": InstructionRecord,
    "prompt_completion_record": PromptCompletionRecord,
    "text_record": TextRecord,
    "canonical_record": CanonicalRecord,
    "curation_spec": CurationSpec,
    "quality_report": QualityReport,
    "finetune_spec": FineTuneSpec,
    "training_event": TrainingEvent,
    "training_report": TrainingReport,
    "eval_spec": EvalSpec,
    "benchmark_report": BenchmarkReport,
    "rubric": Rubric,
    "judge_verdict": JudgeVerdict,
    "judge_report": JudgeReport,
    "judge_comparison": JudgeComparison,
    "cycle_config": CycleConfig,
    "gate_decision": GateDecision,
}


def render_schema(model: type[BaseModel]) -> str:
    schema = model.model_json_schema(by_alias=True)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in EXPORTED.items():
        path = folder / f"{name}.json"
        path.write_text(render_schema(model), encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(folder: Path) -> list[str]:
    """Names of exported files that are missing or differ from what the models produce now."""
    stale = []
    for name, model in EXPORTED.items():
        path = folder / f"{name}.json"
        if not path.exists() or path.read_text(encoding="utf-8") != render_schema(model):
            stale.append(path.name)
    return stale
