"""LoRA fine-tuning: the model registry, formatting and tokenisation, the trainer, adapters, checkpoints.

`finetune(spec, data, out, on_event=..., should_stop=...)` is the library call the CLI and the service
use; heavy libraries (torch, transformers, peft) load only when it runs.
"""

from assay.training.trainer import FineTuneError, FineTuneRun, TrainingDiverged, finetune

__all__ = ["FineTuneError", "FineTuneRun", "TrainingDiverged", "finetune"]
