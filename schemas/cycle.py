"""Retrain-and-evaluate cycles: the cycle definition (YAML), its gate, schedule and triggers, and the gate's
decision. A cycle collects new data, curates it, trains a challenger, evaluates it against the champion on the
same items and promotes it only when the gate passes (docs/cycles.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assay.schemas.curation import CurationSpec
from assay.schemas.evaluation import JudgeSpec, TaskSpec, parse_task_strings
from assay.schemas.server import ServerPath
from assay.schemas.training import FineTuneSpec

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
Direction = Literal["higher", "lower"]


class CycleError(ValueError):
    """A cycle definition or a cycle operation that cannot work; the message names the problem."""


class DataSource(BaseModel):
    """Where new data arrives: JSONL files matching a folder or glob, or files uploaded to the service."""

    model_config = ConfigDict(extra="forbid")

    path: ServerPath | None = Field(
        None, description="A folder (every *.jsonl / *.jsonl.gz in it, recursively) or a glob of JSONL files. "
                          "Relative paths are relative to the cycle file.")
    file_ids: list[str] = Field(default_factory=list, description="Files uploaded to the service (/v1/files).")

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if (self.path is None) == (not self.file_ids):
            raise ValueError("give exactly one of `path` (a folder or glob of JSONL files) or `file_ids`")
        return self


class TrainingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["from_base", "continue"] = Field(
        "from_base", description="from_base: a fresh LoRA on the whole accumulated curated corpus; continue: the "
                                 "champion's adapter trained further on the new curated records only.")
    spec: FineTuneSpec = Field(default_factory=FineTuneSpec, description="The fine-tune spec; `model` is the base.")


class EvaluationSettings(BaseModel):
    """Challenger and champion are scored on the same items (and the base model alongside, for reference)."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskSpec] = Field(min_length=1, description="Benchmark tasks, `FORMAT:PATH` strings or mappings. "
                                                            "Relative paths are relative to the cycle file.")
    limit: int | None = Field(None, gt=0, description="A seeded sample of this many items per task.")
    batch_size: int = Field(8, gt=0)
    seed: int = Field(1234, description="Seed of the item sample and the bootstrap.")
    bootstrap_samples: int = Field(10_000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    judge: JudgeSpec | None = Field(None, description="Also judge challenger against champion (pairwise rubric).")

    @field_validator("tasks", mode="before")
    @classmethod
    def _parse_task_strings(cls, tasks: Any) -> Any:
        return parse_task_strings(tasks)


class MetricRule(BaseModel):
    """The challenger must improve on the champion in this metric."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="The task's name in the evaluation report (its format, e.g. `ppl`, or its name).")
    metric: str = Field(description="The metric key: loss, perplexity, acc, acc_norm, `exact_match,strict-match`, ...")
    direction: Direction = Field(description="higher or lower is better.")
    min_improvement: float = Field(0.0, ge=0, description="Smallest improvement (metric units) that counts.")
    require_significant: bool = Field(
        False, description="Also require the paired bootstrap interval to exclude no difference (verdict better).")


class RegressionLimit(BaseModel):
    """Another metric may get worse by at most this much."""

    model_config = ConfigDict(extra="forbid")

    task: str
    metric: str
    direction: Direction
    max_regression: float = Field(0.0, ge=0, description="Largest allowed worsening, in metric units.")


class GateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: list[MetricRule] = Field(min_length=1, description="Every one must pass.")
    regressions: list[RegressionLimit] = Field(default_factory=list)
    min_judge_win_rate: float | None = Field(
        None, ge=0, le=1, description="The challenger's tie-adjusted win rate against the champion (needs "
                                      "evaluation.judge).")


class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: list[str] = Field(default_factory=list, description="Cron expressions (UTC), e.g. '0 3 * * *'.")
    missed: Literal["run_once", "skip"] = Field(
        "run_once", description="A tick missed while the server was down: run once on start, or skip it.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, values: list[str]) -> list[str]:
        from croniter import croniter

        for value in values:
            if not croniter.is_valid(value):
                raise ValueError(f"not a valid cron expression: {value!r}")
        return values


class DriftTrigger(BaseModel):
    """Run when the champion's loss or perplexity on the new records is above a threshold."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal["loss", "perplexity"] = "perplexity"
    threshold: float = Field(gt=0, description="Run when the champion's value on fresh data exceeds this.")
    limit: int = Field(100, gt=0, description="New records scored (a seeded sample).")


class TriggerSpec(BaseModel):
    """When a run goes ahead; with no trigger set every run does. With both, either suffices."""

    model_config = ConfigDict(extra="forbid")

    min_new_records: int = Field(1, ge=0, description="At least this many new records since the last run.")
    drift: DriftTrigger | None = None


class CycleConfig(BaseModel):
    """One retrain-and-evaluate cycle, loadable from YAML; unknown keys are errors naming the key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Lowercase letters, digits, '.', '_', '-'; names the cycle and its models.")
    description: str = ""
    data: DataSource
    curation: CurationSpec = Field(default_factory=lambda: CurationSpec.model_validate({"steps": ["validate", "dedup"]}),
                                   description="Curation of the new records; dedup runs against everything "
                                               "trained on before and decontaminates against the tasks.")
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    evaluation: EvaluationSettings
    gate: GateSpec
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    triggers: TriggerSpec = Field(default_factory=TriggerSpec)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CycleConfig:
        if "dedup" not in self.curation.steps:
            raise ValueError("curation.steps must include dedup: new data is deduplicated against everything "
                             "trained on before")
        if self.gate.min_judge_win_rate is not None and self.evaluation.judge is None:
            raise ValueError("gate.min_judge_win_rate needs evaluation.judge")
        return self

    def resolved(self, folder: Path) -> CycleConfig:
        """Relative data and task paths made absolute against `folder`."""
        def absolute(value: str) -> str:
            return value if Path(value).is_absolute() else str((folder / value).resolve())

        copy = self.model_copy(deep=True)
        if copy.data.path is not None:
            copy.data.path = absolute(copy.data.path)
        for task in copy.evaluation.tasks:
            if task.path is not None:
                task.path = absolute(task.path)
        return copy


# --- the gate's decision ---------------------------------------------------------------------------------


class RuleResult(BaseModel):
    rule: str = Field(description="What the rule asks, in words.")
    kind: Literal["metric", "regression", "judge"]
    value: float | None = Field(None, description="The measured value (improvement, worsening or win rate).")
    threshold: float | None = None
    passed: bool
    detail: str = ""


class GateDecision(BaseModel):
    passed: bool
    rules: list[RuleResult]
    reason: str = Field(description="One line: why the challenger was promoted or kept out.")
