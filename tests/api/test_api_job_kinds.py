"""Job kinds as an extension point: a kind registered from outside gets its routes and models from the factory,
runs in its own worker pool (a job blocking one pool delays no other), every job has a wall-clock limit, and a
job may start processes of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from assay.api.cli_serve import register
from assay.api.jobs import JobKindError, load_job_kinds
from assay.api.testing import REPO_ROOT, ServerProcess, upload, wait_for_job

ECHO, SIDE, STALL = "/v1/echo/jobs", "/v1/side_echo/jobs", "/v1/stall/jobs"
TIME_LIMIT_S = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The example kinds as a plugin: `echo` in the default pool (with curation, 1 worker), `side_echo` in a
    pool `side` of one, `stall` in a pool of its own with a 3 s time limit."""
    env = {"ASSAY_RATE_LIMIT": "0", "PYTHONPATH": f"{REPO_ROOT}:{Path(__file__).parent}",
           "ASSAY_JOB_KINDS": "example_job_kinds:KINDS", "ASSAY_POOLS": "side=1",
           "ASSAY_JOB_TIMEOUTS": f"stall={TIME_LIMIT_S}", "ASSAY_CANCEL_GRACE_S": "1"}
    with ServerProcess(tmp_path_factory.mktemp("kinds") / "data", workers=1, env=env) as running:
        yield running


def _echo(client: httpx.Client, path: str, **body: object) -> dict[str, object]:
    created = client.post(path, json={"message": "hello", **body})
    assert created.status_code == 200, created.text
    job: dict[str, object] = created.json()
    return job


def test_a_plugin_kind_gets_create_list_retrieve_cancel_and_event_routes(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    assert {ECHO, f"{ECHO}/{{job_id}}", f"{ECHO}/{{job_id}}/cancel", f"{ECHO}/{{job_id}}/events"} <= set(
        document["paths"])
    assert {"EchoJob", "EchoJobList", "EchoJobEvent", "CreateEchoJob"} <= set(document["components"]["schemas"])
    job = _echo(client, ECHO)
    assert (job["object"], job["status"], job["message"]) == ("echo.job", "queued", "hello")
    done = wait_for_job(client, str(job["id"]), ("succeeded", "failed"), jobs_path=ECHO)
    assert done["status"] == "succeeded" and done["pids"] == []
    assert [j["id"] for j in client.get(ECHO).json()["data"]] == [job["id"]]
    events = client.get(f"{ECHO}/{job['id']}/events").json()["data"]
    assert {e["object"] for e in events} == {"echo.job.event"}
    assert any(e["message"].startswith("echo: hello") for e in events)
    assert client.post(f"{ECHO}/{job['id']}/cancel").status_code == 409
    bad = client.post(ECHO, json={"message": "x", "colour": "red"})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "colour")
    # Routes are scoped to their kind: an echo job is no curation job.
    assert client.get(f"/v1/curation/jobs/{job['id']}").status_code == 404


def test_a_job_blocking_one_pool_delays_no_other_pool(client: httpx.Client, small_dataset: Path) -> None:
    file_id = upload(client, small_dataset)["id"]
    side_blocker = _echo(client, SIDE, block=True)
    wait_for_job(client, str(side_blocker["id"]), ("running",), jobs_path=SIDE)
    # The side pool's only worker is stuck; the default pool still runs curation and echo jobs.
    curation = client.post("/v1/curation/jobs", json={"file_id": file_id, "spec": {"steps": ["validate"]}}).json()
    assert wait_for_job(client, curation["id"], ("succeeded", "failed"))["status"] == "succeeded"
    assert wait_for_job(client, str(_echo(client, ECHO)["id"]), ("succeeded",), jobs_path=ECHO)
    waiting = _echo(client, SIDE)
    time.sleep(1.0)
    assert client.get(f"{SIDE}/{waiting['id']}").json()["status"] == "queued"  # a pool of one runs one job

    # Now the other way round: the default pool's only worker is stuck, and the side pool gets its turn.
    default_blocker = _echo(client, ECHO, block=True)
    wait_for_job(client, str(default_blocker["id"]), ("running",), jobs_path=ECHO)
    assert client.post(f"{SIDE}/{side_blocker['id']}/cancel").json()["status"] == "cancelling"
    stopped = wait_for_job(client, str(side_blocker["id"]), ("cancelled", "failed"), jobs_path=SIDE, timeout=30)
    assert stopped["status"] == "cancelled"  # it ignored the request, so its worker was stopped after 1 s
    assert wait_for_job(client, str(waiting["id"]), ("succeeded",), jobs_path=SIDE, timeout=60)
    assert client.get(f"{ECHO}/{default_blocker['id']}").json()["status"] == "running"
    client.post(f"{ECHO}/{default_blocker['id']}/cancel")
    assert wait_for_job(client, str(default_blocker["id"]), ("cancelled",), jobs_path=ECHO, timeout=30)


def test_a_job_past_its_time_limit_fails_with_job_timeout_and_its_worker_is_replaced(
        server: ServerProcess, client: httpx.Client) -> None:
    stuck = _echo(client, STALL, block=True)
    started = time.monotonic()
    failed = wait_for_job(client, str(stuck["id"]), ("failed", "succeeded", "cancelled"), jobs_path=STALL,
                          timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "job_timeout"
    assert f"limit of {TIME_LIMIT_S} s" in failed["error"]["message"]
    assert time.monotonic() - started >= TIME_LIMIT_S
    messages = [e["message"] for e in client.get(f"{STALL}/{stuck['id']}/events").json()["data"]]
    assert messages[-1].startswith("job_timeout")
    work_dir = server.data_dir / "jobs" / str(stuck["id"])
    deadline = time.monotonic() + 15  # removed right after the kill, which follows the final status
    while work_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not work_dir.exists()
    after = _echo(client, STALL)
    assert wait_for_job(client, str(after["id"]), ("succeeded",), jobs_path=STALL, timeout=60)


def test_a_job_can_start_a_process_pool_of_its_own(client: httpx.Client) -> None:
    # pii.workers starts such a pool inside the worker; multiprocessing refuses that in daemon processes.
    job = _echo(client, ECHO, processes=2)
    done = wait_for_job(client, str(job["id"]), ("succeeded", "failed"), jobs_path=ECHO, timeout=60)
    assert done["status"] == "succeeded", done["error"]
    assert len(done["pids"]) == 2


def test_kind_names_and_routes_must_be_unique_and_bad_plugins_stop_serve(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    builtin = set(load_job_kinds())
    assert {"curation", "fine_tuning", "eval_run", "benchmark", "cycle_run"} <= builtin
    assert set(load_job_kinds(["example_job_kinds:KINDS"])) == builtin | {"echo", "side_echo", "stall"}
    with pytest.raises(JobKindError, match="two job kinds are named 'echo'"):
        load_job_kinds(["example_job_kinds:ECHO", "example_job_kinds:ECHO"])
    with pytest.raises(JobKindError, match="is not a JobKind"):
        load_job_kinds(["example_job_kinds:CreateEchoJob"])
    monkeypatch.setenv("ASSAY_JOB_KINDS", "no_such_module:KIND")
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "cannot load job kind 'no_such_module:KIND'" in result.output
    monkeypatch.delenv("ASSAY_JOB_KINDS")
    bad_pool = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "d"), "--pool", "training"])
    assert bad_pool.exit_code == 2
    assert "--pool takes NAME=N" in bad_pool.output
