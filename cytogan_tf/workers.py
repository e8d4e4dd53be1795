"""Process pools whose workers never outlive the command that started them.

Why: a `ProcessPoolExecutor` cleans up on a normal exit or Ctrl-C, but when the parent is
killed outright (SIGKILL, the OOM killer, a cluster's pre-emption) its forkserver,
resource tracker and workers stay alive holding hundreds of MB. Each worker here
watches the parent's PID and exits as soon as it is gone; the forkserver and resource
tracker then exit by themselves once no worker holds their pipes.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.5


def _exit_when_gone(parent_pid: int) -> None:
    while True:
        time.sleep(POLL_SECONDS)
        try:
            os.kill(parent_pid, 0)  # signal 0: only asks whether the process exists
        except (ProcessLookupError, PermissionError):  # gone, or its PID reused by another user
            os._exit(1)


def _start_watch(parent_pid: int) -> None:
    threading.Thread(target=_exit_when_gone, args=(parent_pid,), daemon=True,
                     name="cytogan-parent-watch").start()


def process_pool(workers: int, start_method: str = "forkserver"):
    """A ProcessPoolExecutor of `workers` processes tied to this process's life.

    forkserver (prepare) keeps workers from inheriting TensorFlow's threads; spawn
    (features) suits code that imports heavy libraries lazily.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(int(workers), mp_context=mp.get_context(start_method),
                               initializer=_start_watch, initargs=(os.getpid(),))
