"""`assay serve-model`, `assay judge` (run, calibrate, mt-bench): registered on the main CLI by `register(app)`.

Heavy imports (torch, transformers, fastapi) stay inside the commands.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup


class _DefaultRunGroup(TyperGroup):
    """`assay judge DATA ...` means `assay judge run DATA ...`; `calibrate` and `mt-bench` are subcommands."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


judge_app = typer.Typer(cls=_DefaultRunGroup, no_args_is_help=True,
                        help="Judge responses with an LLM and a rubric: `assay judge DATA.jsonl --rubric R.yaml ...`, "
                             "`assay judge calibrate`, `assay judge mt-bench`.")


def register(app: typer.Typer) -> None:
    app.command("serve-model")(serve_model)
    app.add_typer(judge_app, name="judge")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def resolve_model_dir(name: str) -> Path:
    """A model name through the model registry when it is installed, else a local Hugging Face folder."""
    if importlib.util.find_spec("assay.training.models") is not None:
        registry = importlib.import_module("assay.training.models")
        resolve = getattr(registry, "resolve_model", None)
        local = getattr(registry, "local_model_path", None)
        if resolve is not None and local is not None:
            try:
                return Path(local(resolve(name)))
            except ValueError as exc:
                raise ValueError(str(exc)) from exc
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise ValueError(f"model '{name}' is not a Hugging Face model folder (no config.json); build one with "
                     "`assay make-tiny-model DIR` or give a folder")


def _served_name(name: str, folder: Path) -> str:
    return folder.name if os.sep in name or name.startswith(".") else name


def _parse_adapters(values: list[str] | None) -> dict[str, str]:
    adapters: dict[str, str] = {}
    for value in values or ():
        name, sep, folder = value.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ValueError(f"--adapter needs NAME=DIR, got '{value}'")
        if name in adapters:
            raise ValueError(f"--adapter: the name '{name}' is given twice")
        if not (Path(folder) / "adapter_config.json").is_file():
            raise ValueError(f"--adapter {name}: {folder} has no adapter_config.json (not a LoRA adapter folder)")
        adapters[name.strip()] = folder.strip()
    return adapters


def serve_model(
    model: Annotated[str, typer.Option("--model", "-m", help="Base model: a registry name or a Hugging Face folder.")],
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", help="A LoRA adapter served under NAME: NAME=DIR; repeatable.")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; anything but loopback needs API keys or --insecure.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8001,
    served_name: Annotated[str | None, typer.Option(
        help="The base model's name in requests and /v1/models (default: the --model name or folder name).")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Most sequences decoded together.")] = 8,
    max_tokens_default: Annotated[int, typer.Option(help="Completion length when a request gives no max_tokens.")]
    = 512,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda when available).")] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for decoding [env: ASSAY_TORCH_THREADS; default 1, 0 = torch's default].")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Also accept the API keys stored by `assay keys add` in this server data folder.")] = None,
    rate_limit: Annotated[float, typer.Option(help="Requests per second per key; 0 for no limit.")] = 0.0,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback interface without API keys.")]
    = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve a model and its LoRA adapters with OpenAI's API: /v1/chat/completions (streaming too),
    /v1/completions, /v1/models. The request's `model` picks the base or an adapter."""
    from assay.api.settings import env_api_keys, is_loopback

    try:
        folder = resolve_model_dir(model)
        adapters = _parse_adapters(adapter)
        if max_batch_size < 1 or max_tokens_default < 1:
            raise ValueError("--max-batch-size and --max-tokens-default must be at least 1")
        if data_dir is not None and not data_dir.is_dir():
            raise ValueError(f"--data-dir {data_dir} is not a folder")
    except ValueError as exc:
        _fail(str(exc))
        return
    keys = env_api_keys()
    stored = data_dir is not None and _stored_keys(data_dir)
    if not keys and not stored and not is_loopback(host):
        if not insecure:
            _fail(f"refusing to listen on {host} without API keys: set ASSAY_API_KEYS, use --data-dir with keys "
                  "from `assay keys add`, bind 127.0.0.1, or pass --insecure.")
        typer.echo(f"warning: listening on {host} with no API keys: anyone who can reach it can use it.", err=True)
    import logging

    import uvicorn

    from assay.api.model_server import ModelServerConfig, create_model_app
    from assay.evaluation.inference import GenerationError, InferenceEngine

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    try:
        engine = InferenceEngine.load(folder, dict(adapters), device=device, dtype=dtype, max_batch_size=max_batch_size,
                                      threads=threads)
    except (GenerationError, OSError, ValueError) as exc:
        _fail(f"cannot load {model}: {exc}")
        return
    config = ModelServerConfig(base_name=served_name or _served_name(model, folder),
                               max_tokens_default=max_tokens_default, api_keys=keys, rate_limit_per_s=rate_limit,
                               host=host, data_dir=str(data_dir) if data_dir else None)
    typer.echo(f"serving {config.base_name} ({folder}) with adapters: {', '.join(adapters) or 'none'} "
               f"on http://{host}:{port}/v1", err=True)
    uvicorn.run(create_model_app(engine, config), host=host, port=port, log_level=log_level)


def _stored_keys(data_dir: Path) -> bool:
    from assay.api.model_server import _KeyStore

    store = _KeyStore(str(data_dir))
    try:
        return bool(store.key_hashes())
    finally:
        store.dispose()


# -- judge --------------------------------------------------------------------------------------------------
def _backend(judge_model: str, judge_url: str | None, judge_key: str | None, *, timeout: float, attempts: int,
             cache: Path | None, no_cache: bool, logprobs: bool) -> Any:
    from assay.evaluation.judge.backends import make_backend

    return make_backend(judge_model, judge_url, judge_key, resolve_model_dir=resolve_model_dir, timeout_s=timeout,
                        max_attempts=attempts, cache_path=cache, use_cache=not no_cache, logprobs=logprobs)


class _Progress:
    """Judgments done / total on stderr, on terminals only."""

    def __init__(self, quiet: bool, label: str) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.label = label
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress(self.label, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True))
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=None)
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _run_judge(items: list[Any], rubric: Any, backend: Any, settings: Any, out: Path, quiet: bool,
               data_path: str | None = None, data_sha: str | None = None) -> Any:
    from assay.evaluation.judge.backends import JudgeBackendError
    from assay.evaluation.judge.engine import JudgeRun
    from assay.evaluation.judge.prompts import TemplateError
    from assay.evaluation.judge.report import write_outputs

    async def main() -> Any:
        try:
            with _Progress(quiet, "judging") as on_progress:
                return await JudgeRun(rubric, backend, settings, on_progress).run(items)
        finally:
            await backend.aclose()

    try:
        report, verdicts = asyncio.run(main())
    except TemplateError as exc:
        _fail(str(exc))
    except JudgeBackendError as exc:
        _fail(str(exc), code=1)
    report.data_path, report.data_sha256 = data_path, data_sha
    paths = write_outputs(out, report, verdicts)
    if not quiet:
        from assay.evaluation.judge.report import render_markdown

        typer.echo(render_markdown(report))
    typer.echo(f"verdicts: {paths['verdicts']}\nreport: {paths['html'].resolve()}")
    return report


JudgeModel = Annotated[str, typer.Option(
    "--judge-model", help="Judge: the model name at --judge-url, or (without a URL) a registry name or local folder "
                          "loaded in this process.")]
JudgeUrl = Annotated[str | None, typer.Option(
    "--judge-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8001/v1 (vLLM, Ollama, llama.cpp, "
                        "`assay serve-model`, OpenAI).")]
JudgeKey = Annotated[str | None, typer.Option(
    "--judge-key", help="Bearer key for --judge-url [env: ASSAY_JUDGE_API_KEY or OPENAI_API_KEY].")]
Samples = Annotated[int, typer.Option(help="Judge samples per judgment (median score / majority choice).")]
Concurrency = Annotated[int, typer.Option(help="Judge requests in flight at once.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the response cache.")]
CachePath = Annotated[Path | None, typer.Option(
    help="Response cache file [default: $ASSAY_HOME/judge_cache.sqlite].")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for one judge reply.")]
Attempts = Annotated[int, typer.Option(help="HTTP attempts per call (429, 5xx, timeouts are retried).")]
Logprobs = Annotated[bool, typer.Option("--logprobs/--no-logprobs",
                                        help="Ask for top logprobs for probability-weighted scores.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only where the outputs are.")]


def _check_numbers(samples: int, concurrency: int, limit: int | None) -> None:
    if samples < 1 or concurrency < 1:
        raise ValueError("--samples and --concurrency must be at least 1")
    if limit is not None and limit < 1:
        raise ValueError("--limit must be at least 1")


@judge_app.command("run")
def judge_run(
    data: Annotated[Path, typer.Argument(help="JSONL: {id, prompt, response, reference?} (absolute) or "
                                              "{id, prompt, response_a, response_b, label?} (pairwise).")],
    rubric: Annotated[str, typer.Option("--rubric", "-r", help="Rubric YAML, or a built-in: helpfulness, pairwise, "
                                                               "mt-bench, mt-bench-pairwise.")],
    judge_model: JudgeModel,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    judge_url: JudgeUrl = None,
    judge_key: JudgeKey = None,
    samples: Samples = 1,
    concurrency: Concurrency = 4,
    label_field: Annotated[str | None, typer.Option(help="Field holding a human label to measure agreement with.")]
    = None,
    limit: Annotated[int | None, typer.Option(help="Judge only the first N records.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Judge temperature (default: the rubric's).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Judge reply limit (default: the rubric's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed sent with every judge request.")] = 0,
    no_cache: NoCache = False,
    cache: CachePath = None,
    timeout: Timeout = 120.0,
    attempts: Attempts = 6,
    logprobs: Logprobs = True,
    quiet: Quiet = False,
) -> None:
    """Judge every record of DATA with the rubric; write verdicts.jsonl and judge_report.json/html/md to OUT."""
    from pydantic import ValidationError

    from assay.evaluation.judge.engine import DataError, JudgeSettings, file_sha256, load_items
    from assay.evaluation.judge.prompts import TemplateError, check_template
    from assay.evaluation.judge.rubrics import load_rubric

    try:
        _check_numbers(samples, concurrency, limit)
        loaded = load_rubric(rubric)
        check_template(loaded)
        items = load_items(data, loaded.mode, label_field=label_field, limit=limit)
        backend = _backend(judge_model, judge_url, judge_key, timeout=timeout, attempts=attempts, cache=cache,
                           no_cache=no_cache, logprobs=logprobs)
    except ValidationError as exc:
        _fail(_rubric_error(rubric, exc))
        return
    except (DataError, TemplateError, FileNotFoundError, ValueError, OSError) as exc:
        _fail(str(exc))
        return
    settings = JudgeSettings(samples=samples, concurrency=concurrency, label_field=label_field, seed=seed,
                             temperature=temperature, max_tokens=max_tokens, limit=limit)
    _run_judge(items, loaded, backend, settings, out, quiet, str(data), file_sha256(data))


def _rubric_error(rubric: str, exc: Any) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        problems.append(f"unknown key '{loc}'" if err["type"] == "extra_forbidden" else f"{loc}: {err['msg']}"
                        if loc else str(err["msg"]))
    return f"invalid rubric {rubric}: " + "; ".join(problems)


@judge_app.command("calibrate")
def judge_calibrate(
    judge_model: JudgeModel,
    set_name: Annotated[str, typer.Option("--set", help="pandalm (999 pairs, 3 human annotators) or llmbar "
                                                        "(LLMBar Natural, 100 pairs with gold labels).")],
    judge_url: JudgeUrl = None,
    judge_key: JudgeKey = None,
    limit: Annotated[int | None, typer.Option(help="Judge only the first N pairs.")] = None,
    rubric: Annotated[str, typer.Option("--rubric", "-r", help="A pairwise rubric (default: the built-in one).")]
    = "pairwise",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder [default: ./judge-calibration/SET].")]
    = None,
    samples: Samples = 1,
    concurrency: Concurrency = 4,
    no_cache: NoCache = False,
    cache: CachePath = None,
    timeout: Timeout = 120.0,
    attempts: Attempts = 6,
    quiet: Quiet = False,
) -> None:
    """How far a judge agrees with humans: run it on PandaLM's or LLMBar's labelled pairs (read in place from
    $ASSAY_EXTERNAL_DATA/judge) and report agreement, kappa and position consistency; for PandaLM, beside the
    stored GPT-3.5 and PandaLM-7B verdicts on the same items."""
    from pydantic import ValidationError

    from assay.evaluation.judge.datasets import calibration_items, reproduce_pandalm
    from assay.evaluation.judge.engine import DataError, JudgeSettings
    from assay.evaluation.judge.rubrics import load_rubric

    try:
        _check_numbers(samples, concurrency, limit)
        loaded = load_rubric(rubric)
        if loaded.mode != "pairwise":
            raise ValueError(f"calibration compares pairs: rubric {rubric} is {loaded.mode}")
        items = calibration_items(set_name, limit)
        backend = _backend(judge_model, judge_url, judge_key, timeout=timeout, attempts=attempts, cache=cache,
                           no_cache=no_cache, logprobs=False)
    except ValidationError as exc:
        _fail(_rubric_error(rubric, exc))
        return
    except (DataError, FileNotFoundError, ValueError, OSError) as exc:
        _fail(str(exc))
        return
    settings = JudgeSettings(samples=samples, concurrency=concurrency, label_field="label", limit=limit)
    report = _run_judge(items, loaded, backend, settings, out or Path("judge-calibration") / set_name, quiet,
                        f"{set_name} (shared judge data)")
    labels = report.labels
    typer.echo(f"{judge_model} on {set_name} ({labels.n} pairs): agreement {labels.agreement:.3f}, without ties "
               f"{_num(labels.agreement_without_ties)}, Cohen's kappa {_num(labels.cohen_kappa)}, position "
               f"consistency {_num(report.pairwise.position_consistency)}")
    if set_name == "pandalm":
        stored = reproduce_pandalm({item.id for item in items})
        for judge in stored.judges:
            a = judge.agreement
            typer.echo(f"stored {judge.judge} on the same pairs: agreement {_num(a.agreement)}, Cohen's kappa "
                       f"{_num(a.cohen_kappa)}, macro F1 {_num(a.macro_f1)}")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@judge_app.command("mt-bench")
def judge_mt_bench(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the rubric and the prompts.")],
    mode: Annotated[str, typer.Option(help="absolute (1-10 rating) or pairwise.")] = "absolute",
) -> None:
    """Write MT-Bench as a ready-made reference-guided rubric (FastChat's judge prompts) and its 80 first-turn
    prompts with GPT-4 reference answers (prompts.jsonl: add a `response` to each and run `assay judge`)."""
    import orjson
    import yaml

    from assay.evaluation.judge.datasets import mt_bench_items, mt_bench_rubric
    from assay.evaluation.judge.engine import DataError

    if mode not in ("absolute", "pairwise"):
        _fail("--mode must be absolute or pairwise")
    try:
        rubric = mt_bench_rubric(mode)
        items = mt_bench_items()
    except DataError as exc:
        _fail(str(exc))
        return
    out.mkdir(parents=True, exist_ok=True)
    rubric_path = out / f"mt_bench_{mode}.yaml"
    rubric_path.write_text(yaml.safe_dump(rubric.model_dump(mode="json", exclude_none=True), sort_keys=False,
                                          allow_unicode=True), encoding="utf-8")
    prompts_path = out / "prompts.jsonl"
    prompts_path.write_bytes(b"".join(orjson.dumps(item.model_dump(exclude={"response"})) + b"\n" for item in items))
    typer.echo(f"rubric: {rubric_path}\nprompts: {prompts_path} ({len(items)} questions, "
               f"{sum(1 for i in items if i.reference)} with reference answers)")


@judge_app.command("compare")
def judge_compare(
    model: Annotated[str, typer.Option("--model", "-m", help="Base model: a registry name or a local folder.")],
    adapter: Annotated[list[str], typer.Option("--adapter", help="A tuned model as NAME=DIR (LoRA); repeatable.")],
    prompts: Annotated[Path, typer.Option(help="JSONL of {prompt, reference?} or chat records (last user turn).")],
    judge_model: JudgeModel,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (one judge-NAME/ per adapter).")],
    rubric: Annotated[str, typer.Option("--rubric", "-r", help="A pairwise rubric.")] = "pairwise",
    judge_url: JudgeUrl = None,
    judge_key: JudgeKey = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit.")] = 256,
    samples: Samples = 1,
    concurrency: Concurrency = 4,
    no_cache: NoCache = False,
    cache: CachePath = None,
    timeout: Timeout = 120.0,
    attempts: Attempts = 6,
) -> None:
    """Answer the prompts with the base model and each adapter, judge every pair in both orders, and print the
    tuned model's tie-adjusted win rate with its bootstrap interval and a verdict."""
    from pydantic import ValidationError

    from assay.evaluation.judge.backends import JudgeBackendError
    from assay.evaluation.judge.compare import judge_base_vs_tuned, load_prompts
    from assay.evaluation.judge.engine import DataError, JudgeSettings
    from assay.evaluation.judge.prompts import TemplateError, check_template
    from assay.evaluation.judge.rubrics import load_rubric

    try:
        _check_numbers(samples, concurrency, limit)
        loaded = load_rubric(rubric)
        check_template(loaded)
        if loaded.mode != "pairwise":
            raise ValueError(f"comparing models needs a pairwise rubric; {rubric} is {loaded.mode}")
        folder = resolve_model_dir(model)
        adapters = _parse_adapters(adapter)
        if not adapters:
            raise ValueError("give at least one --adapter NAME=DIR")
        items = load_prompts(prompts, limit)
        backend = _backend(judge_model, judge_url, judge_key, timeout=timeout, attempts=attempts, cache=cache,
                           no_cache=no_cache, logprobs=False)
    except ValidationError as exc:
        _fail(_rubric_error(rubric, exc))
        return
    except (DataError, TemplateError, FileNotFoundError, ValueError, OSError) as exc:
        _fail(str(exc))
        return
    settings = JudgeSettings(samples=samples, concurrency=concurrency, limit=limit)
    try:
        results = judge_base_vs_tuned(folder, adapters, items, loaded, backend, settings=settings,
                                      max_new_tokens=max_new_tokens, out_dir=out, base=model)
    except DataError as exc:
        _fail(str(exc))
        return
    except JudgeBackendError as exc:
        _fail(str(exc), code=1)
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparisons.json").write_text("[" + ",\n".join(c.model_dump_json(indent=2) for c in results.values())
                                          + "]\n", encoding="utf-8")
    for name, result in results.items():
        typer.echo(f"{name} vs {model} on {result.prompts} prompts: tuned wins {result.tuned_wins}, base wins "
                   f"{result.base_wins}, ties {result.ties}; tie-adjusted win rate {_num(result.tie_adjusted_win_rate)} "
                   f"[{_num(result.ci_low)}, {_num(result.ci_high)}], position consistency "
                   f"{_num(result.position_consistency)}: {result.verdict}")
    typer.echo(f"comparisons: {out / 'comparisons.json'}")
