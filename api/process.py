"""Child-process hygiene: children ignore Ctrl-C (the server decides) and never outlive the server."""

from __future__ import annotations

import os
import signal
import threading
import time


def _watch_parent(parent_pid: int, whole_group: bool) -> None:
    while True:
        if os.getppid() != parent_pid:
            if whole_group and os.getpgid(0) == os.getpid():
                # The processes this one started go too (they would wait on their queue forever).
                os.killpg(os.getpid(), signal.SIGKILL)
            os._exit(70)
        time.sleep(0.2)


def become_server_child(parent_pid: int, whole_group: bool = False) -> None:
    """Call first thing in a child process of the server.

    After a SIGKILL of the server nobody would stop its children (a process pool's children even hold their
    own queue's write end, so they never see EOF): each child watches its parent and exits when it is gone;
    with `whole_group` (a process that leads its own group) it takes its group with it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid, whole_group), daemon=True,
                     name="assay-parent-watch").start()
