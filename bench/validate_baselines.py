"""Validation speed on a file with 10% invalid lines: Assay against typed pydantic and msgspec loops.

    .venv/bin/python bench/validate_baselines.py [--mb 100] [--invalid 0.1] [--rounds 3]

The file (generated once in the temp folder) holds chat records; a share of the lines (default 10%) is
broken in one of ten ways, in equal parts: cut-off JSON, a line that is not an object, no `messages`,
`messages: []`, an unknown role, a number as content, blank content, no assistant turn, an `id` used
before, and an invalid UTF-8 byte inside a string. Every contender must reach the same verdict on every
line (the counts are compared, or the run fails) and keeps each rejected line's number and error message,
as a user reporting errors would:

- parse floor: `orjson.loads` per line, nothing checked (what reading alone costs);
- pydantic: the project's `ChatRecord` model, `model_validate_json` per line, plus the id checks;
- msgspec: typed `msgspec.Struct`s with the same constraints (`Meta(min_length=1)`, `Meta(pattern=r"\\S")`,
  a `Literal` role), decoded per line with one `msgspec.json.Decoder`, plus the assistant-turn and id checks;
- Assay `assay validate` (`validate_file`, records counted) and Assay's curate path (`Validator.batches`,
  every valid record normalised to the canonical chat form and kept for the next step).

Each contender runs in its own process (its own peak RSS), imports before the clock, interleaved rounds,
the best of each kept. Ratios are in CPU seconds of the contender's process (all are single-process), since
on a shared machine wall time mostly measures the other processes; wall seconds are shown too.
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
from typing import Annotated, Any, Literal

import msgspec

WORDS = ("the model learns from clean diverse examples while duplicates and noise hurt small models more "
         "than large ones so curation pays off quickly in accuracy cost and latency").split()
BREAKS = ("cut_json", "not_object", "no_messages", "empty_messages", "unknown_role", "number_content",
          "blank_content", "no_assistant", "duplicate_id", "bad_utf8")


def _record(rng: random.Random, i: int) -> dict[str, Any]:
    turns = [{"role": "system", "content": "You are a helpful assistant."}]
    for _ in range(rng.randint(1, 3)):
        turns.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(8, 40)))})
        turns.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(20, 120)))})
    return {"id": f"r{i}", "messages": turns, "category": rng.choice(["a", "b", "c"])}


def _broken(rng: random.Random, i: int, kind: str) -> bytes:
    record = _record(rng, i)
    messages = record["messages"]
    if kind == "cut_json":
        line = json.dumps(record).encode()
        return line[: rng.randint(10, len(line) - 2)]
    if kind == "not_object":
        return json.dumps([m["content"] for m in messages]).encode()
    if kind == "no_messages":
        record["conversation"] = record.pop("messages")
    elif kind == "empty_messages":
        record["messages"] = []
    elif kind == "unknown_role":
        messages[1]["role"] = "bot"
    elif kind == "number_content":
        messages[-1]["content"] = 42
    elif kind == "blank_content":
        messages[-1]["content"] = "   "
    elif kind == "no_assistant":
        record["messages"] = messages[:2]
    elif kind == "duplicate_id":
        record["id"] = f"r{rng.randrange(max(1, i))}"
    elif kind == "bad_utf8":
        return json.dumps(record).encode().replace(b"assistant.", b"assistant\xff.", 1)
    return json.dumps(record).encode()


def make_file(path: Path, megabytes: int, invalid: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    target, written, i = megabytes * 1_000_000, 0, 0
    with path.open("wb") as out:
        while written < target:
            # the first line is valid (it fixes the ids that duplicate_id lines reuse)
            line = (_broken(rng, i, BREAKS[i % len(BREAKS)]) if i and rng.random() < invalid
                    else json.dumps(_record(rng, i)).encode())
            out.write(line + b"\n")
            written += len(line) + 1
            i += 1


# ---------------------------------------------------------------- the contenders (one per process)


NonEmpty = Annotated[str, msgspec.Meta(pattern=r"\S")]


# The msgspec baseline's types: the same constraints as the project's pydantic ChatRecord.
class Part(msgspec.Struct):
    type: NonEmpty
    text: str | None = None
    value: str | None = None


class Message(msgspec.Struct):
    role: Literal["system", "user", "assistant", "tool"]
    content: NonEmpty | Annotated[list[Part], msgspec.Meta(min_length=1)]


class Chat(msgspec.Struct):
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    id: str | int | None = None


def run_mode(mode: str, path: Path) -> None:
    """Run one contender in this process (imports done before the clock starts); print its numbers."""
    import orjson
    from pydantic import ValidationError

    from assay.curation.validate import Validator, validate_file
    from assay.schemas.records import ChatRecord

    decode = msgspec.json.Decoder(Chat).decode
    msgspec_errors = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)
    errors: list[tuple[int, str]] = []
    seen: set[str] = set()
    records = valid = 0

    def id_error(rid: Any) -> str | None:
        if rid is None:
            return None
        if not ((type(rid) is str and rid) or type(rid) is int):
            return "'id' must be a non-empty string or an integer"
        key = str(rid)
        if key in seen:
            return f"id '{key}' was already used"
        seen.add(key)
        return None

    started, cpu_started = time.perf_counter(), time.process_time()
    if mode == "parse_floor":
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                records += 1
                try:
                    orjson.loads(line)
                    valid += 1
                except orjson.JSONDecodeError as exc:
                    errors.append((number, str(exc)))
    elif mode in ("pydantic", "msgspec"):
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                records += 1
                try:
                    if mode == "pydantic":
                        chat = ChatRecord.model_validate_json(line)
                        rid = (chat.model_extra or {}).get("id")
                    else:
                        chat = decode(line)
                        if not any(m.role == "assistant" for m in chat.messages):
                            errors.append((number, "the conversation has no assistant turn"))
                            continue
                        rid = chat.id
                except (ValidationError, *msgspec_errors) as exc:
                    errors.append((number, str(exc)))
                    continue
                problem = id_error(rid)
                if problem:
                    errors.append((number, problem))
                else:
                    valid += 1
    elif mode == "assay_validate":
        summary = validate_file(path, rejects=lambda r: errors.append((r.raw.line or 0, r.error.message)))
        records, valid = summary.records_read, summary.valid
    elif mode == "assay_curate_path":
        validator = Validator(path)
        for kept, rejected in validator.batches(512):
            valid += len(kept)
            errors += [(r.raw.line or 0, r.error.message) for r in rejected]
        records = validator.summary.records_read
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "records": records, "valid": valid, "errors": len(errors), "seconds": seconds,
                      "cpu_seconds": cpu, "peak_rss_mb": peak_mb}))


MODES = ("parse_floor", "pydantic", "msgspec", "assay_validate", "assay_curate_path")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="size of the generated file in MB")
    parser.add_argument("--invalid", type=float, default=0.1, help="share of broken lines")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best time of each counts")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        run_mode(args.mode, args.file)
        return
    path = Path(tempfile.gettempdir()) / f"assay-bench-validate-{args.mb}mb-{args.invalid:g}invalid.jsonl"
    if not path.exists():
        print(f"generating {args.mb} MB at {path} ...", file=sys.stderr)
        make_file(path, args.mb, args.invalid)
    with open("/proc/loadavg") as f:
        print(f"load average before: {' '.join(f.read().split()[:3])}")
    results: dict[str, dict[str, Any]] = {}
    for round_no in range(args.rounds):  # interleaved, best of N: this machine is noisy
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--file", str(path)], check=True,
                                 capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"  round {round_no + 1} {mode}: {result['seconds']:.2f} s, {result['cpu_seconds']:.2f} CPU s",
                  file=sys.stderr)
            if mode not in results or result["cpu_seconds"] < results[mode]["cpu_seconds"]:
                results[mode] = result
    checked = [m for m in MODES if m != "parse_floor"]
    verdicts = {m: (results[m]["records"], results[m]["valid"], results[m]["errors"]) for m in checked}
    if len(set(verdicts.values())) != 1:
        raise SystemExit(f"contenders disagree (records, valid, errors): {verdicts}")
    records, valid, rejected = verdicts["assay_validate"]
    size_mb = path.stat().st_size / 1e6
    print(f"file: {size_mb:.0f} MB, {records:,} lines, {rejected:,} invalid ({rejected / records:.1%}); "
          f"best of {args.rounds}\n")
    # ratios in CPU seconds: on a shared machine wall time mostly measures the other processes
    print("| contender | CPU s | wall s | records per CPU s | MB per CPU s | Assay validate is x faster (CPU) "
          "| Assay curate path is x faster (CPU) | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ours, curate = results["assay_validate"]["cpu_seconds"], results["assay_curate_path"]["cpu_seconds"]
    for mode in MODES:
        r = results[mode]
        cpu = r["cpu_seconds"]
        print(f"| {mode} | {cpu:.2f} | {r['seconds']:.2f} | {r['records'] / cpu:,.0f} | {size_mb / cpu:.1f} | "
              f"{cpu / ours:.2f} | {cpu / curate:.2f} | {r['peak_rss_mb']:.0f} |")
    with open("/proc/loadavg") as f:
        print(f"\nload average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
