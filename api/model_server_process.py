"""`assay serve-model` in a child process on a loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from assay.api.testing import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
# The judge commands on a bare typer app, started the way `assay serve-model` starts.
LAUNCHER = "import typer; from assay.api.cli_judge import register; app = typer.Typer(); register(app); app()"


@dataclass
class ModelServerProcess:
    model: Path
    adapters: dict[str, Path] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self, timeout: float = 120.0) -> ModelServerProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ASSAY_API_KEYS": "", "HF_HUB_OFFLINE": "1", **self.env}
        command = [sys.executable, "-c", LAUNCHER, "serve-model", "--model", str(self.model), "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning", *self.args]
        for name, folder in self.adapters.items():
            command += ["--adapter", f"{name}={folder}"]
        log_path = self.log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"assay-model-server-{self.port}.log"
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"model server exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"model server not ready after {timeout} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ModelServerProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
