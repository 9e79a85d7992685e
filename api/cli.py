"""The `assay` command line. Heavy libraries load inside the commands, so `assay --help` is instant."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="assay",
    help="Assay: clean JSONL datasets, fine-tune small models with LoRA, and prove they got better.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="Export and check the JSON Schemas of the data contracts.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")

FORMATS = ("auto", "chat", "instruction", "prompt_completion", "text")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="A dataset: .jsonl, .jsonl.gz, .json (array), .parquet, .csv, .tsv, "
                                              "a folder of shards or a Hugging Face dataset folder.")],
    format: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")] = "auto",
    rejects: Annotated[Path | None, typer.Option(
        help="Write rejected records, raw, with reasons: JSONL, or Parquet when the name ends in .parquet.")] = None,
    split: Annotated[str | None, typer.Option(
        help="The split of a Hugging Face dataset folder to read (default: train, or its only split).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")] = False,
    max_line_bytes: Annotated[int, typer.Option(help="Reject lines longer than this many bytes.")] = 1 << 20,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Check every record of FILE. Exit 0: all valid; 1: some rejected; 2: file unreadable or bad arguments."""
    import orjson

    from assay.curation.validate import InputFileError, validate_file
    from assay.schemas.records import RecordFormat
    from assay.schemas.validation import ValidateConfig

    if format not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}, got '{format}'")
    if max_line_bytes <= 0:
        _fail("--max-line-bytes must be positive")
    config = ValidateConfig(format=None if format == "auto" else RecordFormat(format), max_line_bytes=max_line_bytes,
                            split=split)
    from assay.curation.publish import OutputError, refuse_overwriting_inputs

    sink = None
    if rejects is not None:
        try:
            refuse_overwriting_inputs([file], [rejects])
            sink = _RejectsFile(rejects)
        except OutputError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"cannot write --rejects {rejects}: {exc.strerror}")

    def write_reject(item: Any) -> None:
        assert sink is not None
        sink.write(orjson.dumps(item.to_json()) + b"\n")

    try:
        with _progress(file, quiet or as_json) as on_progress:
            summary = validate_file(file, config, rejects=write_reject if sink else None, on_progress=on_progress)
        if sink is not None:
            sink.commit()
    except InputFileError as exc:
        _fail(str(exc))
        return
    except OSError as exc:  # writing the rejects failed (a full disk, say); reading errors are InputFileError
        _fail(f"cannot write --rejects {rejects}: {exc.strerror or exc}")
        return
    finally:
        if sink is not None:
            sink.close()
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        _print_summary(summary, rejects)
    raise typer.Exit(0 if summary.ok else 1)


class _RejectsFile:
    """The --rejects output: written under a temporary name and renamed when validation finished, so an
    existing rejects file is replaced only by a complete one. Devices and pipes are written directly."""

    def __init__(self, path: Path) -> None:
        import tempfile

        if path.is_dir():
            raise OSError(21, "is a folder; give a file name")
        self.path = path
        self.direct = path.exists() and not path.is_file()  # /dev/stdout, a named pipe
        self.parquet = path.suffix.lower() == ".parquet" and not self.direct
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.direct:
            self.temp = path
            self.handle = path.open("wb")
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            self.temp = Path(name)
            self.handle = open(fd, "wb")  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def commit(self) -> None:
        self.handle.close()
        if self.parquet:  # written as JSONL, converted once complete
            from assay.curation.table_output import jsonl_to_parquet

            converted = self.temp.with_name(self.temp.name + ".parquet")
            try:
                jsonl_to_parquet(self.temp, converted, "rejects")
                self.temp.unlink()
            except BaseException:
                converted.unlink(missing_ok=True)
                raise
            self.temp = converted
        if not self.direct:
            import os

            os.replace(self.temp, self.path)

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(OSError):  # the write error, if any, was reported already
            self.handle.close()
        if not self.direct:
            self.temp.unlink(missing_ok=True)


class _progress:
    """A byte-based progress bar on a terminal for files over a few MB; silent otherwise."""

    def __init__(self, path: Path, quiet: bool) -> None:
        self.enabled = not quiet and sys.stdout.isatty() and path.is_file() and path.stat().st_size > 8 << 20
        self.total = path.stat().st_size if path.is_file() else 0

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress("validating", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        self.bar.start()
        self.task = self.bar.add_task("validate", total=self.total)
        return lambda done: self.bar.update(self.task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.update(self.task, completed=self.total)
            self.bar.stop()


def _print_summary(summary: Any, rejects: Path | None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    fmt = summary.format.value if summary.format else "unknown"
    how = "detected" if summary.format_detected else "given"
    console.print(f"[bold]{summary.path}[/bold]: format {fmt} ({how}) {summary.format_note and '- ' + summary.format_note}")
    rate = summary.records_read / summary.seconds if summary.seconds else 0.0
    console.print(f"{summary.records_read} records: [green]{summary.valid} valid[/green], "
                  f"[red]{summary.rejected} rejected[/red]; {summary.blank} blank lines; "
                  f"{summary.bytes_read / 1e6:.1f} MB in {summary.seconds:.2f} s ({rate:,.0f} records/s)")
    if summary.warnings:
        console.print("warnings: " + ", ".join(f"{k} x{v}" for k, v in sorted(summary.warnings.items())))
    if summary.errors_by_code:
        table = Table("error", "count", title="rejected by reason")
        for code, count in sorted(summary.errors_by_code.items(), key=lambda kv: -kv[1]):
            table.add_row(code, str(count))
        console.print(table)
        for err in summary.first_errors[:10]:
            if err.file is not None:
                where = f"{err.file} row {err.row}"
            else:
                where = f"line {err.line}" if err.line is not None else f"record {err.record}"
            where += f", column {err.column}" if err.column else ""
            where += f", {'column' if err.file is not None else 'field'} {err.field}" if err.field else ""
            console.print(f"  {where}: [red]{err.code.value}[/red]: {escape(err.message)}", highlight=False)
        if rejects is not None:
            console.print(f"rejected lines written to {rejects}")


def _step_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` one option per flag the registered steps declare (see schemas/registry.py).

    Typer reads options off the function's signature: the flags are added to it as keyword-only
    parameters named SECTION__FIELD, and arrive in the command's `**step_flags`.
    """
    import inspect

    from assay.schemas import registry

    signature = inspect.signature(command, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {"--out", "-o", "--config", "-c", "--steps", "--tokenizer", "--set", "--quiet", "-q", "--help",
             "--output-format", "--fail-on-empty"}
    added = []
    for step in registry.STEPS:
        for flag in step.flags:
            if flag.flag in taken:
                raise ValueError(f"step {step.name}: {flag.flag} is an option of `assay curate` already")
            taken.add(flag.flag)
            field = step.config.model_fields[flag.field]
            value_type, choices = _flag_type(field.annotation, f"{step.name}.{flag.field}")
            help_text = flag.help or field.description or ""
            if choices:
                help_text += f" One of: {', '.join(choices)}."
            option = typer.Option(flag.flag, help=f"{help_text} (spec: {step.name}.{flag.field})")
            added.append(inspect.Parameter(f"{step.name}__{flag.field}", inspect.Parameter.KEYWORD_ONLY,
                                           default=None, annotation=Annotated[value_type | None, option]))
    command.__signature__ = signature.replace(parameters=[*fixed, *added])  # type: ignore[attr-defined]
    command.__doc__ = (f"{inspect.cleandoc(command.__doc__ or '')}\n\n"
                       f"Steps: validate (always first), {', '.join(registry.step_names())}.")
    return command


def _flag_type(annotation: Any, where: str) -> tuple[Any, list[str]]:
    """The option type for a section field: its scalar type, list[...] for a repeatable option;
    a Literal is read as text (with its choices for --help) and checked by the spec."""
    import types
    import typing

    if typing.get_origin(annotation) is typing.Annotated:  # e.g. ServerPath: a str with a marker
        annotation = typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0], where)
    if typing.get_origin(annotation) is list:
        item, _ = _flag_type(typing.get_args(annotation)[0], where)
        return list[item], []  # type: ignore[valid-type]
    if typing.get_origin(annotation) is typing.Literal:
        return str, [str(a) for a in typing.get_args(annotation)]
    if annotation in (str, int, float, bool):
        return annotation, []
    raise TypeError(f"{where}: a command-line flag cannot set a field of type {annotation}")


@app.command()
@_step_flags
def curate(
    input: Annotated[Path, typer.Argument(help="The dataset to curate: .jsonl, .jsonl.gz, .json, .parquet, .csv, "
                                               ".tsv, a folder of shards or a Hugging Face dataset folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A curation spec (YAML).")] = None,
    steps: Annotated[str | None, typer.Option(help="Comma-separated steps, e.g. validate,pii,dedup,balance.")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer (path or hub id) for token-length stats.")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override one spec value, SECTION.KEY=VALUE (VALUE read as YAML); repeatable. "
                      "E.g. --set pii.operator=hash --set dedup.threshold=0.7")] = None,
    fail_on_empty: Annotated[bool, typer.Option(
        "--fail-on-empty", help="Exit 2 (no_valid_records) and publish nothing when no record is left; "
                                "without it an empty result is published with a warning.")] = False,
    output_format: Annotated[str | None, typer.Option(
        "--output-format", help="jsonl (curated.jsonl, rejected.jsonl) or parquet (curated.parquet, "
                                "rejected.parquet; zstd). Default: the spec's output_format, jsonl.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    **step_flags: Any,
) -> None:
    """Run the curation pipeline on INPUT and write the curated set, the rejects and the quality report.

    Each step's own options (e.g. --dedup-threshold, --max-share) set a field of its spec section.
    """
    from pydantic import ValidationError

    from assay.curation.reader import InputFileError
    from assay.schemas.curation import CurationSpec

    try:
        spec_data: dict[str, Any] = {}
        if config is not None:
            spec_data = CurationSpec.from_yaml(config).model_dump(by_alias=True, exclude_unset=True)
        for item in overrides or ():
            _apply_override(spec_data, item)
        if steps is not None:
            spec_data["steps"] = [s.strip() for s in steps.split(",") if s.strip()]
        if fail_on_empty:
            spec_data["fail_on_empty"] = True
        if output_format is not None:
            spec_data["output_format"] = output_format
        given = {name: value for name, value in {**step_flags, "report__tokenizer": tokenizer}.items()
                 if value is not None and value != []}
        for name, value in given.items():
            section, _, key = name.partition("__")
            spec_data.setdefault(section, {})[key] = value
        spec = CurationSpec.model_validate(spec_data)
        idle = sorted({name.partition("__")[0] for name in step_flags if name in given} - set(spec.steps))
        if idle:
            raise ValueError(f"options of the {', '.join(idle)} step were given, but it is not among the steps of "
                             f"this run ({', '.join(spec.steps)}); add it with --steps or in the spec")
    except FileNotFoundError as exc:
        _fail(f"cannot read --config: {exc.filename}: no such file")
        return
    except ValidationError as exc:
        _fail(_spec_error(exc, config))
        return
    except ValueError as exc:
        _fail(str(exc))
        return
    from assay.curation.pipeline import run_pipeline
    from assay.curation.publish import (
        OutputError,
        Terminated,
        output_paths,
        refuse_overwriting_inputs,
        signals_raise,
    )
    from assay.curation.steps import StepConfigError

    _log_to_stderr()
    run_before = _published_run(out)
    try:
        refuse_overwriting_inputs([config], output_paths(out))
        # SIGTERM and SIGHUP become an exception, so the run's work folder is removed on the way out.
        with signals_raise(), _StepProgress(quiet) as progress:
            report = run_pipeline(spec, input, out, progress=progress)
    except (InputFileError, StepConfigError, OutputError) as exc:
        _fail(str(exc))
        return
    except (Terminated, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Terminated) else 2
        # A signal held during the publish arrives once it is complete: say so rather than "nothing".
        run_after = _published_run(out)
        outcome = ("the run was complete and its outputs were published to"
                   if run_after is not None and run_after != run_before
                   else "the run stopped and nothing new was published to")
        _fail(f"{exc or 'interrupted by SIGINT'}: {outcome} {out}", 128 + signum)
        return
    from assay.curation.report import render_markdown

    if not quiet:
        typer.echo(render_markdown(report))

    typer.echo(f"curated {report.records_out} of {report.records_in} records -> "
               f"{out / ('curated.' + spec.output_format)}")
    typer.echo(f"report: {(out / 'report.html').resolve()}")


def _published_run(out: Path) -> str | None:
    """The run id of the complete run published in `out`, if there is one."""
    from assay.curation.publish import MANIFEST, OutputError, published_outputs

    try:
        published_outputs(out)
        return str(json.loads((out / MANIFEST).read_text())["run"])
    except (OutputError, OSError, ValueError, KeyError):
        return None


def _log_to_stderr() -> None:
    """Warnings of the library (an empty result, ignored corpus records) as `warning: ...` lines."""
    import logging

    class Lowercase(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"{record.levelname.lower()}: {record.getMessage()}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Lowercase())
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("assay")
    logger.addHandler(handler)
    logger.propagate = False


def _apply_override(spec_data: dict[str, Any], item: str) -> None:
    import yaml

    path, sep, raw = item.partition("=")
    keys = [k for k in path.strip().split(".") if k]
    if not sep or not keys:
        raise ValueError(f"--set needs SECTION.KEY=VALUE, got '{item}'")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"--set {path}: the value is not valid YAML: {exc}") from exc
    node = spec_data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"--set {path}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def _spec_error(exc: Any, config: Path | None) -> str:
    where = f"{config}: " if config else ""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}unknown key '{loc}'")
        else:
            lines.append(f"{where}{loc}: {err['msg']}")
    return "invalid curation spec:\n  " + "\n  ".join(lines)


class _StepProgress:
    """Per-step records/s on stderr while the pipeline runs (a live table on terminals)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.rows: dict[str, tuple[int, int, float]] = {}
        self.live: Any = None

    def __enter__(self) -> Any:
        if self.quiet:
            return None
        from rich.console import Console
        from rich.live import Live

        self.live = Live(self._table(), console=Console(stderr=True), refresh_per_second=4, transient=False)
        self.live.start()
        return self.update

    def update(self, step: str, records_in: int, kept: int, seconds: float) -> None:
        self.rows[step] = (records_in, kept, seconds)
        self.live.update(self._table())

    def _table(self) -> Any:
        from rich.table import Table

        table = Table("step", "in", "kept", "records/s")
        for step, (n_in, kept, seconds) in self.rows.items():
            table.add_row(step, f"{n_in:,}", f"{kept:,}", f"{n_in / seconds:,.0f}" if seconds > 0 else "-")
        return table

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()


@schemas_app.command("export")
def schemas_export(
    out: Annotated[Path, typer.Option(help="Folder for the *.json files.")] = Path(__file__).parent.parent / "schemas" / "json",
) -> None:
    """Write the JSON Schema of every record format, spec and report to OUT."""
    from assay.schemas.export import export_schemas

    for path in export_schemas(out):
        typer.echo(str(path))


@schemas_app.command("check")
def schemas_check(
    folder: Annotated[Path, typer.Option(help="Folder holding the exported *.json files.")] = Path(__file__).parent.parent / "schemas" / "json",
) -> None:
    """Exit 1 when the exported JSON Schemas differ from the models."""
    from assay.schemas.export import stale_schemas

    stale = stale_schemas(folder)
    for name in stale:
        typer.echo(f"out of date: {folder / name} (run `assay schemas export`)", err=True)
    raise typer.Exit(1 if stale else 0)


@app.command("make-tiny-model")
def make_tiny_model(
    out: Annotated[Path, typer.Argument(help="Folder to write the model and tokenizer to.")],
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 2048,
    hidden_size: Annotated[int, typer.Option(help="Hidden size.")] = 64,
    layers: Annotated[int, typer.Option(help="Decoder layers.")] = 2,
    seed: Annotated[int, typer.Option(help="Random seed for weights.")] = 0,
) -> None:
    """Build a tiny Llama-architecture causal LM offline (random weights, locally trained BPE, chat template)."""
    from assay.training.tiny import build_tiny_model

    path = build_tiny_model(out, vocab_size=vocab_size, hidden_size=hidden_size, num_layers=layers, seed=seed)
    typer.echo(f"tiny model written to {path}")


def _register_optional() -> None:
    # The service's commands (serve, keys) live with the service.
    import importlib.util

    if importlib.util.find_spec("assay.api.cli_serve") is not None:
        from assay.api.cli_serve import register

        register(app)
    # Training commands (finetune, sweep, generate, models) live in their own module.
    from assay.api.cli_train import register as register_training

    register_training(app)
    from assay.api.cli_eval import register as register_eval

    register_eval(app)
    from assay.api.cli_judge import register as register_judge  # serve-model, judge

    register_judge(app)


_register_optional()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
