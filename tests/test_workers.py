"""Worker pools die with their parent: a SIGKILLed command leaves no processes behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")

SCRIPT = textwrap.dedent("""
    import sys, time
    from cytogan_tf.workers import process_pool
    pool = process_pool(2, sys.argv[1])
    futures = [pool.submit(time.sleep, 60) for _ in range(2)]
    time.sleep(2)  # both workers are busy sleeping now
    print("READY", flush=True)
    time.sleep(60)
""")


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid` (read from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already exited


def assert_sigkill_leaves_no_descendant(argv, *, min_children: int, timeout: float, cwd=None):
    """Run `argv` until it prints READY, SIGKILL it, and check that every process it had
    started is gone within `timeout` seconds."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=cwd)
    try:
        assert proc.stdout.readline().strip() == "READY"
        kids = _children(proc.pid)
        assert len(kids) >= min_children
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.2)
        assert not [k for k in kids if _alive(k)]
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_sigkill_of_the_parent_leaves_no_worker_alive(method):
    # the two workers (plus forkserver / resource tracker)
    assert_sigkill_leaves_no_descendant([sys.executable, "-c", SCRIPT, method],
                                        min_children=2, timeout=15)
