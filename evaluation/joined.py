"""The dataset's quality report and the fine-tuning run, summarised for the joined benchmark page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from assay.evaluation.errors import EvalInputError
from assay.schemas.evaluation import CurationSummary, TrainingSummary
from assay.schemas.report import QualityReport

EVAL_LOSS_KEYS = ("eval_loss", "valid_loss", "validation_loss", "val_loss")
MAX_HEADLINE = 24


def curation_summary(path: Path) -> CurationSummary:
    """What curation removed and changed, per step and reason, from its report.json."""
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise EvalInputError(f"--curation-report {path}: no report.json (give a curation output folder or its "
                             "report.json)")
    try:
        report = QualityReport.model_validate_json(file.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise EvalInputError(f"{file}: not a curation quality report ({where}: {first['msg']})") from exc
    removed = {f"{step.step}: {reason}": n for step in report.funnel for reason, n in step.dropped.items() if n}
    changed = {step.step: step.changed for step in report.funnel if step.changed}
    return CurationSummary(report=str(file), input_path=report.input_path, records_in=report.records_in,
                           records_out=report.records_out, removed=removed, changed=changed)


def training_summary(run: Path) -> TrainingSummary | None:
    """Headline figures of training_report.json and the loss curves of events.jsonl (read loosely, by key)."""
    if not run.is_dir():
        return None  # a training data file given directly: nothing to join
    summary = TrainingSummary(run=str(run))
    report = run / "training_report.json"
    if report.is_file():
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EvalInputError(f"{report}: not valid JSON ({exc})") from exc
        summary.report = headline(data)
        if isinstance(data, dict):  # the training step's curves: [{step, value}, ...]
            summary.loss_curve = _curve(data.get("train_loss"))
            summary.eval_loss_curve = _curve(data.get("valid_loss"))
    events = run / "events.jsonl"
    if events.is_file() and not summary.loss_curve:
        for line in events.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written when the run was read
            if not isinstance(event, dict) or not isinstance(event.get("step"), int) or event.get("event") == "checkpoint":
                continue
            if _number(event.get("loss")) is not None:
                summary.loss_curve.append((event["step"], float(event["loss"])))
            for key in EVAL_LOSS_KEYS:
                if _number(event.get(key)) is not None:
                    summary.eval_loss_curve.append((event["step"], float(event[key])))
                    break
    return summary


def _curve(points: Any) -> list[tuple[int, float]]:
    if not isinstance(points, list):
        return []
    curve = []
    for point in points:
        if isinstance(point, dict) and isinstance(point.get("step"), int) and _number(point.get("value")) is not None:
            curve.append((point["step"], float(point["value"])))
        elif isinstance(point, (list, tuple)) and len(point) == 2 and _number(point[1]) is not None:
            curve.append((int(point[0]), float(point[1])))
    return curve


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def headline(data: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Scalar fields of the report (nested one level, as `section.key`), short strings only."""
    out: dict[str, Any] = {}
    if not isinstance(data, dict):
        return out
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 120):
            out[name] = value
        elif isinstance(value, dict) and depth == 0:
            out.update(headline(value, f"{name}.", depth + 1))
        if len(out) >= MAX_HEADLINE:
            break
    return dict(list(out.items())[:MAX_HEADLINE])
