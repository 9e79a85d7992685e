"""`assay eval --judge`: the judge engine's base-against-tuned comparison, run on the evaluation's prompts.

The judge engine (evaluation/judge) does the work: both models answer the same prompts, the judge sees every
pair in both orders. This module picks the prompts (the spec's, or the first gen / ppl task's file), checks
everything before any model runs, and returns one JudgeComparison per adapter for the benchmark report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from assay.evaluation.errors import EvalInputError
from assay.evaluation.models import ModelTarget, resolve_model
from assay.evaluation.tasks import PreparedTask
from assay.schemas.evaluation import JudgeSpec
from assay.schemas.judge import JudgeComparison, Rubric

PROMPT_FORMATS = ("gen", "ppl")


@dataclass
class JudgePlan:
    """Everything the judge step needs, checked up front: the rubric, the prompts, where the judge runs."""

    spec: JudgeSpec
    rubric: Rubric
    prompts: list[dict[str, Any]]
    prompts_path: Path
    judge_folder: Path | None  # the in-process judge's folder; None with a URL


def plan_judge(spec: JudgeSpec, tasks: list[PreparedTask], adapters: list[ModelTarget], limit: int | None
               ) -> JudgePlan:
    """Check the judge settings before any model runs: a pairwise rubric, prompts, a judge that exists."""
    from assay.evaluation.judge.compare import load_prompts
    from assay.evaluation.judge.engine import DataError
    from assay.evaluation.judge.prompts import TemplateError, check_template
    from assay.evaluation.judge.rubrics import load_rubric

    if not adapters:
        raise EvalInputError("--judge compares the base with an adapter: give at least one --adapter")
    try:
        rubric = load_rubric(spec.rubric)
        check_template(rubric)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise EvalInputError(f"rubric {spec.rubric}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
                             ) from exc
    except (FileNotFoundError, TemplateError) as exc:
        raise EvalInputError(str(exc)) from exc
    if rubric.mode != "pairwise":
        raise EvalInputError(f"--judge needs a pairwise rubric; {spec.rubric} is {rubric.mode}")
    if spec.prompts is not None:
        path = Path(spec.prompts)
    else:
        source = next((t for t in tasks if t.spec.format in PROMPT_FORMATS and t.spec.path), None)
        if source is None or source.spec.path is None:
            raise EvalInputError("--judge needs prompts: give --judge-prompts FILE, or a gen: or ppl: task whose "
                                 "records are answered and judged")
        path = Path(source.spec.path)
    try:
        prompts = load_prompts(path, spec.limit or limit)
    except DataError as exc:
        raise EvalInputError(str(exc)) from exc
    folder = None if spec.url else resolve_model(spec.model)
    return JudgePlan(spec, rubric, prompts, path, folder)


def judge_backend(plan: JudgePlan, api_key: str | None = None) -> Any:
    """An OpenAI-compatible judge at the URL, or the judge model loaded here; replies cached unless told not."""
    from assay.evaluation.judge.backends import (
        CachedBackend,
        OpenAIHTTPBackend,
        ResponseCache,
        TransformersBackend,
        default_cache_path,
    )

    spec = plan.spec
    inner: Any
    if spec.url:
        key = api_key or os.environ.get("ASSAY_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        inner = OpenAIHTTPBackend(spec.url, spec.model, api_key=key)
    else:
        assert plan.judge_folder is not None
        inner = TransformersBackend.load(plan.judge_folder, model_name=spec.model)
    return CachedBackend(inner, ResponseCache(default_cache_path())) if spec.cache else inner


def run_judge(plan: JudgePlan, model_path: Path, adapters: list[ModelTarget], out: Path,
              api_key: str | None = None, reference: str | None = None) -> list[JudgeComparison]:
    """Answers of the base and every adapter on the plan's prompts, judged pairwise; outputs in out/judge-NAME/.
    With `reference` (an adapter's label) that adapter takes the base's side of every comparison."""
    from assay.evaluation.judge.compare import judge_base_vs_tuned
    from assay.evaluation.judge.engine import DataError, JudgeSettings

    backend = judge_backend(plan, api_key)
    settings = JudgeSettings(samples=plan.spec.samples, concurrency=plan.spec.concurrency)
    try:
        results = judge_base_vs_tuned(model_path, {a.label: str(a.adapter) for a in adapters}, plan.prompts,
                                      plan.rubric, backend, settings=settings,
                                      max_new_tokens=plan.spec.max_new_tokens, out_dir=out,
                                      base=reference or "base", reference=reference)
    except DataError as exc:
        raise EvalInputError(str(exc)) from exc
    return list(results.values())
