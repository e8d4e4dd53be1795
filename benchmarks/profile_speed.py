"""Speed of `profile` (per-cell features -> well and treatment tables), in-process vs Dask.

Run:  python benchmarks/profile_speed.py --shards DIR [--encoder EXPORT] [--features handcrafted]

Profiles the same shards in this process (1 worker, then a 2-process feature pool) and on
a LocalCluster of 1 and 2 workers (one task per shard: each worker imports TensorFlow,
loads the encoder once and computes the shard's features), checks that every table is
byte-identical to the in-process one, and prints cells/s with the ratios. Timings include
the cluster's start-up and the workers' TensorFlow import, as a user would see them.
"warm" rows reuse a running cluster (workers past their imports), as a long screen does.
Make shards with `python benchmarks/prepare.py --keep DIR` (DIR/shards-w1).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path


def _tables(d: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())
            if p.suffix in (".parquet", ".csv")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=Path, required=True)
    ap.add_argument("--encoder", default=None, help="exported encoder (for --features encoder/both)")
    ap.add_argument("--features", default="handcrafted", choices=("encoder", "handcrafted", "both"))
    args = ap.parse_args()

    import tensorflow  # noqa: F401  imported up front: the in-process timings exclude it

    from cytogan_tf.profiling import profile_shards

    work = Path(tempfile.mkdtemp(prefix="cytogan-profile-bench-"))
    rows, reference = [], None
    for label, workers, scheduler in (("in-process", 1, None), ("process pool, 2", 2, None),
                                      ("LocalCluster, 1 worker", 1, "local"),
                                      ("LocalCluster, 2 workers", 2, "local")):
        out = work / label.replace(" ", "_").replace(",", "")
        t0 = time.perf_counter()
        result = profile_shards(args.shards, out, encoder=args.encoder, features=args.features,
                                normalize="none", workers=workers, progress=False,
                                scheduler=scheduler)
        seconds = time.perf_counter() - t0
        tables = _tables(out)
        reference = reference or tables
        rows.append((label, seconds, result["n_cells"], tables == reference))
        print(f"  done: {label} ({os.getloadavg()[0]:.1f} load)", flush=True)
    # Warm: a running cluster whose workers have imported TensorFlow and loaded the encoder
    # (a second profile on the same client), which is the steady state of a long screen.
    from cytogan_tf.cluster import dask_client

    for n in (1, 2):
        with dask_client("local", n, quiet=True) as client:
            profile_shards(args.shards, work / "warmup", encoder=args.encoder, features=args.features,
                           normalize="none", progress=False, scheduler=client)
            out = work / f"warm{n}"
            t0 = time.perf_counter()
            result = profile_shards(args.shards, out, encoder=args.encoder, features=args.features,
                                    normalize="none", progress=False, scheduler=client)
            seconds = time.perf_counter() - t0
        rows.append((f"LocalCluster, {n} warm", seconds, result["n_cells"], _tables(out) == reference))
    print(f"\n{'profile, ' + args.features:32} {'seconds':>8} {'cells':>7} {'cells/s':>9} identical")
    for label, seconds, cells, same in rows:
        print(f"{label:32} {seconds:8.2f} {cells:7d} {cells / seconds:9.1f} {same}")
    speed = {label: cells / seconds for label, seconds, cells, _ in rows}
    print(f"LocalCluster 2 vs 1 worker: {speed['LocalCluster, 2 workers'] / speed['LocalCluster, 1 worker']:.2f}x "
          f"cold, {speed['LocalCluster, 2 warm'] / speed['LocalCluster, 1 warm']:.2f}x warm; "
          f"1 warm worker vs in-process: {speed['LocalCluster, 1 warm'] / speed['in-process']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
