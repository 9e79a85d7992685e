"""REST API load benchmark: GET /v1/files/{id} and 50 MB uploads, idle vs while a curation job runs.

Starts the real server (`assay serve`, SQLite, one worker process) on a loopback port and drives it from
this process with httpx. Prints a Markdown table with the ratio busy/idle for every figure.

    .venv/bin/python bench/api.py [--seconds 5] [--concurrency 8] [--uploads 5] [--upload-mb 50]
    .venv/bin/python bench/api.py models [...]   # fine-tune through the API vs the CLI, chat completions/s
                                                 # (bench/api_models.py)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from assay.api.testing import ServerProcess, upload, wait_for_job, write_chat_jsonl, write_sized_jsonl  # noqa: E402


@dataclass
class Figures:
    requests: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _get_load(url: str, file_id: str, seconds: float, concurrency: int) -> Figures:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def loop() -> None:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                response = await client.get(f"/v1/files/{file_id}")
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"GET failed: {response.status_code} {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Figures(len(latencies), elapsed, latencies)


def _uploads(url: str, path: Path, count: int) -> Figures:
    latencies: list[float] = []
    started_all = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300) as client:
        for _ in range(count):
            started = time.perf_counter()
            body = upload(client, path)
            latencies.append((time.perf_counter() - started) * 1000)
            client.delete(f"/v1/files/{body['id']}")
    return Figures(count, time.perf_counter() - started_all, latencies)


class KeepBusy(threading.Thread):
    """Keeps one curation job queued or running until stopped; counts the jobs that ran."""

    def __init__(self, url: str, file_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.file_id = url, file_id
        self.done = threading.Event()
        self.jobs: list[str] = []
        self.gaps = 0  # polls that found no job queued or running

    def submit(self, client: httpx.Client) -> str:
        job = client.post("/v1/curation/jobs", json={"file_id": self.file_id, "spec": {"steps": ["validate"]}})
        job_id: str = job.json()["id"]
        self.jobs.append(job_id)
        return job_id

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            job_id = self.jobs[-1] if self.jobs else self.submit(client)
            while not self.done.is_set():
                status = client.get(f"/v1/curation/jobs/{job_id}").json()["status"]
                if status in ("succeeded", "failed", "cancelled"):
                    self.gaps += 1
                    job_id = self.submit(client)
                self.done.wait(0.2)
            client.post(f"/v1/curation/jobs/{job_id}/cancel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each GET load phase")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent GET clients")
    parser.add_argument("--uploads", type=int, default=5, help="uploads per phase")
    parser.add_argument("--upload-mb", type=float, default=50.0, help="size of the uploaded file")
    parser.add_argument("--job-records", type=int, default=400_000, help="records in the curation job's input")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="assay-bench-api-") as tmp:
        work = Path(tmp)
        upload_path = write_sized_jsonl(work / "upload.jsonl", int(args.upload_mb * 1024 * 1024))
        job_input = write_chat_jsonl(work / "job-input.jsonl", args.job_records, words=3)
        server = ServerProcess(work / "data", workers=1, env={"ASSAY_RATE_LIMIT": "0"}).start()
        try:
            with httpx.Client(base_url=server.url, timeout=300) as client:
                target = upload(client, write_chat_jsonl(work / "small.jsonl", 100))["id"]
                job_file = upload(client, job_input)["id"]
            asyncio.run(_get_load(server.url, target, 1.0, args.concurrency))  # warm-up
            idle_get = asyncio.run(_get_load(server.url, target, args.seconds, args.concurrency))
            idle_up = _uploads(server.url, upload_path, args.uploads)

            busy = KeepBusy(server.url, job_file)
            with httpx.Client(base_url=server.url, timeout=60) as client:
                first = busy.submit(client)
                wait_for_job(client, first, ("running",), until=lambda job: bool(job["progress"]))
            busy.start()
            busy_get = asyncio.run(_get_load(server.url, target, args.seconds, args.concurrency))
            busy_up = _uploads(server.url, upload_path, args.uploads)
            busy.done.set()
            busy.join(30)
        finally:
            server.stop()

    size_mb = args.upload_mb
    rows = [
        ("GET /v1/files/{id} requests/s", idle_get.rate, busy_get.rate),
        ("GET /v1/files/{id} p50 ms", idle_get.pct(0.50), busy_get.pct(0.50)),
        ("GET /v1/files/{id} p99 ms", idle_get.pct(0.99), busy_get.pct(0.99)),
        (f"upload {size_mb:g} MB p50 ms", statistics.median(idle_up.latencies_ms),
         statistics.median(busy_up.latencies_ms)),
        (f"upload {size_mb:g} MB max ms", max(idle_up.latencies_ms), max(busy_up.latencies_ms)),
        (f"upload {size_mb:g} MB MB/s (p50)", size_mb / statistics.median(idle_up.latencies_ms) * 1000,
         size_mb / statistics.median(busy_up.latencies_ms) * 1000),
    ]
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after "
          "(other processes share the CPU: compare ratios, not absolute figures)")
    print(f"GET load: {args.concurrency} concurrent clients for {args.seconds:g} s per phase "
          f"({idle_get.requests} idle / {busy_get.requests} busy requests); {args.uploads} uploads per phase; "
          f"busy = a curation job (validate, {args.job_records} records) running throughout "
          f"({len(busy.jobs)} job(s) ran; {busy.gaps} poll(s) every 0.2 s found none running).\n")
    print("| figure | idle | while a job runs | busy / idle |")
    print("|---|---:|---:|---:|")
    for name, idle, loaded in rows:
        print(f"| {name} | {idle:,.1f} | {loaded:,.1f} | {loaded / idle:.2f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["models"]:
        import runpy

        sys.argv.pop(1)
        runpy.run_path(str(Path(__file__).with_name("api_models.py")), run_name="__main__")
    else:
        main()
