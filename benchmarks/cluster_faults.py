"""Dask fault tolerance of `prepare --scheduler local`, checked end to end (Linux, /proc).

Run:  python benchmarks/cluster_faults.py [PLATES] [--workdir DIR]
(PLATES: BBBC021-layout plates; default: simulated with the demo preset into the workdir)

1. SIGKILL one Dask worker once the first shard part is written: the run must finish, with
   shards byte-identical to an in-process run.
2. SIGKILL the client (the cytogan command) after its first parts: every process it
   started must be gone 2 s later, and a re-run must finish the job with identical bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_workers import _alive, _children  # noqa: E402  (the /proc helpers of the tests)


def digest(d: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())
            if p.is_file()}


def wait_for_first_part(out: Path, proc) -> None:
    while proc.poll() is None and not list((out / ".parts").glob("part-*.tfrecord")):
        time.sleep(0.2)
    if proc.poll() is not None:
        raise SystemExit("the run finished before its first part was seen; use more image sets")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("plates", nargs="?", default=None)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cytogan-faults-"))
    plates = Path(args.plates) if args.plates else work / "plates"
    if not plates.exists():
        from cytogan_tf.data.synthetic import load_preset, simulate_plates

        simulate_plates(plates, load_preset("demo"), progress=False)
    base = [sys.executable, "-m", "cli.main", "prepare", str(plates), "--crop-size", "64",
            "--shards-count", "8", "--limit", "120", "--quiet"]
    quiet = dict(cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ref_dir = work / "in-process"
    shutil.rmtree(ref_dir, ignore_errors=True)
    subprocess.run(base + ["--out", str(ref_dir)], check=True, **quiet)
    ref = digest(ref_dir)
    cluster = base + ["--scheduler", "local", "--workers", "2"]

    out = work / "worker-killed"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(cluster + ["--out", str(out)], **quiet)
    wait_for_first_part(out, proc)
    workers = [k for k in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
    os.kill(workers[0], signal.SIGKILL)
    proc.wait()
    print(f"1. killed worker {workers[0]} of {sorted(workers)}: exit {proc.returncode}, "
          f"identical to in-process: {digest(out) == ref}")

    out = work / "client-killed"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(cluster + ["--out", str(out)], **quiet)
    wait_for_first_part(out, proc)
    kids = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    parts = sorted(p.name for p in (out / ".parts").glob("part-*.tfrecord"))
    time.sleep(2)
    alive = [k for k in kids if _alive(k)]
    rerun = subprocess.run(cluster + ["--out", str(out)], **quiet)
    print(f"2. client killed with {len(parts)} parts done; {len(kids)} descendants, alive 2 s "
          f"later: {alive}; re-run exit {rerun.returncode}, identical: {digest(out) == ref}")


if __name__ == "__main__":
    main()
