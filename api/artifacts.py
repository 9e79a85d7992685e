"""Atomic, durable file moves into the data folder, and the data folder's single-server lock."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO


def fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    # Makes a rename durable; not every platform can open a directory.
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


def publish(src: Path, dest: Path) -> None:
    """Move a finished file into place: readers see the old state or the whole new file, never a part."""
    fsync_file(src)
    os.replace(src, dest)
    fsync_dir(dest.parent)


def clear_folder(folder: Path) -> int:
    """Remove leftovers of interrupted writes (partial uploads, job work folders); returns how many."""
    removed = 0
    if not folder.is_dir():
        return 0
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


class DataDirLock:
    """An exclusive lock on the data folder so two servers never share it; the OS drops it if we die."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "server.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        import fcntl

        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise RuntimeError(f"another Assay server is already using the data folder {self.path.parent}") from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
