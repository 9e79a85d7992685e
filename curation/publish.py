"""The output folder of a curation run: checked before anything is written, worked in privately, and
published as one unit.

- A run writes into its own work folder (`.assay-run-*`) inside the output folder, holding a lock on
  it while it lives. Work folders whose lock is free belong to runs that died (SIGKILL, power loss):
  every run sweeps them away when it starts. A run that ends any other way removes its own.
- Publishing moves the finished files into the output folder and writes `manifest.json` last; the
  old manifest is removed before the first file moves. A folder with a manifest whose files match it
  holds one whole run; readers trust `published_outputs()`, which checks that. Termination signals
  that arrive while the files move are held until the move is done, so SIGTERM, SIGINT or SIGHUP can
  never leave two runs mixed; only SIGKILL or a crash can, and then no manifest says it is complete.
- `signals_raise()` turns SIGTERM and SIGHUP into an exception (`Terminated`) for the command line,
  so cleanup code runs before the process exits.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from assay.schemas import registry

OUTPUT_FILES = ("curated.jsonl", "rejected.jsonl", "report.json", "report.html", "report.md")
DATA_FILES = {"jsonl": ("curated.jsonl", "rejected.jsonl"), "parquet": ("curated.parquet", "rejected.parquet")}
"""The curated set and the rejects by output format; a run publishes one pair and removes the other."""
MANIFEST = "manifest.json"
WORK_PREFIX = ".assay-run-"
_HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class OutputError(Exception):
    """The output folder cannot be used as asked (an input would be overwritten, it is a file, it is
    not writable): one clear line for the user, raised before anything is written."""


class Terminated(BaseException):  # noqa: N818 - named like KeyboardInterrupt, which it parallels
    """SIGTERM or SIGHUP arrived while `signals_raise()` was active. A BaseException, like
    KeyboardInterrupt, so that `except Exception` in a step does not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


# -- checks before anything is written -------------------------------------------------------------

def step_output_files() -> set[str]:
    """Files registered steps may add (topics.json, ...); one left by an earlier run that this run did
    not write is removed, so the folder never mixes two runs."""
    return {name for step in registry.STEPS for name in step.outputs}


def output_files(output_format: str = "jsonl") -> tuple[str, ...]:
    """The files every run publishes, for its output format."""
    return (*DATA_FILES[output_format], *OUTPUT_FILES[2:])


def _data_files() -> set[str]:
    return {name for pair in DATA_FILES.values() for name in pair}


def output_paths(out_dir: Path) -> list[Path]:
    names = dict.fromkeys((*OUTPUT_FILES, *sorted(_data_files()), *sorted(step_output_files()), MANIFEST))
    return [out_dir / name for name in names]


def refuse_overwriting_inputs(inputs: Iterable[str | Path | None], outputs: Iterable[Path]) -> None:
    """Raise OutputError when an output would replace an input: the same path, or the same file reached
    through a symbolic or hard link (compared by device and inode)."""
    existing = [Path(p) for p in inputs if p is not None and Path(p).exists()]
    for output in outputs:
        if not output.exists():
            continue
        for source in existing:
            if os.path.samefile(output, source):
                same = "" if output.absolute() == source.absolute() else f" (the same file as {source})"
                raise OutputError(f"{output} is an input of this run{same}; writing it would destroy the input. "
                                  "Choose another output path.")


def check_output_folder(out_dir: Path) -> None:
    """One clear error for an --out that can never work: an existing file, or a folder under a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file; it must name a folder (created if missing)")
    for parent in out_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"--out {out_dir}: {parent} is a file, not a folder")
            break


def _oserror(what: str, path: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason += " (the folder is not writable)"
    return OutputError(f"cannot {what} {path}: {reason}")


# -- locks and signals -----------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(folder: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on a folder itself (no lock file); yields whether it was had."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGTERM, SIGINT and SIGHUP until the block ends, then deliver them as they would have been.

    Only the main thread can change signal handlers; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {}
    for signum in _HELD_SIGNALS:
        previous[signum] = signal.signal(signum, lambda s, _f: arrived.append(s))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for held in dict.fromkeys(arrived):
            signal.raise_signal(held)  # now handled as before: the default ends the process


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While active, SIGTERM and SIGHUP raise `Terminated` in the main thread (of this process only:
    forked worker processes keep the default and simply end)."""
    owner = os.getpid()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# -- the run's folder -------------------------------------------------------------------------------

def sweep_stale_work_folders(out_dir: Path) -> int:
    """Remove work folders of runs that died; returns how many. A live run holds its folder's lock."""
    removed = 0
    for entry in out_dir.glob(f"{WORK_PREFIX}*"):
        if not entry.is_dir() or entry.is_symlink():
            continue
        try:
            with _locked(entry, blocking=False) as free:
                if not free:
                    continue
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except FileNotFoundError:  # its run just removed it
            continue
    return removed


class OutputFolder:
    """One run's use of an output folder: `with OutputFolder(out) as work:` ... `publish(...)`."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.work: Path | None = None
        self.swept = 0
        self._work_fd: int | None = None

    def __enter__(self) -> Path:
        out = self.out_dir
        check_output_folder(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _oserror("create the output folder", out, exc) from exc
        try:
            # Under the folder's lock, so no other run's sweep sees our work folder before we lock it.
            with _locked(out):
                self.swept = sweep_stale_work_folders(out)
                self.work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=out))
                self._work_fd = os.open(self.work, os.O_RDONLY)
                fcntl.flock(self._work_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise _oserror("write to the output folder", out, exc) from exc
        return self.work

    def __exit__(self, *exc: object) -> None:
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
        if self._work_fd is not None:
            os.close(self._work_fd)
            self._work_fd = None

    def publish(self, names: Iterable[str], extra_dir: Path | None = None) -> dict[str, Any]:
        """Move the named files of the work folder, and every file in `extra_dir`, into the output
        folder as one unit; returns the manifest written last."""
        assert self.work is not None, "publish() needs the work folder: use `with OutputFolder(...)`"
        out = self.out_dir
        moves = [(self.work / name, out / name) for name in names]
        if extra_dir is not None:
            moves += [(path, out / path.name) for path in sorted(extra_dir.iterdir())]
        produced = {dest.name for _, dest in moves}
        manifest = {
            "run": self.work.name[len(WORK_PREFIX):],
            "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": {dest.name: {"bytes": src.stat().st_size} for src, dest in moves},
        }
        for src, _ in moves:
            _fsync(src)
        with _locked(out), signals_held():
            (out / MANIFEST).unlink(missing_ok=True)
            _fsync(out)
            for src, dest in moves:
                os.replace(src, dest)
            for name in (step_output_files() | _data_files()) - produced:
                (out / name).unlink(missing_ok=True)
            _fsync(out)
            staged = self.work / MANIFEST
            staged.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
            _fsync(staged)
            os.replace(staged, out / MANIFEST)
            _fsync(out)
        return manifest


def _fsync(path: Path) -> None:
    # Makes a write or a rename durable before the next step depends on it; not every platform can
    # open a folder, so that part is best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def published_outputs(out_dir: str | Path) -> dict[str, Path]:
    """The files of the last complete run in `out_dir`, by name; OutputError when the folder holds no
    complete run (never published, or a publish was cut short by SIGKILL or a crash)."""
    out = Path(out_dir)
    try:
        manifest = orjson.loads((out / MANIFEST).read_bytes())
    except FileNotFoundError as exc:
        raise OutputError(f"{out}: no {MANIFEST}, so no complete run was published here "
                          "(or the last publish was interrupted); run the curation again") from exc
    except orjson.JSONDecodeError as exc:
        raise OutputError(f"{out / MANIFEST}: not valid JSON") from exc
    files = {}
    for name, entry in manifest["files"].items():
        path = out / name
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise OutputError(f"{path} is not the file run {manifest['run']} published; "
                              "the folder mixes runs: run the curation again")
        files[name] = path
    return files
