"""Learning-rate x batch-size sweeps: one short fine-tune per point, ranked by validation loss.

Small models are sensitive to the ratio of learning rate to batch size (SmolTulu: a higher ratio
helps reasoning tasks, a lower one pattern-recognition tasks), so the report names the best ratio, not
only the best point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from assay.schemas.training import FineTuneSpec, SweepPoint, SweepReport, TrainingEvent, TrainingReport
from assay.training.trainer import REPORT_FILE, EventHook, FineTuneError, StopHook, finetune


def point_name(learning_rate: float, batch_size: int) -> str:
    return f"lr{learning_rate:g}-bs{batch_size}"


def sweep(spec: FineTuneSpec, data: str | Path, out: str | Path, learning_rates: Sequence[float],
          batch_sizes: Sequence[int], *, validation: str | Path | None = None, on_event: EventHook | None = None,
          should_stop: StopHook | None = None, on_point: EventHook | None = None) -> SweepReport:
    """Run every (learning rate, batch size) point into out/points/<name>/ and write sweep.json/md/html.

    A point whose folder already holds a completed run is read, not re-run, so an interrupted sweep
    continues where it stopped. A point that fails (e.g. diverges) is listed with its error."""
    if not learning_rates or not batch_sizes:
        raise FineTuneError("a sweep needs at least one learning rate and one batch size")
    if any(lr <= 0 or not math.isfinite(lr) for lr in learning_rates) or any(bs <= 0 for bs in batch_sizes):
        raise FineTuneError("learning rates and batch sizes must be positive")
    if validation is None and spec.val_split <= 0:
        raise FineTuneError("a sweep ranks points by validation loss: give --validation or a val_split above 0")
    out = Path(out)
    points: list[SweepPoint] = []
    for lr, bs in [(lr, bs) for lr in learning_rates for bs in batch_sizes]:
        if should_stop is not None and should_stop():
            break
        point = _run_point(spec, data, out, lr, bs, validation, on_event, should_stop)
        points.append(point)
        if on_point is not None:
            on_point(TrainingEvent(type="status", time=time.time(), valid_loss=point.valid_loss,
                                   message=f"{point_name(lr, bs)}: validation loss {point.valid_loss}"
                                           + (f" ({point.error})" if point.error else "")))
    ranked = sorted(points, key=lambda p: (p.valid_loss is None, p.valid_loss if p.valid_loss is not None else 0.0))
    best = ranked[0] if ranked and ranked[0].valid_loss is not None else None
    report_out = SweepReport(model=spec.model, data=str(data), steps=spec.max_steps, points=ranked, best=best,
                             best_lr_per_example=best.lr_per_example if best else None, spec=spec,
                             created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    out.mkdir(parents=True, exist_ok=True)
    from assay.training.report import write_sweep_report

    write_sweep_report(report_out, out)
    return report_out


def _run_point(spec: FineTuneSpec, data: str | Path, out: Path, lr: float, bs: int, validation: str | Path | None,
               on_event: EventHook | None, should_stop: StopHook | None) -> SweepPoint:
    folder = out / "points" / point_name(lr, bs)
    error = None
    report: TrainingReport | None = None
    if (folder / REPORT_FILE).is_file():
        report = TrainingReport.model_validate_json((folder / REPORT_FILE).read_text(encoding="utf-8"))
    else:
        point_spec = spec.model_copy(update={"learning_rate": lr, "batch_size": bs, "merge": False})
        try:
            report = finetune(point_spec, data, folder, validation=validation, on_event=on_event,
                              should_stop=should_stop, overwrite=True)
        except FineTuneError:
            raise  # bad input fails the same way at every point: stop at the first
        except (RuntimeError, ValueError) as exc:  # e.g. a learning rate that makes the loss NaN
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    valid = report.final_valid_loss if report is not None and report.status == "completed" else None
    if valid is not None and not math.isfinite(valid):
        valid, error = None, "validation loss is not finite (diverged)"
    if report is not None and report.status == "stopped":
        error = "stopped"
    effective = bs * spec.grad_accum
    return SweepPoint(learning_rate=lr, batch_size=bs, effective_batch_size=effective, lr_per_example=lr / effective,
                      valid_loss=valid, train_loss=report.train_loss[-1].value if report and report.train_loss else None,
                      seconds=report.seconds if report else 0.0, output=str(folder), error=error)
