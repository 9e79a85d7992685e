"""Benchmark `assay validate` against the JSON parse floor and a naive pydantic-per-line baseline, and
the same records as Parquet.

    .venv/bin/python bench/validate.py --mb 160

Generates a chat JSONL of the given size (once, cached in the temp folder) and the same records as a
zstd Parquet file, then runs each contender in its own process (so peak RSS is its own) and prints
records/s, MB/s (of the file each one reads), ratios and peak RSS. `parquet_rows_floor` is polars
reading the Parquet file into Python dicts in batches and nothing else: the floor for any validator fed
by polars rows.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the model learns from clean diverse examples while duplicates and noise hurt small models more "
         "than large ones so curation pays off quickly in accuracy cost and latency").split()


def make_file(path: Path, megabytes: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    target = megabytes * 1_000_000
    written = 0
    with path.open("w", encoding="utf-8") as out:
        i = 0
        while written < target:
            turns = [{"role": "system", "content": "You are a helpful assistant."}]
            for _ in range(rng.randint(1, 3)):
                turns.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(8, 40)))})
                turns.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(20, 120)))})
            line = json.dumps({"id": f"r{i}", "messages": turns, "category": rng.choice(["a", "b", "c"])}) + "\n"
            out.write(line)
            written += len(line)
            i += 1


def own_peak_mb() -> float:
    """This process's peak RSS since its exec (VmHWM): ru_maxrss also carries the peak of the process it
    was forked from (here the parent that wrote the Parquet file)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(mode: str, path: Path) -> None:
    """Run one contender in this process (imports done before the clock starts); print its numbers."""
    import orjson
    from pydantic import ValidationError

    from assay.curation.validate import validate_file
    from assay.schemas.records import ChatRecord

    records = valid = 0
    started = time.perf_counter()
    if mode == "parse_floor":
        with path.open("rb") as f:
            for line in f:
                orjson.loads(line)
                records += 1
        valid = records
    elif mode == "naive_pydantic":
        with path.open("rb") as f:
            for line in f:
                records += 1
                try:
                    ChatRecord.model_validate_json(line)
                    valid += 1
                except ValidationError:
                    pass
    elif mode == "assay_validate":
        summary = validate_file(path)
        records, valid = summary.records_read, summary.valid
    elif mode == "parquet_rows_floor":
        import polars as pl

        for frame in pl.scan_parquet(path.with_suffix(".parquet")).collect_batches(chunk_size=4096):
            records += len(frame.to_dicts())
        valid = records
    elif mode == "assay_validate_parquet":
        summary = validate_file(path.with_suffix(".parquet"))
        records, valid = summary.records_read, summary.valid
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - started
    peak_mb = own_peak_mb()
    print(json.dumps({"mode": mode, "records": records, "valid": valid, "seconds": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=160, help="size of the generated file in MB")
    parser.add_argument("--file", type=Path, help="use this JSONL file instead of generating one")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best time of each counts")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        run_mode(args.mode, args.file)
        return
    path = args.file or Path(tempfile.gettempdir()) / f"assay-bench-validate-{args.mb}mb.jsonl"
    if not path.exists():
        print(f"generating {args.mb} MB at {path} ...", file=sys.stderr)
        make_file(path, args.mb)
    parquet = path.with_suffix(".parquet")
    if not parquet.exists():
        import polars as pl

        print(f"writing the same records as Parquet at {parquet} ...", file=sys.stderr)
        pl.scan_ndjson(path).sink_parquet(parquet, compression="zstd")
    size_mb = path.stat().st_size / 1e6
    sizes = {"parquet_rows_floor": parquet.stat().st_size / 1e6, "assay_validate_parquet": parquet.stat().st_size / 1e6}
    results: dict[str, dict] = {}
    for round_no in range(args.rounds):  # interleaved, best of N: this machine is noisy
        for mode in ("parse_floor", "naive_pydantic", "assay_validate", "parquet_rows_floor",
                     "assay_validate_parquet"):
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--file", str(path)], check=True,
                                 capture_output=True, text=True, cwd=ROOT).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"  round {round_no + 1} {mode}: {result['seconds']:.2f} s", file=sys.stderr)
            if mode not in results or result["seconds"] < results[mode]["seconds"]:
                results[mode] = result
    assert len({r["records"] for r in results.values()}) == 1, "contenders saw different record counts"
    assert len({r["valid"] for r in results.values()}) == 1, "contenders disagree on validity"
    ours = results["assay_validate"]["seconds"]
    print(f"file: {size_mb:.0f} MB JSONL, {sizes['assay_validate_parquet']:.0f} MB Parquet (zstd), "
          f"{results['parse_floor']['records']:,} chat records, best of {args.rounds}\n")
    print("| contender | records/s | MB/s | assay speed vs this | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for mode, r in results.items():
        rate = r["records"] / r["seconds"]
        print(f"| {mode} | {rate:,.0f} | {sizes.get(mode, size_mb) / r['seconds']:.1f} | {r['seconds'] / ours:.2f}x | "
              f"{r['peak_rss_mb']:.0f} |")
    print(f"\ntargets: >= 2x naive_pydantic (got {results['naive_pydantic']['seconds'] / ours:.2f}x), "
          f">= 0.5x parse_floor (got {results['parse_floor']['seconds'] / ours:.2f}x), "
          f"peak RSS < 500 MB (got {results['assay_validate']['peak_rss_mb']:.0f} MB JSONL, "
          f"{results['assay_validate_parquet']['peak_rss_mb']:.0f} MB Parquet); Parquet vs the polars rows floor "
          f"{results['parquet_rows_floor']['seconds'] / results['assay_validate_parquet']['seconds']:.2f}x")


if __name__ == "__main__":
    main()
