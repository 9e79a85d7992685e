"""Benchmark evaluation contracts: the EvalSpec (what to score) and the BenchmarkReport (what came out).

A task is written `NAME:PATH` on the command line (`arc_easy:data/arc.json`, `mc:my_quiz.jsonl`), or as a
bare lm-eval task name (`hellaswag`) when its data are reachable; in YAML/JSON either form or a mapping.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assay.schemas.judge import JudgeComparison

TaskFormat = Literal["arc_easy", "arc_challenge", "gsm8k", "logiqa-en", "sat-math", "aqua-rat", "mmlu",
                     "mc", "gen", "ppl", "lm_eval"]
FILE_FORMATS: tuple[str, ...] = ("arc_easy", "arc_challenge", "gsm8k", "logiqa-en", "sat-math", "aqua-rat", "mmlu",
                                 "mc", "gen", "ppl")
# Other spellings users reach for (lm-eval's own task names among them).
FORMAT_ALIASES: dict[str, str] = {
    "arc-easy": "arc_easy", "arc-challenge": "arc_challenge",
    "logiqa_en": "logiqa-en", "agieval_logiqa_en": "logiqa-en",
    "sat_math": "sat-math", "agieval_sat_math": "sat-math",
    "aqua_rat": "aqua-rat", "agieval_aqua_rat": "aqua-rat",
    "mmlu_csv": "mmlu",
}
Verdict = Literal["better", "worse", "no_significant_difference"]


class TaskSpec(BaseModel):
    """One benchmark task: a local file in a known format, or an lm-eval task by name."""

    model_config = ConfigDict(extra="forbid")

    format: TaskFormat = Field(description="The file's format, or `lm_eval` for a task of lm-eval's registry.")
    path: str | None = Field(None, description="The task file (required for every format but lm_eval).")
    name: str | None = Field(
        None, description="lm_eval: the registered task name. Otherwise the name shown in reports "
                          "(default: the format, plus the file's stem when two tasks would share it).")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples for this task (overrides the run's).")
    regex: str | None = Field(
        None, description="gen: a pattern whose first group is the answer; scored by exact match as `regex`.")
    stop: list[str] | None = Field(None, description="gen: strings that end a generation (default: a blank line).")
    max_gen_toks: int | None = Field(None, gt=0, description="gen/gsm8k: most tokens generated per item.")

    @model_validator(mode="after")
    def _path_or_name(self) -> TaskSpec:
        if self.format == "lm_eval":
            if not self.name:
                raise ValueError("an lm_eval task needs its registered `name`")
        elif not self.path:
            raise ValueError(f"a {self.format} task needs the `path` of its file")
        if self.regex is not None and self.format != "gen":
            raise ValueError("`regex` applies to gen tasks only")
        return self

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        """`NAME:PATH` for a file in a known format, or a bare lm-eval task name."""
        text = text.strip()
        head, sep, rest = text.partition(":")
        if not sep:
            if not text:
                raise ValueError("empty task")
            return cls(format="lm_eval", name=text)
        fmt = FORMAT_ALIASES.get(head.lower(), head.lower())
        if fmt not in FILE_FORMATS:
            raise ValueError(f"unknown task format '{head}' in '{text}'; use one of "
                             f"{', '.join(FILE_FORMATS)} as FORMAT:PATH, or a bare lm-eval task name")
        if not rest:
            raise ValueError(f"task '{text}' names no file after '{head}:'")
        return cls(format=fmt, path=rest)  # type: ignore[arg-type]

    def label(self) -> str:
        """How the task is called in reports: its name, else its format."""
        return self.name or self.format


def parse_task_strings(tasks: Any) -> Any:
    """A task list as given in YAML or JSON: `NAME:PATH` strings become TaskSpecs, mappings stay for pydantic."""
    if isinstance(tasks, list):
        return [TaskSpec.parse(t) if isinstance(t, str) else t for t in tasks]
    return tasks


class JudgeSpec(BaseModel):
    """`assay eval --judge`: base and each adapter answer the same prompts; a judge compares every pair in both
    orders (the judge engine of evaluation/judge); the comparisons join the benchmark report."""

    model_config = ConfigDict(extra="forbid")

    rubric: str = Field("pairwise", description="A pairwise rubric: a built-in name or a rubric YAML file.")
    model: str = Field(description="The judge: the model name at `url`, or (without `url`) a registered name or "
                                   "local folder run in this process.")
    url: str | None = Field(None, description="OpenAI-compatible base URL of the judge (key from "
                                              "ASSAY_JUDGE_API_KEY or OPENAI_API_KEY).")
    prompts: str | None = Field(
        None, description="Prompts to answer: JSONL of {prompt, reference?}, instruction or chat records (the "
                          "last user turn). Default: the file of the first gen or ppl task.")
    limit: int | None = Field(None, gt=0, description="Prompts judged (default: the run's limit).")
    max_new_tokens: int = Field(256, gt=0, description="Answer length limit.")
    samples: int = Field(1, gt=0, description="Judge samples per verdict.")
    concurrency: int = Field(4, gt=0, description="Judge requests in flight.")
    cache: bool = Field(True, description="Reuse cached judge replies (a re-run costs no judge calls).")


class EvalSpec(BaseModel):
    """What `assay eval` scores: one base model, its adapters, the tasks, and how."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Base model: a registered name or a local Hugging Face folder.")
    adapters: list[str] = Field(
        default_factory=list,
        description="LoRA adapters to compare with the base: folders with adapter_config.json (or a training run "
                    "holding adapter/), optionally as LABEL=PATH.")
    tasks: list[TaskSpec] = Field(min_length=1, description="Tasks, as `NAME:PATH` strings or mappings.")
    include_paths: list[str] = Field(
        default_factory=list, description="Folders of the user's own lm-eval task YAMLs, for bare task names.")
    limit: int | None = Field(None, gt=0, description="Score a seeded random sample of this many items per task.")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples (default: each format's own).")
    batch_size: int = Field(8, gt=0, description="Requests per forward pass.")
    max_gen_toks: int | None = Field(
        None, gt=0, description="Most tokens generated per item in generation tasks without their own limit "
                                "(default: the format's, 256).")
    chat_template: bool = Field(False, description="Wrap prompts in the tokenizer's chat template.")
    seed: int = Field(1234, description="Seed of the item sample, few-shot choice and bootstrap.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; auto is float32 on CPU and bfloat16 on GPUs that support it.")
    bootstrap_samples: int = Field(10_000, ge=100, description="Resamples of the paired bootstrap.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of the intervals.")
    cache: bool = Field(True, description="Reuse lm-eval's request cache: a model re-scored on the same items "
                                          "runs no forward pass.")
    cache_dir: str | None = Field(None, description="Request cache folder (default $ASSAY_HOME/eval-cache).")
    training_run: str | None = Field(
        None, description="A fine-tuning output folder (or its training JSONL): its data are checked for the "
                          "task items (contamination) and its report joins this one.")
    curation_report: str | None = Field(None, description="A curation output folder or its report.json, joined in.")
    max_examples: int = Field(5, ge=0, description="Disagreement examples shown per task, model and direction.")
    judge: JudgeSpec | None = Field(None, description="Also judge base against each adapter (needs an adapter).")
    reference: str = Field(
        "base", description="Label of the model every other model is compared with (differences, intervals, "
                            "verdicts, judge): `base`, or an adapter's label (a retrain cycle's champion).")

    @field_validator("tasks", mode="before")
    @classmethod
    def _parse_task_strings(cls, tasks: Any) -> Any:
        return parse_task_strings(tasks)

    @classmethod
    def from_yaml(cls, path: str | Path) -> EvalSpec:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the spec must be a YAML mapping, got {type(data).__name__}")
        return cls.model_validate(data)


# --- the report ------------------------------------------------------------------------------------------


class AdapterCheck(BaseModel):
    """Evidence that an adapter took part in scoring (a silently ignored adapter is a known failure)."""

    peft_model: bool = Field(description="The model lm-eval scored with is a PeftModel holding this adapter.")
    probe_max_logit_diff: float = Field(
        description="Largest |logit| difference on a probe prompt between adapter enabled and disabled.")
    applied: bool = Field(description="The adapter changes the model's output (probe difference above zero).")
    scores_differ: bool | None = Field(
        None, description="Some per-item result (log-likelihood or generation) differs from the base model's.")


class ModelRun(BaseModel):
    label: str = Field(description="`base`, or the adapter's label.")
    model: str = Field(description="The base model's folder.")
    adapter: str | None = None
    adapter_sha256: str | None = Field(None, description="Hash of the adapter's config and weights.")
    adapter_check: AdapterCheck | None = None
    requests: int = Field(0, description="lm-eval requests (log-likelihoods and generations) scored.")
    computed: int = Field(0, description="Requests that ran the model; the rest came from the request cache.")
    seconds: float = 0.0


class MetricValue(BaseModel):
    metric: str = Field(description="lm-eval metric name (acc, acc_norm, exact_match, ...), or loss/perplexity.")
    filter: str = Field("none", description="lm-eval filter (answer extraction), e.g. strict-match.")
    value: float
    stderr: float | None = None
    higher_is_better: bool = True

    @property
    def key(self) -> str:
        return self.metric if self.filter == "none" else f"{self.metric},{self.filter}"


class Comparison(BaseModel):
    """A tuned model against the base on the same items: difference, paired bootstrap interval, verdict."""

    model: str
    metric: str
    filter: str = "none"
    higher_is_better: bool = True
    base: float
    tuned: float
    difference: float = Field(description="tuned - base.")
    ci_low: float
    ci_high: float
    confidence: float = 0.95
    p_value: float = Field(description="Two-sided paired bootstrap p-value of a zero difference.")
    verdict: Verdict
    n_items: int

    @property
    def key(self) -> str:
        return self.metric if self.filter == "none" else f"{self.metric},{self.filter}"


class Disagreement(BaseModel):
    """An item the base and a tuned model score differently."""

    model: str
    item: str
    metric: str = Field(description="What the scores are: the task's headline metric, or loss per token (ppl).")
    prompt: str
    target: str
    base_answer: str
    tuned_answer: str
    base_score: float
    tuned_score: float


class Contamination(BaseModel):
    """Task items found in the training data (decontamination detectors of the curation step)."""

    training_files: list[str]
    records_checked: int
    items_found: int = Field(description="Items of the task file found in the training data.")
    items_total: int
    evaluated_found: int = Field(description="Of the found items, how many were scored in this run.")
    method: str
    examples: list[str] = Field(default_factory=list, description="Ids of some found items.")


class TaskReport(BaseModel):
    name: str
    format: str
    path: str | None = None
    file_sha256: str | None = None
    output_type: str
    primary: str = Field(description="Key (metric or metric,filter) of the headline metric.")
    items_total: int
    items_evaluated: int
    num_fewshot: int = 0
    lm_eval_task: str = Field(description="The task name given to lm-eval.")
    task_config: str | None = Field(None, description="The generated lm-eval task YAML.")
    scores: dict[str, list[MetricValue]] = Field(default_factory=dict, description="Per model label.")
    comparisons: list[Comparison] = Field(default_factory=list)
    contamination: Contamination | None = None
    disagreements: list[Disagreement] = Field(default_factory=list)

    def score(self, model: str, key: str | None = None) -> MetricValue | None:
        key = key or self.primary
        return next((m for m in self.scores.get(model, []) if m.key == key), None)


class RunMetadata(BaseModel):
    started_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    seconds: float = 0.0
    seed: int
    limit: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 8
    chat_template: bool = False
    versions: dict[str, str] = Field(default_factory=dict, description="assay, lm-eval, torch, transformers, peft.")
    cache_dir: str | None = None


class TrainingSummary(BaseModel):
    """The fine-tuning run joined into the report (read loosely from its training_report.json and events)."""

    run: str
    report: dict[str, Any] = Field(default_factory=dict, description="Headline figures of training_report.json.")
    loss_curve: list[tuple[int, float]] = Field(default_factory=list, description="(step, training loss).")
    eval_loss_curve: list[tuple[int, float]] = Field(default_factory=list, description="(step, validation loss).")


class CurationSummary(BaseModel):
    """The dataset's quality report joined into this one: what was removed, and why."""

    report: str
    input_path: str
    records_in: int
    records_out: int
    removed: dict[str, int] = Field(default_factory=dict, description="Records removed, per step/reason.")
    changed: dict[str, int] = Field(default_factory=dict, description="Records changed (e.g. PII redacted), per step.")


class BenchmarkReport(BaseModel):
    """Everything one `assay eval` produced; eval_report.md/html render this model."""

    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    spec: EvalSpec
    metadata: RunMetadata
    models: list[ModelRun]
    tasks: list[TaskReport]
    training: TrainingSummary | None = None
    curation: CurationSummary | None = None
    judge: list[JudgeComparison] = Field(default_factory=list, description="Judge comparisons, one per adapter.")
    warnings: list[str] = Field(default_factory=list)

    def task(self, name: str) -> TaskReport | None:
        return next((t for t in self.tasks if t.name == name), None)

    def comparison(self, task: str, model: str, key: str | None = None) -> Comparison | None:
        """The comparison of `model` with the base on `task`'s metric `key` (default: its primary)."""
        found = self.task(task)
        if found is None:
            return None
        key = key or found.primary
        return next((c for c in found.comparisons if c.model == model and c.key == key), None)
