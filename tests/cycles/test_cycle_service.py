"""/v1/cycles on a real server (uvicorn, SQLite, worker processes) with the tiny model: create, refuse bad
definitions and paths outside the inbox, trigger a run that the training pool runs to a promotion, pause and
resume; then a restart after a missed tick, which the scheduler runs once on start."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from assay.api.cycle_store import CycleStore
from assay.api.store import Store
from assay.api.testing import ServerProcess

ENV = {"ASSAY_RATE_LIMIT": "0", "ASSAY_CYCLE_POLL_S": "0.3"}


def _definition(kit: Any, folder: Path, model: Path, **schedule: Any) -> dict[str, Any]:
    config = yaml.safe_load(kit.small_cycle(folder, model).read_text(encoding="utf-8"))
    config["data"] = {"path": "incoming/"}  # relative to the server's inbox/
    config["evaluation"]["tasks"] = ["ppl:heldout.jsonl"]
    config["schedule"] = {"cron": ["0 3 * * *"], **schedule}
    return config


def _wait_for_run(client: httpx.Client, name: str, number: int, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.get(f"/v1/cycles/{name}/runs").json()["data"]
        if len(runs) >= number and runs[number - 1]["status"] in ("succeeded", "failed", "skipped"):
            return dict(runs[number - 1])
        time.sleep(0.5)
    raise AssertionError(f"run {number} of {name} did not finish: {runs}")


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory, kit: Any) -> Path:
    data_dir = tmp_path_factory.mktemp("service") / "data"
    folder = data_dir / "inbox"
    kit.write_jsonl(folder / "incoming" / "batch-1.jsonl", kit.parity_records(60, 1))
    kit.write_jsonl(folder / "heldout.jsonl", kit.parity_records(16, 99))
    return folder


def test_cycles_are_created_triggered_and_promote_through_the_api(inbox: Path, tiny_model: Path, kit: Any,
                                                                  tmp_path: Path) -> None:
    data_dir = inbox.parent
    with ServerProcess(data_dir, workers=1, env=ENV) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        definition = _definition(kit, tmp_path, tiny_model)
        bad = client.post("/v1/cycles", json={**definition, "gate": {"metrics": []}})
        assert bad.status_code == 400
        assert bad.json()["error"]["message"].startswith("invalid cycle: gate.metrics: List should have at least 1 item")
        outside = client.post("/v1/cycles", json={**definition, "data": {"path": "../../"}})
        assert outside.status_code == 400 and outside.json()["error"]["code"] == "path_not_allowed"

        created = client.post("/v1/cycles", json=definition)
        assert created.status_code == 200, created.text
        assert created.json()["id"] == "parity" and created.json()["champion"] is None
        assert [c["id"] for c in client.get("/v1/cycles").json()["data"]] == ["parity"]
        assert client.get("/v1/cycles/nope").status_code == 404

        queued = client.post("/v1/cycles/parity/trigger", json={})
        assert queued.status_code == 200 and queued.json()["status"] == "queued"
        run = _wait_for_run(client, "parity", 1)
        assert (run["status"], run["decision"], run["trigger"]) == ("succeeded", "promoted", "api"), run
        assert run["champion_after"] == "cycle:parity:0001"
        assert client.get("/v1/cycles/parity").json()["champion"] == "cycle:parity:0001"
        deadline = time.monotonic() + 30  # the job ends just after its run (the history page is drawn last)
        while (job := client.get(f"/v1/cycle_run/jobs/{run['job_id']}").json())["status"] == "running" \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert job["status"] == "succeeded" and job["cycle"] == "parity"
        events = [e["message"] for e in client.get(f"/v1/cycle_run/jobs/{run['job_id']}/events").json()["data"]]
        assert "stage train done" in " ".join(events) and any(m.startswith("promoted") for m in events)

        paused = client.post("/v1/cycles/parity/pause").json()
        assert paused["status"] == "paused"
        assert client.post("/v1/cycles/parity/resume").json()["status"] == "active"
        time.sleep(1.0)  # the scheduler counts the next tick from now
        assert client.get("/v1/cycles/parity").json()["next_run_at"] > time.time()

    # the server is down when a tick comes due; at the next start the scheduler runs it once
    cycles = CycleStore(Store(f"sqlite:///{data_dir / 'assay.db'}"))
    due = cycles.get_cycle("parity")["next_run_at"]  # type: ignore[index]
    assert cycles.claim_tick("parity", due, time.time() - 7200)
    with ServerProcess(data_dir, workers=1, env=ENV) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        run = _wait_for_run(client, "parity", 2)
        assert run["trigger"] == "missed"
        assert (run["status"], run["reason"]) == ("skipped", "no trigger fired: 0 new records (< 10)")
        time.sleep(1.0)  # more scheduler passes: the missed tick ran once, not once per pass or per missed tick
        assert len(client.get("/v1/cycles/parity/runs").json()["data"]) == 2
        assert client.get("/v1/cycles/parity").json()["next_run_at"] > time.time()
