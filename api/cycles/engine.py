"""One run of a retrain cycle: collect new data -> triggers -> curate -> train the challenger -> evaluate
challenger and champion on the same items -> gate -> report -> promote or keep.

Every stage writes into its own folder of the run folder (data_dir/cycles/NAME/runs/NNNN-ID/) and its timing
and figures into the run's row. A stage that raises fails the run with its reason; the champion, the
cycle's seen records and its corpus only change in the last step, one transaction (`CycleStore.complete_run`).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import logging
import os
import secrets
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from assay.api.cycle_store import CycleStore
from assay.evaluation.tasks import file_sha256
from assay.schemas.cycle import CycleConfig, CycleError, GateDecision
from assay.schemas.evaluation import BenchmarkReport, EvalSpec, TaskSpec

log = logging.getLogger("assay.cycles")
Emit = Callable[[str], None]
LOCK_LEASE_S = 120.0


class StageFailed(Exception):
    """A stage could not finish; the run fails with this message."""


class CycleCancelled(Exception):
    """The run was asked to stop."""


def cycle_folder(data_dir: Path, name: str) -> Path:
    return data_dir / "cycles" / name


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


@dataclass
class RunState:
    """What one run knows: its config, row, folder and the figures each stage adds."""

    cycles: CycleStore
    config: CycleConfig
    run: dict[str, Any]
    data_dir: Path
    files_dir: Path | None
    emit: Emit
    should_stop: Callable[[], bool]
    stages: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return Path(self.run["folder"])

    @property
    def champion(self) -> str | None:
        return self.run["champion_before"]

    def relative(self, path: Path) -> str:
        """A path inside the data folder as stored in the database (relative, so the folder can move)."""
        try:
            return str(path.resolve().relative_to(self.data_dir.resolve()))
        except ValueError:
            return str(path)

    def absolute(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.data_dir / path

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a stage, record its figures and status; any exception fails it with a one-line reason."""
        if self.should_stop():
            raise CycleCancelled(f"cancelled before stage {name}")
        self.cycles.update_run(self.run["id"], stage=name)
        self.emit(f"stage {name} started")
        figures: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            yield figures
        except CycleCancelled:
            self.stages[name] = {**figures, "status": "cancelled", "seconds": round(time.perf_counter() - started, 3)}
            raise
        except Exception as exc:
            seconds = round(time.perf_counter() - started, 3)
            if type(exc).__name__ == "EvaluationCancelled":  # the evaluation saw the stop request
                self.stages[name] = {**figures, "status": "cancelled", "seconds": seconds}
                raise CycleCancelled(f"cancelled during stage {name}") from exc
            reason = _reason(exc)
            (self.folder / f"{name}.error.txt").write_text(traceback.format_exc(), encoding="utf-8")
            self.stages[name] = {**figures, "status": "failed", "seconds": seconds, "error": reason}
            raise StageFailed(f"stage {name} failed: {reason}") from exc
        seconds = round(time.perf_counter() - started, 3)
        self.stages[name] = {**figures, "status": "done", "seconds": seconds}
        self.cycles.update_run(self.run["id"], stages=self.stages)
        self.emit(f"stage {name} done in {seconds:.1f} s")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    known = ("FineTuneError", "EvalInputError", "InputFileError", "PipelineError", "StepConfigError", "StageFailed",
             "CycleError", "NoValidRecords", "ModelError", "JudgeBackendError")
    return text if type(exc).__name__ in known and text else f"{type(exc).__name__}: {text}"


# --- collect ------------------------------------------------------------------------------------------------


def source_files(state: RunState) -> list[Path]:
    source = state.config.data
    if source.path is not None:
        root = Path(source.path)
        if not root.exists() and not glob.has_magic(source.path):
            raise CycleError(f"data.path {source.path} does not exist")
        if root.is_dir():
            found = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz")))
        else:
            found = sorted(Path(p) for p in glob.glob(source.path, recursive=True) if Path(p).is_file())
        return found
    if state.files_dir is None:
        raise CycleError("data.file_ids needs the service's file store (run the cycle through `assay serve`, or "
                         "give --data-dir of that server)")
    paths = []
    for file_id in source.file_ids:
        row = state.cycles.store.get_file(file_id)
        if row is None:
            raise CycleError(f"data.file_ids: no such file {file_id!r}")
        paths.append(state.files_dir / row["storage_name"])
    return paths


def _lines(path: Path) -> Iterator[bytes]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield line.strip()


def record_hash(line: bytes) -> tuple[str, Any]:
    """The record's content hash (its JSON with sorted keys, so key order and spacing do not matter; the raw
    bytes for a line that is not JSON) and the parsed record (None then)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return hashlib.sha256(line).hexdigest(), None
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest(), record


def collect(state: RunState, figures: dict[str, Any]) -> Path:
    """Records not seen by an earlier completed run, ids made unique across runs, into collect/new.jsonl."""
    files = source_files(state)  # none yet (an empty inbox) is no new data, for the triggers to judge
    out_dir = state.folder / "collect"
    out_dir.mkdir(parents=True, exist_ok=True)
    hashed: list[tuple[str, bytes, Any]] = []
    repeats = 0
    batch_seen: set[str] = set()
    for path in files:
        for line in _lines(path):
            digest, record = record_hash(line)
            if digest in batch_seen:
                repeats += 1
                continue
            batch_seen.add(digest)
            hashed.append((digest, line, record))
    known = state.cycles.seen_hashes(state.config.name, batch_seen)
    prefix = f"r{state.run['number']:04d}"
    target = out_dir / "new.jsonl"
    new = 0
    with target.open("wb") as out:
        for digest, line, record in hashed:
            if digest in known:
                continue
            if isinstance(record, dict):
                record = {**record, "id": f"{prefix}-{record.get('id', new)}"}
                line = orjson.dumps(record)
            out.write(line + b"\n")
            state.seen.append(digest)
            new += 1
    figures.update(files=len(files), lines=len(hashed) + repeats, repeated_in_batch=repeats,
                   already_seen=len(hashed) - new, new_records=new, sha256=file_sha256(target))
    state.summary["data"] = {"new_records": new, "already_seen": len(hashed) - new}
    return target


# --- triggers -------------------------------------------------------------------------------------------------


def trigger_reasons(state: RunState, new_file: Path, new: int, figures: dict[str, Any]) -> tuple[bool, str]:
    """Whether the run goes ahead, and why."""
    triggers = state.config.triggers
    reasons = []
    go = False
    if triggers.min_new_records > 0 or triggers.drift is None:
        enough = new >= triggers.min_new_records
        go = go or enough
        reasons.append(f"{new} new records ({'>=' if enough else '<'} {triggers.min_new_records})")
    if triggers.drift is not None and new > 0:
        drift = triggers.drift
        value = champion_on_fresh_data(state, new_file, drift.metric, drift.limit)
        drifted = value > drift.threshold
        figures["drift"] = {"metric": drift.metric, "value": value, "threshold": drift.threshold, "fired": drifted}
        go = go or drifted
        reasons.append(f"champion {drift.metric} on fresh data {value:.4g} "
                       f"({'>' if drifted else '<='} {drift.threshold:g})")
    return go, "; ".join(reasons)


def champion_on_fresh_data(state: RunState, new_file: Path, metric: str, limit: int) -> float:
    from assay.evaluation.run import evaluate

    adapters, reference = champion_adapters(state)
    spec = EvalSpec(model=state.config.training.spec.model, adapters=adapters, reference=reference,
                    tasks=[TaskSpec(format="ppl", path=str(new_file), name="fresh")], limit=limit,
                    batch_size=state.config.evaluation.batch_size, device=state.config.evaluation.device,
                    seed=state.config.evaluation.seed, bootstrap_samples=100)
    report = evaluate(spec, state.folder / "drift", should_stop=state.should_stop)
    score = report.tasks[0].score(reference, metric)
    if score is None:
        raise CycleError(f"the drift check found no {metric} for the champion")
    return float(score.value)


def champion_adapters(state: RunState) -> tuple[list[str], str]:
    """The champion as an evaluation adapter (`champion=DIR`) and the reference label; the base model when the
    cycle has no champion yet."""
    if state.champion is None:
        return [], "base"
    model = state.cycles.store.get_model(state.champion, include_deleted=True)
    if model is None:
        raise CycleError(f"the champion {state.champion} is not in the model registry")
    return [f"champion={state.absolute(model['adapter_dir'])}"], "champion"


# --- curate -----------------------------------------------------------------------------------------------------


def previous_outputs(state: RunState) -> dict[str, Any]:
    """The corpus and dedup index of the cycle's last completed run (empty for the first)."""
    for run in reversed(state.cycles.list_runs(state.config.name)):
        if run["status"] == "succeeded" and run["id"] != state.run["id"]:
            return dict((run.get("summary") or {}).get("outputs", {}))
    return {}


def curate(state: RunState, new_file: Path, figures: dict[str, Any]) -> tuple[Path, Path]:
    """Curate the new records against everything curated before; returns (curated new records, corpus)."""
    from assay.curation.pipeline import run_pipeline
    from assay.curation.report import write_reports
    from assay.evaluation.joined import curation_summary

    previous = previous_outputs(state)
    out_dir = state.folder / "curate"
    index_dir = state.folder / "index"
    data = state.config.curation.model_dump()
    dedup = dict(data.get("dedup") or {})
    if previous.get("index"):
        dedup["against"] = [*dedup.get("against", []), str(state.absolute(previous["index"]))]
    dedup["save_index"] = str(index_dir)
    dedup["decontaminate"] = [*dedup.get("decontaminate", []),
                              *(t.path for t in state.config.evaluation.tasks if t.path)]
    data.update(dedup=dedup, output_format="jsonl")
    spec = type(state.config.curation).model_validate(data)
    report = run_pipeline(spec, new_file, out_dir, fail_on_empty_default=False)
    write_reports(report, out_dir)
    curated = out_dir / "curated.jsonl"
    summary = curation_summary(out_dir)
    corpus = state.folder / "corpus.jsonl"
    with corpus.open("wb") as out:
        if previous.get("corpus"):
            with state.absolute(previous["corpus"]).open("rb") as old:
                shutil.copyfileobj(old, out)
        with curated.open("rb") as fresh:
            shutil.copyfileobj(fresh, out)
    corpus_records = count_lines(corpus)
    figures.update(records_in=summary.records_in, records_out=summary.records_out, removed=summary.removed,
                   corpus_records=corpus_records, curated_sha256=file_sha256(curated),
                   corpus_sha256=file_sha256(corpus))
    state.summary["data"].update(curated_in=summary.records_in, added=summary.records_out, removed=summary.removed,
                                 corpus_records=corpus_records)
    state.summary["outputs"] = {"corpus": state.relative(corpus), "index": state.relative(index_dir),
                                "curation_report": state.relative(out_dir / "report.json")}
    return curated, corpus


# --- train --------------------------------------------------------------------------------------------------------


def train(state: RunState, curated: Path, corpus: Path, figures: dict[str, Any]) -> Any:
    from assay.training.trainer import finetune

    settings = state.config.training
    spec = settings.spec.model_copy()
    data = corpus
    if settings.mode == "continue" and state.champion is not None:
        adapters, _ = champion_adapters(state)
        spec.init_adapter = adapters[0].split("=", 1)[1]
        data = curated
    if count_lines(data) == 0:
        raise CycleError("no curated records to train on")

    def stop() -> bool:
        return state.should_stop()

    report = finetune(spec, data, state.folder / "train", should_stop=stop, overwrite=True)
    if report.status != "completed":
        raise CycleCancelled("training stopped before it completed")
    figures.update(steps=report.steps, train_records=report.data.train.examples,
                   final_valid_loss=report.final_valid_loss, tokens_per_s=round(report.tokens_per_s, 1),
                   adapter_sha256=report.adapter_sha256, data=state.relative(data))
    state.summary["training"] = {"mode": settings.mode if data == curated else "from_base", "steps": report.steps,
                                 "final_valid_loss": report.final_valid_loss, "data_sha256": report.data.sha256,
                                 "train_records": report.data.train.examples}
    return report


# --- evaluate -------------------------------------------------------------------------------------------------


def evaluate_models(state: RunState, figures: dict[str, Any]) -> BenchmarkReport:
    from assay.evaluation.run import evaluate

    settings = state.config.evaluation
    adapters, reference = champion_adapters(state)
    spec = EvalSpec(model=state.config.training.spec.model,
                    adapters=[*adapters, f"challenger={state.folder / 'train' / 'adapter'}"], reference=reference,
                    tasks=settings.tasks, limit=settings.limit, batch_size=settings.batch_size, seed=settings.seed,
                    bootstrap_samples=settings.bootstrap_samples, confidence=settings.confidence,
                    device=settings.device, judge=settings.judge, training_run=str(state.folder / "train"),
                    curation_report=str(state.folder / "curate"))
    report = evaluate(spec, state.folder / "eval", should_stop=state.should_stop)
    figures.update(seconds_scoring=report.metadata.seconds, tasks=[t.name for t in report.tasks],
                   items={t.name: t.items_evaluated for t in report.tasks})
    state.summary["metrics"] = [
        {"task": t.name, "metric": c.key, "higher_is_better": c.higher_is_better, "champion": c.base,
         "challenger": c.tuned, "difference": c.difference, "ci_low": c.ci_low, "ci_high": c.ci_high,
         "p_value": c.p_value, "verdict": c.verdict, "items": c.n_items}
        for t in report.tasks for c in t.comparisons if c.model == "challenger"]
    state.summary["judge"] = [j.model_dump(mode="json", include={"base", "tuned", "tuned_wins", "base_wins", "ties",
                                                                 "tie_adjusted_win_rate"})
                              for j in report.judge]
    return report


# --- the run --------------------------------------------------------------------------------------------------


def _lock_holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@contextmanager
def cycle_lock(cycles: CycleStore, name: str, run_id: str | None, lease_s: float = LOCK_LEASE_S
               ) -> Iterator[bool]:
    """Hold the cycle's database lock for the block (renewed in the background); yields False when another run
    holds it."""
    holder = _lock_holder_name()
    if cycles.acquire_lock(name, holder, run_id, lease_s) is None:
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            try:
                cycles.renew_lock(name, holder, lease_s)
            except Exception:  # a database hiccup: try again at the next renewal
                log.warning("could not renew the lock of cycle %s", name, exc_info=True)

    thread = threading.Thread(target=renew, name=f"cycle-lock-{name}", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join(timeout=5)
        cycles.release_lock(name, holder)


def run_cycle(cycles: CycleStore, config: CycleConfig, data_dir: Path, *, trigger: str = "manual",
              force: bool = False, run_id: str | None = None, files_dir: Path | None = None,
              emit: Emit | None = None, should_stop: Callable[[], bool] | None = None,
              lease_s: float = LOCK_LEASE_S) -> dict[str, Any]:
    """Run the cycle once (the cycle must exist in `cycles`); returns the run's final row. Never raises for a
    failed stage: the run row says failed and why. `run_id` names a queued run row to use (the service's)."""
    emit = emit or (lambda message: log.info("%s", message))
    stop = should_stop or (lambda: False)
    cycle = cycles.get_cycle(config.name)
    if cycle is None:
        raise CycleError(f"no cycle named {config.name!r}")
    if run_id is None:
        run_id = cycles.create_run(config.name, trigger)["id"]
    with cycle_lock(cycles, config.name, run_id, lease_s) as locked:
        if not locked:
            holder = cycles.lock_holder(config.name) or {}
            cycles.finish_run(run_id, "skipped", reason="another run of this cycle is in progress"
                              + (f" ({holder['run_id']})" if holder.get("run_id") else ""))
            return _final(cycles, run_id)
        run = cycles.get_run(run_id)
        assert run is not None
        folder = cycle_folder(data_dir, config.name) / "runs" / f"{run['number']:04d}-{run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        cycles.update_run(run_id, status="running", started_at=time.time(), folder=str(folder),
                          champion_before=cycle["champion"])
        run = cycles.get_run(run_id)
        assert run is not None
        (folder / "cycle.json").write_bytes(orjson.dumps(config.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
        state = RunState(cycles, config, run, data_dir, files_dir, emit, stop)
        try:
            _stages(state, force)
        except StageFailed as exc:
            cycles.finish_run(run_id, "failed", reason=str(exc), stages=state.stages, summary=state.summary)
            emit(str(exc))
        except CycleCancelled as exc:
            cycles.finish_run(run_id, "failed", reason=f"cancelled: {exc}", stages=state.stages, summary=state.summary)
            emit(f"cancelled: {exc}")
        except Exception as exc:  # a bug: the run still fails with a reason; the traceback is in the folder
            (folder / "run.error.txt").write_text(traceback.format_exc(), encoding="utf-8")
            cycles.finish_run(run_id, "failed", reason=_reason(exc), stages=state.stages, summary=state.summary)
            raise
    try:
        from assay.api.cycles.report import write_history

        write_history(cycles, config.name, data_dir)
    except Exception:  # the history page is a view; a failure to draw it must not undo the run
        log.warning("could not write the history page of cycle %s", config.name, exc_info=True)
    return _final(cycles, run_id)


def _final(cycles: CycleStore, run_id: str) -> dict[str, Any]:
    run = cycles.get_run(run_id)
    assert run is not None
    return run


def _stages(state: RunState, force: bool) -> None:
    from assay.api.cycles.gate import decide
    from assay.api.cycles.report import write_run_report

    with state.stage("collect") as figures:
        new_file = collect(state, figures)
    new = int(state.stages["collect"]["new_records"])
    if not force:
        with state.stage("triggers") as figures:
            go, why = trigger_reasons(state, new_file, new, figures)
            figures["reason"] = why
        if not go:
            state.cycles.finish_run(state.run["id"], "skipped", reason=f"no trigger fired: {why}",
                                    stages=state.stages, summary=state.summary)
            state.emit(f"skipped: {why}")
            return
    with state.stage("curate") as figures:
        curated, corpus = curate(state, new_file, figures)
    with state.stage("train") as figures:
        training = train(state, curated, corpus, figures)
    with state.stage("evaluate") as figures:
        report = evaluate_models(state, figures)
    with state.stage("gate") as figures:
        decision = decide(state.config.gate, report, state.champion or "base")
        (state.folder / "gate.json").write_text(decision.model_dump_json(indent=2), encoding="utf-8")
        figures.update(passed=decision.passed, failed_rules=sum(not r.passed for r in decision.rules))
        state.summary["gate"] = decision.model_dump(mode="json")
    challenger = challenger_row(state, training, report, decision)
    with state.stage("report") as figures:
        pages = write_run_report(state.folder, state.config, state.run, state.summary, state.stages,
                                 challenger["id"], state.champion)
        figures["pages"] = [state.relative(p) for p in pages]
    champion = state.cycles.complete_run(
        state.run, decision="promoted" if decision.passed else "kept", challenger=challenger, seen=state.seen,
        summary=state.summary, stages=state.stages, reason=decision.reason)
    state.emit(f"{'promoted' if champion == challenger['id'] else 'kept'}: champion is "
               f"{champion or 'the base model'}")


def challenger_row(state: RunState, training: Any, report: BenchmarkReport, decision: GateDecision) -> dict[str, Any]:
    """The challenger's models-table row, with its whole lineage (promoted_at is added on promotion)."""
    config, run = state.config, state.run
    adapter = state.folder / "train" / "adapter"
    collect_figures, curate_figures = state.stages["collect"], state.stages["curate"]
    lineage = {
        "cycle": config.name, "cycle_run": run["id"], "run_number": run["number"],
        "base": config.training.spec.model, "adapter_hash": training.adapter_sha256,
        "parent": state.champion if state.summary["training"]["mode"] == "continue" else None,
        "datasets": {
            "new_records": {"sha256": collect_figures["sha256"], "records": collect_figures["new_records"]},
            "curated": {"sha256": curate_figures["curated_sha256"], "records": curate_figures["records_out"]},
            "corpus": {"sha256": curate_figures["corpus_sha256"], "records": curate_figures["corpus_records"]},
            "training_data": {"sha256": training.data.sha256, "path": state.stages["train"]["data"]},
        },
        "curation_report": state.summary["outputs"]["curation_report"],
        "training_run": state.relative(state.folder / "train"),
        "training": state.summary["training"],
        "evaluation": {"report": state.relative(state.folder / "eval" / "eval_report.json"),
                       "compared_with": state.champion or "base", "metrics": state.summary["metrics"],
                       "judge": state.summary.get("judge", [])},
        "gate": {"passed": decision.passed, "reason": decision.reason},
        "promoted_at": None,
    }
    return {"id": f"cycle:{config.name}:{run['number']:04d}", "kind": "cycle", "base": config.training.spec.model,
            "adapter_dir": state.relative(adapter), "adapter_hash": training.adapter_sha256, "job_id": run.get("job_id"),
            "step": training.steps,
            "metrics": {f"{m['task']}/{m['metric']}": m["challenger"] for m in state.summary["metrics"]},
            "lineage": lineage}
