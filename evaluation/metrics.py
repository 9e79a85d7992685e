"""Per-item metrics lm-eval lacks for free-form generation, registered into its metric registry.

Exact match is lm-eval's own. Containment, ROUGE-L (rouge-score) and sentence chrF (sacrebleu) score each
item alone, so that a paired bootstrap can compare two models item by item; lm-eval's `chrf` is
corpus-level and has no per-item value.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


def contains(references: list[str], predictions: list[str], **_: Any) -> float:
    """1.0 when the reference appears in the reply (case-insensitive, surrounding space ignored)."""
    return float(references[0].strip().casefold() in predictions[0].casefold())


@lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(references: list[str], predictions: list[str], **_: Any) -> float:
    """ROUGE-L F1 of the reply against the reference (longest common subsequence of words)."""
    return float(_rouge().score(references[0], predictions[0])["rougeL"].fmeasure)


@lru_cache(maxsize=1)
def _chrf() -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF()


def chrf_sentence(references: list[str], predictions: list[str], **_: Any) -> float:
    """Sentence-level chrF (character n-gram F-score, 0-1) of the reply against the reference."""
    return float(_chrf().sentence_score(predictions[0], [references[0]]).score / 100.0)


_REGISTERED = False


def register_metrics() -> None:
    """Make the metrics above known to lm-eval (idempotent); task configs name them in metric_list."""
    global _REGISTERED
    if _REGISTERED:
        return
    import lm_eval.api.metrics  # noqa: F401  (registers lm-eval's aggregations, `mean` among them)
    from lm_eval.api.registry import register_metric

    for name, fn in (("contains", contains), ("rouge_l", rouge_l), ("chrf_sentence", chrf_sentence)):
        register_metric(metric=name, higher_is_better=True, output_type="generate_until", aggregation="mean")(fn)
    _REGISTERED = True
