"""Helpers for tests and benchmarks: run the real server in a subprocess on loopback, generate datasets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

REPO_ROOT = Path(__file__).resolve().parent.parent
# The service's own commands on a bare typer app, so the server starts the way `assay serve` starts it.
LAUNCHER = "import typer; from assay.api.cli_serve import register; app = typer.Typer(); register(app); app()"


@contextmanager
def scoped_env(**values: str) -> Iterator[dict[str, str | None]]:
    """Set environment variables for a block (tests, benchmarks) and put back what was there; yields the
    previous values (None: unset)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield saved
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """`assay serve` in a child process; `start()` returns once /readyz says ready."""

    data_dir: Path
    workers: int = 1
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"server-{self.data_dir.name}.log"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ASSAY_API_KEYS": "", **self.env}
        command = [sys.executable, "-c", LAUNCHER, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--data-dir", str(self.data_dir), "--workers", str(self.workers), "--log-level", "warning",
                   *self.args]
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not exit in time."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._close_log()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def chat_record(i: int, words: int = 12) -> dict[str, object]:
    filler = " ".join(f"word{(i * 7 + k) % 997}" for k in range(words))
    return {"id": f"r{i}", "messages": [{"role": "user", "content": f"question {i}: {filler}?"},
                                        {"role": "assistant", "content": f"answer {i}: {filler}."}]}


def write_chat_jsonl(path: Path, records: int, *, bad_every: int = 0, words: int = 12) -> Path:
    """A chat dataset; with `bad_every=k`, every k-th line is broken JSON (a reject with a reason)."""
    with path.open("wb") as out:
        chunk: list[bytes] = []
        for i in range(records):
            if bad_every and i % bad_every == bad_every - 1:
                chunk.append(b'{"messages": [broken\n')
            else:
                chunk.append(orjson.dumps(chat_record(i, words)) + b"\n")
            if len(chunk) >= 10_000:
                out.write(b"".join(chunk))
                chunk = []
        out.write(b"".join(chunk))
    return path


def write_sized_jsonl(path: Path, target_bytes: int) -> Path:
    """A valid chat dataset of about `target_bytes` (for upload benchmarks)."""
    line_bytes = len(orjson.dumps(chat_record(0, 40))) + 1
    return write_chat_jsonl(path, max(1, target_bytes // line_bytes), words=40)


def upload(client: httpx.Client, path: Path, purpose: str = "curation") -> dict[str, Any]:
    """POST /v1/files; asserts success and returns the file object."""
    with path.open("rb") as handle:
        response = client.post("/v1/files", files={"file": (path.name, handle, "application/jsonl")},
                               data={"purpose": purpose})
    if response.status_code != 200:
        raise AssertionError(f"upload failed: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    return body


def wait_for_job(client: httpx.Client, job_id: str, statuses: tuple[str, ...], *, timeout: float = 60.0,
                 until: Callable[[dict[str, Any]], bool] | None = None,
                 jobs_path: str = "/v1/curation/jobs") -> dict[str, Any]:
    """Poll a job (a curation job unless `jobs_path` names another kind's routes) until its status is one of
    `statuses` (and `until(job)` holds)."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"{jobs_path}/{job_id}").json()
        if job.get("status") in statuses and (until is None or until(job)):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout} s: {job}")
