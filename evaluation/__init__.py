"""Benchmark evaluation with lm-eval: base model and adapters on the same items, compared with intervals."""

from assay.evaluation.errors import EvalInputError, EvaluationCancelled, TaskFileError
from assay.evaluation.run import evaluate

__all__ = ["EvalInputError", "EvaluationCancelled", "TaskFileError", "evaluate"]
