"""`evaluate(spec, out)`: base and adapters on the same items, compared, reported. The CLI and the service call it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from assay.evaluation.errors import EvalInputError, EvaluationCancelled
from assay.evaluation.harness import HarnessSettings, ModelScores, TaskScores
from assay.evaluation.models import ModelTarget
from assay.evaluation.stats import (
    PairedResult,
    bootstrap_stderr,
    loss_difference,
    mean_difference,
    paired_bootstrap,
    per_token_loss,
    perplexity_difference,
    verdict,
)
from assay.evaluation.tasks import PreparedTask
from assay.schemas.evaluation import (
    BenchmarkReport,
    Comparison,
    Disagreement,
    EvalSpec,
    MetricValue,
    RunMetadata,
    TaskReport,
)

Event = Callable[[dict[str, Any]], None]
PROMPT_CHARS = 600  # shown tail of a prompt in disagreement examples (few-shot prompts are long)


def evaluate(spec: EvalSpec, out: str | Path, on_event: Event | None = None,
             should_stop: Callable[[], bool] | None = None, judge_api_key: str | None = None) -> BenchmarkReport:
    """Score the base model and every adapter on the spec's tasks (same items, same settings), compare each
    adapter with the base (and, with `spec.judge`, have a judge compare their answers), and write
    eval_report.json/.md/.html plus the generated lm-eval tasks under `out`.

    Raises EvalInputError for anything the user has to fix (one line naming file, item and reason); a judge
    endpoint that keeps failing raises the judge's JudgeBackendError.
    """
    from assay.evaluation import harness
    from assay.evaluation.contamination import count_contamination, training_files
    from assay.evaluation.joined import curation_summary, training_summary
    from assay.evaluation.judged import plan_judge, run_judge
    from assay.evaluation.metrics import register_metrics
    from assay.evaluation.models import (
        adapter_targets,
        assay_home,
        cache_key,
        resolve_device,
        resolve_dtype,
        resolve_model,
    )
    from assay.evaluation.report import write_reports
    from assay.evaluation.tasks import prepare_tasks

    started = time.perf_counter()
    emit = on_event or (lambda event: None)
    out = Path(out)
    model_path = resolve_model(spec.model)
    targets = [ModelTarget("base", model_path), *adapter_targets(model_path, spec.adapters)]
    if spec.reference not in {t.label for t in targets}:
        raise EvalInputError(f"reference {spec.reference!r} is neither 'base' nor the label of an adapter "
                             f"({', '.join(t.label for t in targets[1:]) or 'none given'})")
    # Inputs that can fail are all read before any model runs: a bad file costs seconds, not a scoring pass.
    train_files, held_out = training_files(Path(spec.training_run)) if spec.training_run else ([], [])
    curation = curation_summary(Path(spec.curation_report)) if spec.curation_report else None
    training = training_summary(Path(spec.training_run)) if spec.training_run else None

    tokenizer_cache: list[Any] = []

    def tokenizer() -> Any:
        if not tokenizer_cache:
            from transformers import AutoTokenizer

            tokenizer_cache.append(AutoTokenizer.from_pretrained(str(model_path)))
        return tokenizer_cache[0]

    out.mkdir(parents=True, exist_ok=True)
    tasks = prepare_tasks(spec.tasks, out / "tasks", spec.num_fewshot, spec.limit, spec.seed, tokenizer,
                          spec.include_paths, spec.max_gen_toks)
    compared = [t for t in targets if t.label != spec.reference]
    judge_plan = (plan_judge(spec.judge, tasks, [t for t in compared if t.adapter is not None], spec.limit)
                  if spec.judge is not None else None)
    device = resolve_device(spec.device)
    settings = HarnessSettings(device=device, dtype=resolve_dtype(spec.dtype, device), batch_size=spec.batch_size,
                               chat_template=spec.chat_template, seed=spec.seed,
                               cache_dir=Path(spec.cache_dir) if spec.cache_dir else assay_home() / "eval-cache")
    emit({"event": "tasks_prepared", "tasks": [{"name": t.name, "items": len(t.docs) or None} for t in tasks]})
    register_metrics()
    manager = harness.task_manager(tasks)
    harness.load_lm_tasks(tasks, manager)
    _fill_builtin_docs(tasks, spec)
    contamination = count_contamination(tasks, train_files, held_out) if train_files else {}

    scored: list[ModelScores] = []
    for target in targets:
        if should_stop is not None and should_stop():
            raise EvaluationCancelled("evaluation cancelled")
        cache_file = (str(settings.cache_dir / cache_key(target, settings.device, settings.dtype))
                      if spec.cache and settings.cache_dir else None)
        scored.append(harness.score_model(target, tasks, settings, manager, cache_file, emit, should_stop))
    judged = []
    if judge_plan is not None:
        if should_stop is not None and should_stop():
            raise EvaluationCancelled("evaluation cancelled")
        emit({"event": "judge_started", "prompts": len(judge_plan.prompts), "judge": judge_plan.spec.model})
        judged = run_judge(judge_plan, model_path, targets[1:], out, judge_api_key,
                           reference=None if spec.reference == "base" else spec.reference)
        emit({"event": "judge_done", "verdicts": {c.tuned: c.verdict for c in judged}})

    report = BenchmarkReport(
        spec=spec,
        metadata=RunMetadata(seed=spec.seed, limit=spec.limit, device=settings.device, dtype=settings.dtype,
                             batch_size=spec.batch_size, chat_template=spec.chat_template, versions=_versions(),
                             cache_dir=str(settings.cache_dir) if spec.cache else None),
        models=[s.run for s in scored],
        tasks=[task_report(task, scored, spec, contamination.get(task.name)) for task in tasks],
        training=training, curation=curation, judge=judged)
    _check_adapters(report, scored, tasks)
    report.warnings.extend(_warnings(report))
    report.metadata.seconds = round(time.perf_counter() - started, 3)
    write_reports(report, out)
    emit({"event": "done", "report": str(out / "eval_report.html"), "seconds": report.metadata.seconds})
    return report


def _fill_builtin_docs(tasks: list[PreparedTask], spec: EvalSpec) -> None:
    from assay.evaluation.tasks import sample_indices

    for task in tasks:
        if task.builtin:
            # the run's settings apply to registry tasks as to file tasks (lm-eval's own defaults otherwise)
            shots = task.spec.num_fewshot if task.spec.num_fewshot is not None else spec.num_fewshot
            if shots is not None:
                task.lm_task.set_config(key="num_fewshot", value=shots)
            tokens = task.spec.max_gen_toks or spec.max_gen_toks
            if tokens is not None and task.lm_task.OUTPUT_TYPE == "generate_until":
                task.lm_task.set_config(key="generation_kwargs", value={"max_gen_toks": tokens}, update=True)
            task.docs = [dict(doc) for doc in task.lm_task.eval_docs]
            task.sample = sample_indices(len(task.docs), spec.limit, spec.seed)
            task.config = {"output_type": task.lm_task.OUTPUT_TYPE,
                           "num_fewshot": task.lm_task.get_config("num_fewshot") or 0}
            task.primary = _builtin_primary(task)


def _builtin_primary(task: PreparedTask) -> str:
    metrics = [m["metric"] for m in (task.lm_task.config.metric_list or []) if isinstance(m.get("metric"), str)]
    filters = [f["name"] for f in (task.lm_task.config.filter_list or []) if isinstance(f, dict)]
    metric = metrics[0] if metrics else "acc"
    return f"{metric},{filters[0]}" if filters and filters[0] != "none" else metric


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for package in ("assay", "lm_eval", "torch", "transformers", "peft"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return versions


# --- per task: scores, comparisons, disagreements --------------------------------------------------------


def _key(metric: str, flt: str) -> str:
    return metric if flt == "none" else f"{metric},{flt}"


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def metric_values(task: PreparedTask, scores: TaskScores, spec: EvalSpec) -> list[MetricValue]:
    values = [MetricValue(metric=metric, filter=flt, value=value, stderr=_finite(stderr),
                          higher_is_better=scores.higher_is_better.get(metric, True))
              for (metric, flt), (value, stderr) in sorted(scores.aggregate.items())]
    if task.output_type == "loglikelihood" and scores.loglikelihoods is not None and _has_tokens(task):
        ll, tokens = scores.loglikelihoods, _tokens(task, scores)
        loss = float(per_token_loss(ll, tokens))
        loss_se = bootstrap_stderr((ll, tokens), per_token_loss, seed=spec.seed)

        def perplexity(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.exp(per_token_loss(a, b, axis))

        ppl_se = bootstrap_stderr((ll, tokens), perplexity, seed=spec.seed)
        values = [MetricValue(metric="loss", value=loss, stderr=loss_se, higher_is_better=False),
                  MetricValue(metric="perplexity", value=math.exp(loss), stderr=ppl_se, higher_is_better=False),
                  *values]
    return values


def _has_tokens(task: PreparedTask) -> bool:
    return bool(task.docs) and "n_tokens" in task.docs[0]


def _tokens(task: PreparedTask, scores: TaskScores) -> np.ndarray:
    return np.array([task.docs[i]["n_tokens"] for i in scores.doc_ids], dtype=np.float64)


def compare(task: PreparedTask, base: TaskScores, tuned: TaskScores, label: str, spec: EvalSpec) -> list[Comparison]:
    """Every metric of the task: tuned - base with a paired bootstrap interval over the same items."""
    results: list[tuple[str, str, bool, float, float, PairedResult]] = []
    if task.output_type == "loglikelihood" and base.loglikelihoods is not None and tuned.loglikelihoods is not None \
            and _has_tokens(task):
        tokens = _tokens(task, base)
        data = (base.loglikelihoods, tuned.loglikelihoods, tokens)
        for metric, statistic, transform in (("loss", loss_difference, lambda x: x),
                                             ("perplexity", perplexity_difference, math.exp)):
            result = paired_bootstrap(data, statistic, spec.bootstrap_samples, spec.confidence, spec.seed)
            results.append((metric, "none", False, transform(float(per_token_loss(base.loglikelihoods, tokens))),
                            transform(float(per_token_loss(tuned.loglikelihoods, tokens))), result))
    for (metric, flt), base_items in sorted(base.per_item.items()):
        tuned_items = tuned.per_item.get((metric, flt))
        if tuned_items is None or np.isnan(base_items).any() or np.isnan(tuned_items).any():
            continue
        result = paired_bootstrap((base_items, tuned_items), mean_difference, spec.bootstrap_samples,
                                  spec.confidence, spec.seed)
        results.append((metric, flt, base.higher_is_better.get(metric, True), float(base_items.mean()),
                        float(tuned_items.mean()), result))
    return [Comparison(model=label, metric=metric, filter=flt, higher_is_better=better, base=b, tuned=t,
                       difference=r.difference, ci_low=r.ci_low, ci_high=r.ci_high, confidence=spec.confidence,
                       p_value=r.p_value, verdict=verdict(r, better), n_items=r.n_items)
            for metric, flt, better, b, t, r in results]


def disagreements(task: PreparedTask, base: TaskScores, tuned: TaskScores, label: str, limit: int
                  ) -> list[Disagreement]:
    """Items the two models score differently on the primary metric: where the tuned model gained first."""
    metric, _, flt = task.primary.partition(",")
    flt = flt or "none"
    if task.output_type == "loglikelihood" and base.loglikelihoods is not None and tuned.loglikelihoods is not None \
            and _has_tokens(task):
        tokens = _tokens(task, base)
        b_scores, t_scores, higher = -base.loglikelihoods / tokens, -tuned.loglikelihoods / tokens, False
        shown = "loss per token"
    elif (metric, flt) in base.per_item and (metric, flt) in tuned.per_item:
        b_scores, t_scores = base.per_item[(metric, flt)], tuned.per_item[(metric, flt)]
        higher = base.higher_is_better.get(metric, True)
        shown = task.primary
    else:
        return []
    gain = (t_scores - b_scores) * (1 if higher else -1)
    order = np.argsort(-gain, kind="stable")
    gained = [int(i) for i in order if gain[i] > 0][:limit]
    lost = [int(i) for i in order[::-1] if gain[i] < 0][:limit]
    answers_b = base.answers.get(flt) or next(iter(base.answers.values()), [])
    answers_t = tuned.answers.get(flt) or next(iter(tuned.answers.values()), [])
    return [Disagreement(model=label, item=str(task.docs[base.doc_ids[i]].get("id", base.doc_ids[i])), metric=shown,
                         prompt=_tail(base.prompts[i]), target=base.targets[i][:PROMPT_CHARS],
                         base_answer=answers_b[i][:PROMPT_CHARS] if answers_b else "",
                         tuned_answer=answers_t[i][:PROMPT_CHARS] if answers_t else "",
                         base_score=float(b_scores[i]), tuned_score=float(t_scores[i]))
            for i in gained + lost]


def _tail(text: str) -> str:
    return text if len(text) <= PROMPT_CHARS else "..." + text[-PROMPT_CHARS:]


def task_report(task: PreparedTask, scored: list[ModelScores], spec: EvalSpec, contamination: Any) -> TaskReport:
    """Scores of every model; each model other than the reference (`spec.reference`, default the base) compared
    with it."""
    reference = next(s for s in scored if s.run.label == spec.reference)
    base = reference.tasks[task.name]
    report = TaskReport(
        name=task.name, format=task.spec.format, path=task.spec.path, file_sha256=task.file_sha256,
        output_type=task.output_type, primary=task.primary, items_total=len(task.docs),
        items_evaluated=len(base.doc_ids), num_fewshot=task.num_fewshot, lm_eval_task=task.lm_name,
        task_config=str(task.config_path) if task.config_path else None, contamination=contamination,
        scores={s.run.label: metric_values(task, s.tasks[task.name], spec) for s in scored})
    for model in scored:
        if model is reference:
            continue
        tuned = model.tasks[task.name]
        report.comparisons.extend(compare(task, base, tuned, model.run.label, spec))
        report.disagreements.extend(disagreements(task, base, tuned, model.run.label, spec.max_examples))
    return report


def _check_adapters(report: BenchmarkReport, scored: list[ModelScores], tasks: list[PreparedTask]) -> None:
    """Record whether any per-item result of each adapter differs from the base's."""
    base = scored[0]
    for model in scored[1:]:
        if model.run.adapter_check is None:
            continue
        model.run.adapter_check.scores_differ = any(
            model.tasks[t.name].raw != base.tasks[t.name].raw for t in tasks)


def _warnings(report: BenchmarkReport) -> list[str]:
    warnings = []
    for run in report.models:
        check = run.adapter_check
        if check is not None and not check.applied:
            warnings.append(f"adapter {run.label} ({run.adapter}) does not change the model's output: "
                            + ("it was not loaded as a PEFT adapter" if not check.peft_model else
                               "its weights leave the logits unchanged (an untrained adapter?)"))
    for task in report.tasks:
        if task.contamination is not None and task.contamination.items_found:
            c = task.contamination
            warnings.append(f"{task.name}: {c.items_found} of {c.items_total} items were found in the training data "
                            f"({c.evaluated_found} of them scored here)")
    return warnings


__all__ = ["EvalInputError", "EvaluationCancelled", "evaluate"]
