"""`assay eval`: benchmark a base model and its adapters; added to the main CLI by `register(app)`."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

TASKS_HELP = ("A task: FORMAT:PATH with FORMAT arc_easy, arc_challenge, gsm8k, logiqa-en, sat-math, aqua-rat, mmlu "
              "(CSV), mc, gen or ppl; or a bare lm-eval task name. Repeatable.")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def eval_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for eval_report.json/.md/.html.")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Base model: a registered name or a local HF folder (required unless in --config).")] = None,
    tasks: Annotated[list[str] | None, typer.Option("--tasks", "-t", help=TASKS_HELP)] = None,
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", "-a", help="A LoRA adapter folder (or fine-tuning output) to compare with the base, "
                                "optionally LABEL=PATH; repeatable.")] = None,
    limit: Annotated[int | None, typer.Option(help="Score a seeded random sample of N items per task.")] = None,
    num_fewshot: Annotated[int | None, typer.Option(help="Few-shot examples (default: each format's own).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Requests per forward pass (default 8).")] = None,
    max_gen_toks: Annotated[int | None, typer.Option(
        help="Most tokens generated per item in generation tasks (default: the format's, 256).")] = None,
    chat_template: Annotated[bool | None, typer.Option(
        "--chat-template/--no-chat-template", help="Wrap prompts in the tokenizer's chat template (default off).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the item sample, few-shot examples and bootstrap (default 1234).")] = None,
    training_run: Annotated[Path | None, typer.Option(
        help="Fine-tuning output folder (or its training JSONL): contamination check and joined report.")] = None,
    curation_report: Annotated[Path | None, typer.Option(
        help="Curation output folder (or report.json) to join into the report.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="An EvalSpec YAML; flags override it.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = None,
    include_path: Annotated[list[Path] | None, typer.Option(
        help="A folder of your own lm-eval task YAMLs, for bare task names; repeatable.")] = None,
    judge: Annotated[str | None, typer.Option(
        "--judge", help="Also judge base against each adapter with this pairwise rubric (a built-in name such as "
                        "`pairwise`, or a YAML file).")] = None,
    judge_model: Annotated[str | None, typer.Option(
        help="The judge: the model name at --judge-url, or a registered name / local folder run here.")] = None,
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL of the judge.")] = None,
    judge_key: Annotated[str | None, typer.Option(
        help="Bearer key for --judge-url [env: ASSAY_JUDGE_API_KEY or OPENAI_API_KEY].")] = None,
    judge_prompts: Annotated[Path | None, typer.Option(
        help="Prompts to answer and judge (default: the first gen or ppl task's file).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use lm-eval's request cache.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Request cache folder (default: $ASSAY_HOME/eval-cache).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Score the base model and every adapter on the same items; print the comparison and write the report.
    Flags override the values of --config."""
    from pydantic import ValidationError

    from assay.schemas.evaluation import EvalSpec

    try:
        data = _read_config(config) if config else {}
        optional = {"model": model, "tasks": tasks, "seed": seed, "batch_size": batch_size,
                    "chat_template": chat_template, "adapters": adapter, "limit": limit, "max_gen_toks": max_gen_toks,
                    "num_fewshot": num_fewshot, "device": device,
                    "training_run": str(training_run) if training_run else None,
                    "curation_report": str(curation_report) if curation_report else None,
                    "include_paths": [str(p) for p in include_path] if include_path else None,
                    "cache_dir": str(cache_dir) if cache_dir else None}
        data.update({k: v for k, v in optional.items() if v is not None})
        judged = {"rubric": judge, "model": judge_model, "url": judge_url,
                  "prompts": str(judge_prompts) if judge_prompts else None}
        if judge is not None or judge_model is not None:
            if judge_model is None:
                raise ValueError("--judge needs --judge-model (the judge at --judge-url, or a local model)")
            data["judge"] = {**(data.get("judge") or {}), **{k: v for k, v in judged.items() if v is not None}}
        if no_cache:
            data["cache"] = False
        spec = EvalSpec.model_validate(data)
    except FileNotFoundError as exc:
        _fail(f"cannot read --config: {exc.filename}: no such file")
        return
    except ValidationError as exc:
        _fail(_spec_error(exc))
        return
    except ValueError as exc:
        _fail(str(exc))
        return

    from assay.evaluation import EvalInputError, evaluate

    try:
        with _quiet_libraries(), _Progress(quiet) as progress:
            report = evaluate(spec, out, on_event=progress, judge_api_key=judge_key)
    except EvalInputError as exc:
        _fail(str(exc))
        return
    except RuntimeError as exc:  # the judge endpoint kept failing (JudgeBackendError)
        if type(exc).__name__ != "JudgeBackendError":
            raise
        typer.echo(f"error: judge: {exc}", err=True)
        raise typer.Exit(1) from exc
    _print_summary(report, out)


def _read_config(path: Path) -> dict[str, Any]:
    """The spec file as a mapping; validated together with the flags, so a flag may supply what it lacks."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: the spec must be a YAML mapping, got {type(data).__name__}")
    return data


def _spec_error(exc: Any) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}'")
        elif err["type"] == "missing":
            lines.append(f"{loc}: required (give --{loc.replace('_', '-')} or `{loc}:` in --config)")
        else:
            lines.append(f"{loc}: {message}")
    return "; ".join(lines)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """lm-eval, datasets and transformers print progress bars and INFO lines; ours say it once, shorter."""
    # Through the environment, read when those libraries are imported: importing them here would cost
    # seconds on paths (a bad task file) that never need them.
    for variable, value in (("TOKENIZERS_PARALLELISM", "false"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
                            ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                            ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(variable, value)
    for name in ("lm_eval", "datasets", "transformers", "peft", "httpx", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):  # tqdm bars of lm-eval's request loops
        yield


class _Progress:
    """One line per task and model on the real stderr (lm-eval's own bars are captured)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.stream = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr

    def __enter__(self) -> Any:
        return self

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        kind = event.get("event")
        line = None
        if kind == "tasks_prepared":
            line = "tasks: " + ", ".join(f"{t['name']} ({t['items']} items)" if t["items"] else t["name"]
                                         for t in event["tasks"])
        elif kind == "model_loading":
            line = f"scoring {event['model']}"
        elif kind == "judge_started":
            line = f"judging base against each adapter on {event['prompts']} prompts ({event['judge']})"
        elif kind == "task_done":
            cached = event["requests"] - event["computed"]
            line = (f"  {event['model']} {event['index']}/{event['tasks']}: {event['task']}: {event['requests']} "
                    f"requests ({cached} cached) in {event['seconds']:.1f} s")
        if line:
            print(line, file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        return None


def _print_summary(report: Any, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from assay.evaluation.report import VERDICT_WORDS, fmt, interval, p_value, signed, with_stderr

    console = Console()
    table = Table("task", "metric", "items", "base", "tuned", "difference [CI]", "p", "verdict",
                  title="benchmark results")
    for task in report.tasks:
        base = task.score("base")
        rows = [c for c in task.comparisons if c.key == task.primary]
        if not rows:
            table.add_row(task.name, task.primary, str(task.items_evaluated), with_stderr(base), "", "", "", "")
        for c in rows:
            table.add_row(task.name, task.primary, str(task.items_evaluated), with_stderr(base),
                          f"{c.model}: {with_stderr(task.score(c.model))}", f"{signed(c.difference)} {interval(c)}",
                          p_value(c.p_value), VERDICT_WORDS[c.verdict])
    console.print(table)
    for c in report.judge:
        console.print(f"judge ({c.rubric}, {c.judge_model}): {c.tuned} vs base on {c.prompts} prompts: tuned wins "
                      f"{c.tuned_wins}, base wins {c.base_wins}, ties {c.ties}; tie-adjusted win rate "
                      f"{fmt(c.tie_adjusted_win_rate)} [{fmt(c.ci_low)}, {fmt(c.ci_high)}]: {c.verdict}", highlight=False)
    for warning in report.warnings:
        console.print(f"[bold red]warning:[/bold red] {warning}", highlight=False)
    console.print(f"report: {(out / 'eval_report.html').resolve()}", highlight=False)
