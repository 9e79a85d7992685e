"""Fine-tuning contracts: the spec (YAML), the events a run emits, and the training report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assay.schemas.models import ModelRef


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, gt=0, description="Rank of the LoRA update matrices.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description="'all-linear' (every linear projection except the output head) or module "
                                  "names, e.g. [q_proj, v_proj] for attention only.")

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or any(not str(v).strip() for v in value)):
            raise ValueError("give 'all-linear' or a non-empty list of module names")
        return value


class FineTuneSpec(BaseModel):
    """Loadable from YAML; every parameter has a default; unknown keys are errors naming the key."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("smollm2-135m-instruct", description="Registry name, local HF folder, .gguf file or hub id.")
    epochs: int = Field(3, ge=1, description="Passes over the training set (ignored when max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps to run; overrides epochs.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, le=0.5, description="Share of the steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this; null: no clipping.")
    batch_size: int = Field(8, gt=0, description="Examples per micro-batch (with packing too).")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    max_seq_len: int = Field(1024, ge=8, description="Tokens per example; longer ones are truncated and counted.")
    packing: bool = Field(False, description="Concatenate a micro-batch's examples into rows of up to max_seq_len "
                                             "tokens (no padding; attention stays within each example).")
    group_by_length: bool = Field(True, description="Batch examples of similar length together (less padding).")
    val_split: float = Field(0.1, ge=0, lt=1, description="Share held out for validation when no file is given.")
    eval_every: int | None = Field(None, gt=0, description="Validate every N steps (default: 5 times per run).")
    eval_before_training: bool = Field(True, description="Measure the validation loss of the base model first.")
    save_every: int | None = Field(None, gt=0, description="Checkpoint every N steps (default: at every validation).")
    keep_checkpoints: int = Field(2, ge=1, description="How many of the latest checkpoints to keep.")
    log_every: int = Field(1, gt=0, description="Emit a training event every N steps.")
    seed: int = Field(42, description="Seeds LoRA initialisation, the split, the batch order and dropout.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on CUDA when supported, else fp16 on CUDA, fp32 on CPU.")
    quantization: Literal["none", "4bit"] = Field("none", description="4bit: QLoRA through bitsandbytes (CUDA only).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward (less memory).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    chat_template: str | None = Field(None, description="Jinja chat template replacing the tokenizer's own.")
    merge: bool = Field(False, description="Also write the base model with the adapter merged in (merged/).")
    init_adapter: str | None = Field(
        None, description="Start from this LoRA adapter (a folder with adapter_model.safetensors, trained on the "
                          "same base with the same rank and target modules) instead of a fresh one.")

    @model_validator(mode="after")
    def _quantization_needs_cuda(self) -> FineTuneSpec:
        if self.quantization == "4bit" and self.device == "cpu":
            raise ValueError("quantization 4bit needs device cuda (or auto on a CUDA machine)")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> FineTuneSpec:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the spec must be a YAML mapping, got {type(data).__name__}")
        return cls.model_validate(data)

    def effective_batch_size(self) -> int:
        return self.batch_size * self.grad_accum


EventType = Literal["status", "train", "eval", "checkpoint"]
RunStatus = Literal["started", "resumed", "completed", "stopped", "failed"]


class TrainingEvent(BaseModel):
    """One line of events.jsonl (also what `on_event` receives). Flat, with only the fields that apply."""

    type: EventType
    time: float = Field(description="Unix time.")
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    status: RunStatus | None = None
    message: str | None = None
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens: int | None = Field(None, description="Tokens processed so far (cumulative, without padding).")
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    valid_loss: float | None = None
    valid_ppl: float | None = None
    path: str | None = Field(None, description="The checkpoint folder (checkpoint events).")

    def to_json(self) -> dict[str, Any]:
        """The fields that apply; a non-finite number (a diverged loss) is left out: JSON has no NaN."""
        return {k: v for k, v in self.model_dump(exclude_none=True).items()
                if not (isinstance(v, float) and not math.isfinite(v))}


class SplitStats(BaseModel):
    examples: int = 0
    tokens: int = Field(0, description="Tokens in the examples (after truncation).")
    target_tokens: int = Field(0, description="Tokens the loss is computed on (assistant turns and their end).")
    masked_share: float = Field(0.0, description="Share of tokens excluded from the loss.")
    truncated: int = Field(0, description="Examples cut at max_seq_len.")
    mean_length: float = 0.0
    max_length: int = Field(0, description="Longest example before truncation.")
    dropped: dict[str, int] = Field(default_factory=dict, description="Records not trained on, per reason.")


class DataStats(BaseModel):
    path: str
    sha256: str
    format: str | None = None
    records: int = Field(0, description="Valid records read from the data file.")
    rejected: dict[str, int] = Field(default_factory=dict, description="Lines the validator rejected, per reason.")
    validation_source: Literal["split", "file", "none"] = "split"
    validation_path: str | None = None
    validation_sha256: str | None = None
    train: SplitStats = Field(default_factory=SplitStats)
    validation: SplitStats = Field(default_factory=SplitStats)
    chat_template: Literal["tokenizer", "default", "spec"] = "tokenizer"


class CurvePoint(BaseModel):
    step: int
    value: float


class TrainingReport(BaseModel):
    """What a fine-tuning run did; training_report.json, rendered as Markdown and HTML."""

    status: Literal["completed", "stopped"]
    model: ModelRef
    model_path: str
    spec: FineTuneSpec
    data: DataStats
    steps: int = 0
    total_steps: int = 0
    epochs: float = 0.0
    train_loss: list[CurvePoint] = Field(default_factory=list)
    valid_loss: list[CurvePoint] = Field(default_factory=list)
    valid_loss_before: float | None = Field(None, description="Validation loss of the base model.")
    final_valid_loss: float | None = None
    final_valid_ppl: float | None = None
    seconds: float = Field(0.0, description="Wall time of the training loop (all sessions, if resumed).")
    tokens_trained: int = 0
    tokens_per_s: float = 0.0
    peak_memory_mb: float | None = None
    memory_kind: str | None = Field(None, description="'cuda allocated' or 'process RSS'.")
    trainable_parameters: int = 0
    total_parameters: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    packing_note: str | None = None
    loss_path: Literal["selected positions", "full logits"] = "selected positions"
    resumed_from: list[int] = Field(default_factory=list, description="Steps this run was resumed at.")
    adapter_sha256: str | None = None
    outputs: dict[str, str] = Field(default_factory=dict)
    created_at: str = ""
    versions: dict[str, str] = Field(default_factory=dict)


class SweepPoint(BaseModel):
    learning_rate: float
    batch_size: int
    effective_batch_size: int
    lr_per_example: float = Field(description="learning_rate / effective batch size.")
    valid_loss: float | None = None
    train_loss: float | None = None
    seconds: float = 0.0
    output: str
    error: str | None = None


class SweepReport(BaseModel):
    model: str
    data: str
    steps: int | None = None
    points: list[SweepPoint] = Field(description="Best (lowest validation loss) first; failed points last.")
    best: SweepPoint | None = None
    best_lr_per_example: float | None = None
    spec: FineTuneSpec
    created_at: str = ""
