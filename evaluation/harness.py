"""Score one model (the base, or the base with one adapter) on the prepared tasks with lm-eval.

lm-eval does the work: its HF model class (`HFLM`, with `peft=` for the adapter), its request cache
(`use_cache`, a SQLite file per model), its task configs, filters and metrics (`simple_evaluate`). This
module adds what a comparison needs and lm-eval does not keep together: the per-item scores aligned by
item, the model's answer per item, the number of requests that really ran the model, and the proof that
an adapter was applied.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.evaluation.errors import EvalInputError, EvaluationCancelled
from assay.evaluation.models import ModelTarget
from assay.evaluation.tasks import PreparedTask
from assay.schemas.evaluation import AdapterCheck, ModelRun

PROBE_TEXT = "Question: Which gas do plants take in to make their food?\nAnswer: Carbon dioxide."
REQUEST_METHODS = ("loglikelihood", "loglikelihood_rolling", "generate_until")
Event = Callable[[dict[str, Any]], None]


@dataclass
class HarnessSettings:
    device: str
    dtype: str
    batch_size: int
    chat_template: bool
    seed: int
    cache_dir: Path | None


@dataclass
class TaskScores:
    """One model's results on one task; every array is in the order of `doc_ids`."""

    doc_ids: list[int]
    per_item: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (metric, filter) -> scores
    aggregate: dict[tuple[str, str], tuple[float, float | None]] = field(default_factory=dict)  # value, stderr
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    answers: dict[str, list[str]] = field(default_factory=dict)  # filter -> shown answer per item
    prompts: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)  # the model's raw responses (first filter)
    loglikelihoods: np.ndarray | None = None  # loglikelihood tasks: per item


@dataclass
class ModelScores:
    run: ModelRun
    tasks: dict[str, TaskScores]


def load_lm(target: ModelTarget, settings: HarnessSettings) -> Any:
    """lm-eval's HF model, with the adapter through its `peft=` argument."""
    from lm_eval.models.huggingface import HFLM

    what = f"model {target.model_path}" + (f" with adapter {target.adapter}" if target.adapter else "")
    try:
        return HFLM(pretrained=str(target.model_path), peft=str(target.adapter) if target.adapter else None,
                    device=settings.device, dtype=settings.dtype, batch_size=settings.batch_size)
    except (OSError, ValueError) as exc:
        raise EvalInputError(f"{what}: cannot load ({str(exc).splitlines()[0]})") from exc
    except RuntimeError as exc:
        if "size mismatch" in str(exc):
            raise EvalInputError(f"{what}: the adapter was trained for a different base model "
                                 f"({str(exc).splitlines()[0][:200]})") from exc
        raise


def check_adapter(lm: Any) -> AdapterCheck:
    """Compare the logits of the model lm-eval holds with its adapter enabled and disabled."""
    import torch
    from peft import PeftModel

    model = lm.model
    if not isinstance(model, PeftModel):
        return AdapterCheck(peft_model=False, probe_max_logit_diff=0.0, applied=False)
    ids = lm.tokenizer(PROBE_TEXT, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
    with torch.no_grad():
        tuned = model(ids).logits.float()
        with model.disable_adapter():
            base = model(ids).logits.float()
    diff = float((tuned - base).abs().max())
    return AdapterCheck(peft_model=True, probe_max_logit_diff=diff, applied=diff > 0.0)


class RequestCounter:
    """Counts the requests that reach the model; lm-eval's cache answers the others before they get here."""

    def __init__(self, lm: Any) -> None:
        self.computed = 0
        for name in REQUEST_METHODS:
            original = getattr(lm, name)
            setattr(lm, name, self._counting(original))

    def _counting(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(requests: list[Any], *args: Any, **kwargs: Any) -> Any:
            self.computed += len(requests)
            return method(requests, *args, **kwargs)

        return counted


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """Around each simple_evaluate call: lm-eval logs every step at INFO, asks git for its commit hash
    (printing 'fatal: not a git repository' outside one) and collects torch's environment report, which
    runs about ten subprocesses (1.7 s per call, more than scoring a small task). Our report records the
    versions that matter once, so all three are switched off here."""
    import lm_eval.evaluator as evaluator

    loggers = [logging.getLogger(name) for name in ("lm_eval", "lm-eval")]
    levels = [log.level for log in loggers]
    saved = evaluator.get_git_commit_hash, evaluator.add_env_info
    for log in loggers:
        log.setLevel(logging.ERROR)
    evaluator.get_git_commit_hash = lambda: None  # type: ignore[assignment]
    evaluator.add_env_info = lambda storage: None  # type: ignore[assignment]
    try:
        yield
    finally:
        evaluator.get_git_commit_hash, evaluator.add_env_info = saved  # type: ignore[assignment]
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def task_manager(tasks: list[PreparedTask]) -> Any:
    from lm_eval.tasks import TaskManager

    include = sorted({p for t in tasks for p in t.include_path})
    return TaskManager(include_path=include or None, include_defaults=any(t.include_defaults for t in tasks))


def load_lm_tasks(tasks: list[PreparedTask], manager: Any) -> None:
    """Build lm-eval's Task object of every prepared task once; all models are scored on the same objects."""
    for task in tasks:
        spec = task.lm_name if task.builtin else task.config
        try:
            loaded = manager.load([spec])["tasks"]
        except Exception as exc:  # lm-eval and datasets raise many kinds; all mean the task cannot load
            raise EvalInputError(f"task {task.name}: lm-eval cannot load it ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        if len(loaded) != 1:
            raise EvalInputError(f"task {task.name} is a group of {len(loaded)} tasks "
                                 f"({', '.join(sorted(loaded)[:5])}, ...); name the tasks one by one")
        task.lm_task = next(iter(loaded.values()))
        task.lm_name = task.lm_task.task_name


def score_model(target: ModelTarget, tasks: list[PreparedTask], settings: HarnessSettings, manager: Any,
                cache_file: str | None, on_event: Event | None = None,
                should_stop: Callable[[], bool] | None = None) -> ModelScores:
    """Load the model once, then run lm-eval task by task; the cache file holds this model's responses.
    `should_stop` is asked before each task (EvaluationCancelled)."""
    from lm_eval import simple_evaluate

    started = time.perf_counter()
    emit = on_event or (lambda event: None)
    emit({"event": "model_loading", "model": target.label})
    lm = load_lm(target, settings)
    check = check_adapter(lm) if target.adapter is not None else None
    counter = RequestCounter(lm)
    scores: dict[str, TaskScores] = {}
    requests = 0
    for number, task in enumerate(tasks, start=1):
        if should_stop is not None and should_stop():
            raise EvaluationCancelled("evaluation cancelled")
        emit({"event": "task_started", "model": target.label, "task": task.name, "index": number,
              "tasks": len(tasks), "items": len(task.evaluated)})
        task_started = time.perf_counter()
        computed_before = counter.computed
        with quiet_lm_eval():
            results = simple_evaluate(
                model=lm, tasks=[task.lm_task], task_manager=manager,
                samples={task.lm_name: task.sample} if task.sample is not None else None,
                use_cache=cache_file, bootstrap_iters=100, log_samples=True,
                apply_chat_template=settings.chat_template and not task.uses_chat_template_rendering,
                random_seed=settings.seed, numpy_random_seed=settings.seed, torch_random_seed=settings.seed,
                fewshot_random_seed=settings.seed)
        assert results is not None  # rank 0 of one process always has results
        scores[task.name] = task_scores(task, results)
        task_requests = sum(len(s["arguments"]) for s in results["samples"][task.lm_name]
                            if s["filter"] == _first_filter(results["samples"][task.lm_name]))
        requests += task_requests
        emit({"event": "task_done", "model": target.label, "task": task.name, "index": number, "tasks": len(tasks),
              "requests": task_requests, "computed": counter.computed - computed_before,
              "seconds": round(time.perf_counter() - task_started, 3)})
    run = ModelRun(label=target.label, model=str(target.model_path),
                   adapter=str(target.adapter) if target.adapter else None, adapter_sha256=target.adapter_sha256,
                   adapter_check=check, requests=requests, computed=counter.computed,
                   seconds=round(time.perf_counter() - started, 3))
    del lm
    return ModelScores(run, scores)


def _first_filter(samples: list[dict[str, Any]]) -> str:
    return str(samples[0]["filter"]) if samples else "none"


def _number(value: Any) -> float | None:
    """A per-item metric value as a float (bools and numpy scalars too); None for anything else."""
    return float(value) if isinstance(value, (int, float, np.integer, np.floating, np.bool_)) else None


def task_scores(task: PreparedTask, results: dict[str, Any]) -> TaskScores:
    """lm-eval's results for one task, per (metric, filter) and per item in the order of `task.evaluated`."""
    samples: list[dict[str, Any]] = results["samples"][task.lm_name]
    doc_ids = task.evaluated
    position = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    out = TaskScores(doc_ids=doc_ids, prompts=[""] * len(doc_ids), targets=[""] * len(doc_ids),
                     raw=[None] * len(doc_ids))
    out.higher_is_better = {k: bool(v) for k, v in results.get("higher_is_better", {}).get(task.lm_name, {}).items()}
    first = _first_filter(samples)
    for sample in samples:
        i = position[int(sample["doc_id"])]
        flt = str(sample["filter"])
        for metric in sample["metrics"]:
            value = _number(sample.get(metric))
            if value is None:
                continue  # a corpus-level metric's per-item tuple: it has no per-item score
            out.per_item.setdefault((metric, flt), np.full(len(doc_ids), np.nan))[i] = value
        out.answers.setdefault(flt, [""] * len(doc_ids))[i] = shown_answer(task.output_type, sample)
        if flt == first:
            out.prompts[i] = _prompt(sample)
            out.targets[i] = shown_target(task.output_type, sample)
            out.raw[i] = sample["resps"]
            if task.output_type == "loglikelihood":
                if out.loglikelihoods is None:
                    out.loglikelihoods = np.zeros(len(doc_ids))
                out.loglikelihoods[i] = float(sample["filtered_resps"][0][0])
    for key, value in results["results"][task.lm_name].items():
        metric, _, flt = key.partition(",")
        if not flt or metric.endswith("_stderr") or _number(value) is None:
            continue
        stderr = _number(results["results"][task.lm_name].get(f"{metric}_stderr,{flt}"))
        out.aggregate[(metric, flt)] = (float(value), stderr)
    return out


def _prompt(sample: dict[str, Any]) -> str:
    arguments = sample.get("arguments") or [("",)]
    return str(arguments[0][0])


def shown_answer(output_type: str, sample: dict[str, Any]) -> str:
    """The model's answer in words: the chosen choice, the (filtered) generation, or the turn's loss."""
    filtered = sample.get("filtered_resps")
    if output_type == "multiple_choice":
        lls = [float(r[0]) for r in filtered or []]
        if not lls:
            return ""
        pick = int(np.argmax(lls))
        return str(sample["arguments"][pick][1]).strip()
    if output_type == "generate_until":
        text = filtered if isinstance(filtered, str) else (filtered[0] if filtered else "")
        raw = sample["resps"][0][0] if sample.get("resps") else ""
        return str(text) if str(text).strip() == str(raw).strip() else f"{text}  <- {str(raw).strip()}"
    if output_type == "loglikelihood" and filtered:
        return f"log-likelihood {float(filtered[0][0]):.3f}"
    return str(filtered)


def shown_target(output_type: str, sample: dict[str, Any]) -> str:
    target = sample.get("target")
    if output_type == "multiple_choice" and isinstance(target, int):
        return str(sample["arguments"][target][1]).strip()
    return str(target)
