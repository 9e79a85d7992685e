"""The database lock (never two runs of one cycle, also from two stores on one SQLite file), the scheduler's
ticks after a restart (a missed tick runs once or is skipped, per the cycle), and cycle files with errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from assay.api.cli import app
from assay.api.cycle_store import CycleStore
from assay.api.cycles.config import load_config
from assay.api.cycles.engine import run_cycle
from assay.api.cycles.scheduler import CycleScheduler, next_tick
from assay.api.store import Store
from assay.schemas.cycle import CycleConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cycle" / "cycle.yaml"


def _stores(tmp_path: Path, n: int = 2) -> list[CycleStore]:
    url = f"sqlite:///{tmp_path / 'assay.db'}"
    stores = [CycleStore(Store(url)) for _ in range(n)]
    stores[0].store.create_schema()
    return stores


def _config(**schedule: Any) -> dict[str, Any]:
    config = load_config(EXAMPLE).model_dump(mode="json")
    config["schedule"] = {"cron": ["*/5 * * * *"], **schedule}
    return config


def test_two_servers_on_one_database_never_hold_one_cycle_lock_at_once(tmp_path: Path) -> None:
    stores = _stores(tmp_path, 8)
    barrier = threading.Barrier(len(stores))
    won: list[int] = []

    def contend(i: int) -> None:
        barrier.wait()
        if stores[i].acquire_lock("demo", f"server-{i}", None, lease_s=60) is not None:
            won.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    holder = stores[1].lock_holder("demo")
    assert holder is not None and holder["holder"] == f"server-{won[0]}"
    stores[won[0]].release_lock("demo", f"server-{won[0]}")
    assert stores[1].acquire_lock("demo", "server-1", None, lease_s=60) is not None


def test_a_crashed_holders_lock_expires_and_is_taken_over(tmp_path: Path) -> None:
    first, second = _stores(tmp_path)
    assert first.acquire_lock("demo", "crashed", None, lease_s=0.2) is not None
    assert second.acquire_lock("demo", "alive", None, lease_s=60) is None
    time.sleep(0.3)
    assert second.acquire_lock("demo", "alive", None, lease_s=60) is not None
    assert not first.renew_lock("demo", "crashed", 60)  # the old holder finds out it lost the lock


def test_a_run_started_while_another_holds_the_lock_is_skipped_and_touches_nothing(tmp_path: Path) -> None:
    first, second = _stores(tmp_path)
    config = CycleConfig.model_validate(_config())
    second.upsert_cycle(config.name, config.model_dump(mode="json"))
    assert first.acquire_lock(config.name, "server-a", "cyclerun-busy", lease_s=60) is not None
    run = run_cycle(second, config, tmp_path / "data", trigger="api")
    assert run["status"] == "skipped"
    assert run["reason"] == "another run of this cycle is in progress (cyclerun-busy)"
    assert run["folder"] is None and second.get_cycle(config.name)["champion"] is None  # type: ignore[index]


def test_a_tick_missed_while_the_server_was_down_runs_once_on_start(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    stores[0].upsert_cycle("alpaca-demo", _config(missed="run_once"))
    now = time.time()
    stores[0].claim_tick("alpaca-demo", None, now - 3 * 3600)  # due three hours ago: 36 ticks missed
    queued: list[tuple[str, str]] = []
    # two servers start on one database at the same moment: one of them takes the tick
    schedulers = [CycleScheduler(s, lambda name, trigger: queued.append((name, trigger))) for s in stores]
    barrier = threading.Barrier(2)

    def start(scheduler: CycleScheduler) -> None:
        barrier.wait()
        scheduler.tick()

    threads = [threading.Thread(target=start, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert queued == [("alpaca-demo", "missed")]
    following = stores[1].get_cycle("alpaca-demo")["next_run_at"]  # type: ignore[index]
    assert now < following <= now + 300
    assert schedulers[0].tick() == [] and schedulers[1].tick() == []  # nothing due until the next tick


def test_a_missed_tick_is_recorded_as_skipped_when_the_cycle_says_skip(tmp_path: Path) -> None:
    (store,) = _stores(tmp_path, 1)
    store.upsert_cycle("alpaca-demo", _config(missed="skip"))
    store.claim_tick("alpaca-demo", None, time.time() - 3600)
    queued: list[tuple[str, str]] = []
    assert CycleScheduler(store, lambda *a: queued.append(a)).tick() == [("alpaca-demo", "missed_skipped")]
    assert queued == []
    (run,) = store.list_runs("alpaca-demo")
    assert (run["status"], run["trigger"]) == ("skipped", "missed")
    assert "missed while no server was running; skipped (schedule.missed: skip)" in run["reason"]


def test_a_tick_on_time_is_queued_and_a_paused_cycle_lets_it_pass(tmp_path: Path) -> None:
    (store,) = _stores(tmp_path, 1)
    store.upsert_cycle("alpaca-demo", _config())
    clock = [time.time()]
    queued: list[tuple[str, str]] = []
    scheduler = CycleScheduler(store, lambda *a: queued.append(a), clock=lambda: clock[0])
    assert scheduler.tick() == []  # the first pass only sets the next tick
    due = store.get_cycle("alpaca-demo")["next_run_at"]  # type: ignore[index]
    assert due == next_tick(["*/5 * * * *"], clock[0])
    clock[0] = due + 1
    assert scheduler.tick() == [("alpaca-demo", "queued")] and queued == [("alpaca-demo", "schedule")]
    store.set_status("alpaca-demo", "paused")
    clock[0] = due + 301
    assert scheduler.tick() == [("alpaca-demo", "paused")] and len(queued) == 1


@pytest.mark.parametrize(("change", "message"), [
    ("gate:\n  metrics: []\n", "gate.metrics: List should have at least 1 item"),
    ("gate:\n  metrics:\n  - {task: ppl, metric: loss, direction: down}\n",
     "gate.metrics.0.direction: Input should be 'higher' or 'lower'"),
    ("schedule:\n  cron: ['every day']\n", "schedule.cron: not a valid cron expression: 'every day'"),
    ("trainin:\n  mode: from_base\n", "unknown key 'trainin'"),
    ("curation:\n  steps: [validate]\n", "curation.steps must include dedup"),
])
def test_a_bad_cycle_file_is_refused_naming_the_field(tmp_path: Path, change: str, message: str) -> None:
    import yaml

    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config.update(yaml.safe_load(change))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(app, ["cycle", "run", str(path), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "data").exists()  # nothing was created


def test_a_run_whose_job_ended_without_it_is_failed_with_the_reason(tmp_path: Path) -> None:
    from assay.api.cycles.jobs import queue_run

    (store,) = _stores(tmp_path, 1)
    store.upsert_cycle("alpaca-demo", _config())
    run, job = queue_run(store.store, "alpaca-demo", "schedule")
    store.update_run(run["id"], status="running", stage="train")
    # the server was killed mid-run; at the restart the runner failed the orphaned job
    store.store.finish_job(job["id"], "failed", error={"code": "job_interrupted", "message": "server restarted"})
    assert CycleScheduler(store, lambda *a: None).tick() == [("alpaca-demo", "interrupted")]
    failed = store.get_run(run["id"])
    assert failed is not None and failed["status"] == "failed"
    assert failed["reason"] == ("the run's job ended (failed) before the run did: the server stopped or the job was "
                                "cancelled during stage train")
    assert store.get_cycle("alpaca-demo")["champion"] is None  # type: ignore[index]
