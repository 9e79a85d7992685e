"""Small uploads behind a big one, and gzip bombs: the service with one validation lane against two.

Starts the real server twice on a loopback port: once with one lane (ASSAY_SMALL_UPLOAD_BYTES=0, how uploads
were validated before) and once with the default lanes. In each, a big .jsonl.gz (expanding to --big-mb,
every line a reject, so slow to validate) is uploaded, and while it is being validated --small small uploads
are sent one after another; their latencies are compared with the same uploads on an idle server. Then a
gzip bomb (expanding to --bomb-factor times ASSAY_MAX_EXPANDED_BYTES) is uploaded: the time to refuse it is
compared with the time the validator takes to read it whole without a limit (in this process).

    .venv/bin/python bench/upload_lanes.py [--big-mb 48] [--small 5] [--limit-mb 64] [--bomb-factor 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

from assay.api.testing import ServerProcess, chat_record, write_chat_jsonl


def gzip_of_repeated_records(path: Path, expanded_bytes: int) -> Path:
    line = orjson.dumps(chat_record(1, 12)) + b"\n"
    block = line * (1_000_000 // len(line))
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        for _ in range(expanded_bytes // len(block) + 1):
            out.write(compressor.compress(block))
        out.write(compressor.flush())
    return path


def post(client: httpx.Client, path: Path) -> tuple[int, float]:
    started = time.perf_counter()
    with path.open("rb") as handle:
        response = client.post("/v1/files", files={"file": (path.name, handle)}, data={"purpose": "curation"})
    return response.status_code, (time.perf_counter() - started) * 1000


def small_latencies(client: httpx.Client, small: Path, count: int) -> list[float]:
    out = []
    for _ in range(count):
        status, ms = post(client, small)
        if status != 200:
            raise RuntimeError(f"small upload failed: {status}")
        out.append(ms)
    return out


def run_server(data: Path, env: dict[str, str], big: Path, small: Path, bomb: Path,
               count: int) -> dict[str, float]:
    with ServerProcess(data, workers=1, env={"ASSAY_RATE_LIMIT": "0", **env}) as server, \
            httpx.Client(base_url=server.url, timeout=600) as client:
        idle = small_latencies(client, small, count)
        with ThreadPoolExecutor(1) as pool:
            big_upload = pool.submit(post, client, big)
            time.sleep(0.3)
            busy = small_latencies(client, small, count)
            big_status, big_ms = big_upload.result()
            assert big_status == 200, big_status
        bomb_status, bomb_ms = post(client, bomb)
        assert bomb_status == 413, bomb_status
    return {"idle_p50": statistics.median(idle), "busy_p50": statistics.median(busy), "busy_max": max(busy),
            "big_ms": big_ms, "bomb_ms": bomb_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mb", type=float, default=48.0, help="what the big upload expands to")
    parser.add_argument("--small", type=int, default=5, help="small uploads sent while the big one validates")
    parser.add_argument("--limit-mb", type=float, default=64.0, help="ASSAY_MAX_EXPANDED_BYTES in MB")
    parser.add_argument("--bomb-factor", type=float, default=4.0, help="bomb expands to this times the limit")
    args = parser.parse_args()
    limit = int(args.limit_mb * 1_000_000)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        big = gzip_of_repeated_records(root / "big.jsonl.gz", int(args.big_mb * 1_000_000))
        bomb = gzip_of_repeated_records(root / "bomb.jsonl.gz", int(limit * args.bomb_factor))
        small = write_chat_jsonl(root / "small.jsonl", 20)
        big_mb, bomb_mb = big.stat().st_size / 1e6, bomb.stat().st_size / 1e6
        env = {"ASSAY_MAX_EXPANDED_BYTES": str(limit)}
        one = run_server(root / "one", {**env, "ASSAY_SMALL_UPLOAD_BYTES": "0"}, big, small, bomb, args.small)
        two = run_server(root / "two", env, big, small, bomb, args.small)

        from assay.curation.validate import validate_file

        started = time.perf_counter()
        validate_file(bomb)
        unlimited_ms = (time.perf_counter() - started) * 1000
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} "
          f"after; big upload {big_mb:.2f} MB expanding to {args.big_mb:g} MB; bomb "
          f"{bomb_mb:.2f} MB expanding to {limit * args.bomb_factor / 1e6:g} MB, limit "
          f"{args.limit_mb:g} MB")
    print("\n| figure | one lane (before) | two lanes | two / one |")
    print("|---|---:|---:|---:|")
    rows = [("small upload p50 ms, idle server", "idle_p50"),
            ("small upload p50 ms, while a big one validates", "busy_p50"),
            ("small upload max ms, while a big one validates", "busy_max"),
            ("big upload ms", "big_ms"), ("gzip bomb refused (413) ms", "bomb_ms")]
    for label, key in rows:
        print(f"| {label} | {one[key]:,.1f} | {two[key]:,.1f} | {two[key] / one[key]:.2f} |")
    print(f"\nthe bomb validated whole without a limit (in-process, the old behaviour): {unlimited_ms:,.0f} ms; "
          f"refused with the limit: {two['bomb_ms']:,.0f} ms (ratio {two['bomb_ms'] / unlimited_ms:.2f})")


if __name__ == "__main__":
    main()
