"""`assay finetune`, `assay sweep`, `assay generate` and `assay models ...`: added to the main CLI by
`register(app)`. Heavy libraries load inside the commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from assay.schemas.training import FineTuneSpec, TrainingEvent

EXIT_STOPPED = 130  # the shell's code for a run ended by Ctrl-C


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
    app.command("sweep")(sweep)
    app.command("generate")(generate)
    models = typer.Typer(help="Base models: built-in names, local folders, GGUF files, hub ids.", no_args_is_help=True)
    models.command("list")(models_list)
    models.command("show")(models_show)
    models.command("add")(models_add)
    models.command("prepare")(models_prepare)
    from assay.api.cli_cycle import register as register_cycles  # `cycle ...`, `models promote|rollback`

    register_cycles(app, models)
    app.add_typer(models, name="models")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _spec_error(exc: Any, config: Path | None) -> str:
    where = f"{config}: " if config else ""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}unknown key '{loc}'")
        else:
            lines.append(f"{where}{loc}: {err['msg']}".replace(": Value error, ", ": "))
    return "invalid fine-tune spec: " + "; ".join(lines)


def _split_list(text: str, kind: type, flag: str) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        _fail(f"{flag} takes a comma-separated list of {kind.__name__}s, got '{text}'")
        raise
    if not values:
        _fail(f"{flag} is empty")
    return values


def build_spec(config: Path | None, overrides: list[str] | None, flags: dict[str, Any]) -> FineTuneSpec:
    """The spec from --config, then --set KEY=VALUE, then the named flags (later wins)."""
    from pydantic import ValidationError

    from assay.api.cli import _apply_override
    from assay.schemas.training import FineTuneSpec

    try:
        data: dict[str, Any] = {}
        if config is not None:
            data = FineTuneSpec.from_yaml(config).model_dump(exclude_unset=True)
        for item in overrides or ():
            _apply_override(data, item)
        for key, value in flags.items():
            if value is None:
                continue
            node = data
            *parents, last = key.split(".")
            for parent in parents:
                node = node.setdefault(parent, {})
            node[last] = value
        return FineTuneSpec.model_validate(data)
    except FileNotFoundError as exc:
        _fail(f"cannot read --config: {exc.filename}: no such file")
    except ValidationError as exc:
        _fail(_spec_error(exc, config))
    except ValueError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


class _Progress:
    """A progress bar on terminals; plain lines for validation and status otherwise; nothing with --quiet."""

    def __init__(self, quiet: bool, label: str = "training") -> None:
        self.quiet = quiet
        self.label = label
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _Progress:
        if not self.quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=Console(stderr=True))
            self.bar.start()
        return self

    def __call__(self, event: TrainingEvent) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            if self.task is None and event.total_steps:
                self.task = self.bar.add_task(self.label, total=event.total_steps, info="", completed=event.step)
            if event.type == "train" and self.task is not None:
                info = f"loss {event.loss:.4f}  {event.tokens_per_s or 0:,.0f} tok/s"
                self.bar.update(self.task, completed=event.step, info=info)
            elif event.type in ("eval", "status"):
                self.bar.console.print(_event_line(event))
            return
        if event.type in ("eval", "status", "checkpoint"):
            typer.echo(_event_line(event), err=True)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _event_line(event: TrainingEvent) -> str:
    if event.type == "eval":
        return f"step {event.step}/{event.total_steps}: validation loss {event.valid_loss:.4f} (ppl {event.valid_ppl:.2f})"
    if event.type == "checkpoint":
        return f"step {event.step}: checkpoint {event.path}"
    return f"{event.status}: {event.message}"


def finetune(
    data: Annotated[Path, typer.Argument(help="Training data (.jsonl, .jsonl.gz, .json): any accepted record format.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (adapter/, events.jsonl, checkpoints, report).")],
    model: Annotated[str | None, typer.Option(help="Registry name, HF folder, .gguf file or hub id "
                                                    "(default smollm2-135m-instruct).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A fine-tune spec (YAML).")] = None,
    validation: Annotated[Path | None, typer.Option(help="Validation file (else --val-split of the data).")] = None,
    val_split: Annotated[float | None, typer.Option(help="Share of the data held out for validation (default 0.1).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the data (default 3).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (default 2e-4).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per micro-batch (default 8).")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per optimizer step (default 1).")] = None,
    max_seq_len: Annotated[int | None, typer.Option(help="Tokens per example; longer ones are truncated (default 1024).")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank (default 16).")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha (default 32).")] = None,
    lora_dropout: Annotated[float | None, typer.Option(help="LoRA dropout (default 0.05).")] = None,
    target_modules: Annotated[str | None, typer.Option(
        help="'all-linear' or comma-separated module names, e.g. q_proj,v_proj (default all-linear).")] = None,
    packing: Annotated[bool | None, typer.Option("--packing/--no-packing", help="Pack examples into rows (default off).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 42).")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Also write the merged model to OUT/merged.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUT from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override one spec value, KEY=VALUE (VALUE read as YAML); repeatable, e.g. "
                      "--set lora.r=8 --set lr_scheduler=linear")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Fine-tune a base model with LoRA on DATA. Exit 0: done; 2: bad input; 130: stopped (resume with --resume)."""
    if validation is not None and val_split is not None:
        _fail("give --validation FILE or --val-split, not both")
    if resume and overwrite:
        _fail("--resume continues the run in OUT and --overwrite deletes it: give one")
    modules: Any = None
    if target_modules is not None:
        modules = "all-linear" if target_modules.strip() == "all-linear" else _split_list(target_modules, str, "--target-modules")
    spec = build_spec(config, overrides, {
        "model": model, "val_split": val_split, "epochs": epochs, "learning_rate": lr, "batch_size": batch_size,
        "grad_accum": grad_accum, "max_seq_len": max_seq_len, "lora.r": lora_r, "lora.alpha": lora_alpha,
        "lora.dropout": lora_dropout, "lora.target_modules": modules, "packing": packing, "max_steps": max_steps,
        "seed": seed, "merge": True if merge else None})
    from assay.training.trainer import FineTuneError, TrainingDiverged
    from assay.training.trainer import finetune as run

    try:
        with _Progress(quiet) as progress:
            report = run(spec, data, out, validation=validation, on_event=progress, resume=resume, overwrite=overwrite)
    except FineTuneError as exc:
        _fail(str(exc))
        return
    except TrainingDiverged as exc:
        _fail(str(exc), code=1)
        return
    except KeyboardInterrupt:
        started = (out / "finetune_spec.json").is_file()
        typer.echo("interrupted" + (f"; continue from the last checkpoint with: assay finetune {data} --out {out} "
                                    "--resume" if started else ""), err=True)
        raise typer.Exit(EXIT_STOPPED) from None
    if report.status == "stopped":
        typer.echo(f"stopped at step {report.steps} of {report.total_steps}; continue with: "
                   f"assay finetune {data} --out {out} --resume", err=True)
        raise typer.Exit(EXIT_STOPPED)
    before = f"{report.valid_loss_before:.4f} -> " if report.valid_loss_before is not None else ""
    after = f"{report.final_valid_loss:.4f}" if report.final_valid_loss is not None else "n/a (no validation set)"
    typer.echo(f"trained {report.steps} steps in {report.seconds:.1f} s ({report.tokens_per_s:,.0f} tokens/s); "
               f"validation loss {before}{after}")
    typer.echo(f"adapter: {report.outputs['adapter']}")
    if "merged" in report.outputs:
        typer.echo(f"merged model: {report.outputs['merged']}")
    typer.echo(f"report: {Path(report.outputs['report_html']).resolve()}")


def sweep(
    data: Annotated[Path, typer.Argument(help="Training data, as for finetune.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (points/, sweep.json/md/html).")],
    lr: Annotated[str, typer.Option("--lr", help="Learning rates, comma-separated.")] = "1e-4,2e-4,4e-4",
    batch_size: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "4,8",
    model: Annotated[str | None, typer.Option(help="Base model (default smollm2-135m-instruct).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A fine-tune spec (YAML) for every point.")] = None,
    validation: Annotated[Path | None, typer.Option(help="Validation file (else the spec's val_split).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps per point.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per point (without --max-steps).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (the same for every point).")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override one spec value, KEY=VALUE.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """One short run per (learning rate, batch size) point: a table of validation loss, best first."""
    learning_rates = _split_list(lr, float, "--lr")
    sizes = _split_list(batch_size, int, "--batch-size")
    spec = build_spec(config, overrides, {"model": model, "max_steps": max_steps, "epochs": epochs, "seed": seed})
    from assay.training.sweep import sweep as run_sweep
    from assay.training.trainer import FineTuneError

    def announce(event: TrainingEvent) -> None:
        if not quiet:
            typer.echo(event.message, err=True)

    try:
        with _Progress(quiet, "point") as progress:
            report = run_sweep(spec, data, out, learning_rates, sizes, validation=validation, on_event=progress,
                               on_point=announce)
    except FineTuneError as exc:
        _fail(str(exc))
        return
    from assay.training.report import render_sweep_markdown

    typer.echo(render_sweep_markdown(report))
    typer.echo(f"heatmap: {(out / 'sweep.html').resolve()}")
    if report.best is None:
        raise typer.Exit(1)


def generate(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    model: Annotated[str, typer.Option(help="Base model name, folder, .gguf file or hub id.")] = "smollm2-135m-instruct",
    adapter: Annotated[Path | None, typer.Option(help="A LoRA adapter folder (OUT/adapter of a fine-tune).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding.")] = 0.0,
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling.")] = 0,
) -> None:
    """Answer PROMPT with a model (and adapter), through its chat template: a quick look at a fine-tune."""
    if max_new_tokens <= 0:
        _fail("--max-new-tokens must be positive")
    if temperature < 0:
        _fail("--temperature must be 0 or more")
    from assay.training.generate import generate as run
    from assay.training.generate import load_for_inference
    from assay.training.models import ModelError

    try:
        loaded = load_for_inference(model, adapter)
    except (ModelError, ValueError, OSError) as exc:
        _fail(str(exc).splitlines()[0])
        return
    typer.echo(run(loaded, [prompt], max_new_tokens=max_new_tokens, temperature=temperature, system=system,
                   seed=seed)[0])


def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    lineage: Annotated[bool, typer.Option("--lineage", help="The trained models in the registry (fine-tuned, cycle) "
                                                            "with their lineage, instead of base models.")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="With --lineage: the service's data folder "
                                                                     "[env: ASSAY_DATA_DIR].")] = None,
) -> None:
    """Built-in and added models, and whether each is ready to load without a conversion."""
    import json

    if lineage:
        from assay.api.cli_cycle import models_with_lineage

        models_with_lineage(data_dir, None, as_json)
        return

    from assay.training.models import ModelError, is_ready, list_models

    try:
        refs = list_models()
    except ModelError as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps([dict(r.model_dump(), ready=is_ready(r)) for r in refs], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "kind", "ready", "source")
    for ref in refs:
        table.add_row(ref.name, ref.kind, "yes" if is_ready(ref) else "on first use", ref.source)
    Console().print(table)


def models_show(name: Annotated[str, typer.Argument(help="A model name, folder, .gguf file or hub id.")]) -> None:
    """Where a model comes from, whether it is ready, and its architecture when local."""
    import json

    from assay.training.models import ModelError, describe, resolve_model

    try:
        info = describe(resolve_model(name))
    except ModelError as exc:
        _fail(str(exc))
        return
    typer.echo(json.dumps(info, indent=2, default=str))


def models_add(
    name: Annotated[str, typer.Argument(help="The new name (lowercase letters, digits, '.', '_', '-').")],
    path: Annotated[str, typer.Argument(help="A Hugging Face model folder, a .gguf file or a hub id.")],
) -> None:
    """Register NAME for a local folder, GGUF file or hub id (stored in ASSAY_HOME/models.json)."""
    from assay.training.models import ModelError, add_model

    try:
        ref = add_model(name, path)
    except ModelError as exc:
        _fail(str(exc))
        return
    typer.echo(f"added {ref.name}: {ref.kind} {ref.source}")


def models_prepare(name: Annotated[str, typer.Argument(help="A model name, .gguf file or folder.")]) -> None:
    """Build or convert a model into the cache now (SmolLM2: GGUF -> Hugging Face folder, about 30 s once)."""
    from assay.training.models import ModelError, local_model_path

    try:
        path = local_model_path(name)
    except ModelError as exc:
        _fail(str(exc))
        return
    typer.echo(f"{name}: {path}")
