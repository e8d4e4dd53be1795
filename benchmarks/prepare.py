"""Speed of `prepare` (segmentation -> shards) and of reading the shards with tf.data.

Run:  python benchmarks/prepare.py [--images 8] [--data DIR] [--keep DIR] [--dask]

Simulates BBBC021-sized plates (the synth "full" preset: 1024x1280 16-bit, ~90 cells per
field) unless --data points at existing ones, prepares the first --images image sets with
1 and 2 workers (and, with --dask, on a LocalCluster of 1 and 2 workers), and measures tf.data read throughput from the shards (64-crop batches of
64, with and without augmentation). The load average is printed because the machine may
be shared: figures taken under load understate the real speed. Prepare timings include
the normalisation pass, worker start-up and the merge, not the TensorFlow import.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path


def _load() -> str:
    return "load avg " + " ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cpus"


def bench_prepare(data: Path, out: Path, images: int, workers: int,
                  scheduler: str | None = None) -> dict:
    from cytogan_tf.data.prepare import PrepareOptions, prepare, prepare_section

    options = PrepareOptions.from_config(prepare_section("synth"), workers=workers,
                                         limit=images, progress=False, scheduler=scheduler)
    t0 = time.perf_counter()
    result = prepare(data, out, options=options)
    dt = time.perf_counter() - t0
    how = f"LocalCluster {workers} worker(s)" if scheduler else (
        "in-process" if workers == 1 else f"process pool, {workers} workers")
    return {"what": f"prepare, {how}", "seconds": dt, "cells": result.n_cells,
            "cells/s": result.n_cells / dt, "image sets/s": result.n_image_sets / dt}


def scheduler_overhead(tasks: int = 200) -> float:
    """Seconds of Dask round trip per task: trivial tasks on a running LocalCluster of 2."""
    from cytogan_tf.cluster import dask_client, map_in_order

    with dask_client("local", 2, quiet=True) as client:
        list(map_in_order(client, abs, range(20), key="warm"))
        t0 = time.perf_counter()
        list(map_in_order(client, abs, range(tasks), key="noop"))
        return (time.perf_counter() - t0) / tasks


def bench_read(shards_dir: Path, augment: bool, batches: int = 200) -> dict:
    from cytogan_tf.data.pipeline import make_dataset

    it = iter(make_dataset(shards_dir, 64, seed=0, augment=augment))
    for _ in range(5):  # warm up: thread pools, shuffle buffer fill
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    dt = time.perf_counter() - t0
    return {"what": f"tf.data read, batch 64{', augment' if augment else ''}", "seconds": dt,
            "cells": 64 * batches, "cells/s": 64 * batches / dt, "image sets/s": float("nan")}


def _digest(d: Path) -> dict:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())
            if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8, help="image sets to prepare")
    ap.add_argument("--data", type=Path, help="existing BBBC021-layout plates (else simulated)")
    ap.add_argument("--keep", type=Path, help="keep the work directory here")
    ap.add_argument("--dask", action="store_true",
                    help="also LocalCluster with 1 and 2 workers (needs .[dask]); checks the "
                         "shards are byte-identical and prints the scheduler overhead per task")
    args = ap.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="cytogan-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        from cytogan_tf.data.synthetic import load_preset, simulate_plates

        data = work / "plates"
        if not data.exists():
            # The full preset's image size and cell density, with the fewest wells allowed.
            s = dataclasses.replace(load_preset("full"), plates=2, wells_per_treatment=1,
                                    sites=1, moas=6, compounds_per_moa=2,
                                    concentrations_per_compound=2, dmso_wells_per_plate=1,
                                    control_wells_per_plate=1)
            t0 = time.perf_counter()
            simulate_plates(data, s, progress=False)
            print(f"simulated plates in {time.perf_counter() - t0:.1f} s -> {data}")

    import tensorflow  # noqa: F401  imported once up front: timings exclude its ~4 s import

    print(_load())
    rows = []
    modes = [(1, None), (2, None)]
    if args.dask:
        modes += [(1, "local"), (2, "local")]
    for workers, scheduler in modes:
        out = work / f"shards-w{workers}{'-dask' if scheduler else ''}"
        shutil.rmtree(out, ignore_errors=True)
        rows.append(bench_prepare(data, out, args.images, workers, scheduler))
        print(f"  done: {rows[-1]['what']} ({_load()})")
        if scheduler and _digest(out) != _digest(work / "shards-w1"):
            raise SystemExit(f"{out}: not byte-identical to the in-process shards")
    for augment in (False, True):
        rows.append(bench_read(work / "shards-w1", augment))

    print()
    print(f"{'benchmark':34} {'seconds':>8} {'cells':>7} {'cells/s':>9} {'image sets/s':>13}")
    for r in rows:
        print(f"{r['what']:34} {r['seconds']:8.2f} {r['cells']:7d} {r['cells/s']:9.1f} "
              f"{r['image sets/s']:13.2f}")
    if args.dask:
        base = next(r for r in rows if r["what"] == "prepare, LocalCluster 1 worker(s)")
        two = next(r for r in rows if r["what"] == "prepare, LocalCluster 2 worker(s)")
        inproc = rows[0]
        print(f"LocalCluster 2 vs 1 worker: {two['cells/s'] / base['cells/s']:.2f}x; "
              f"LocalCluster 1 vs in-process: {base['cells/s'] / inproc['cells/s']:.2f}x; "
              f"scheduler overhead {1000 * scheduler_overhead():.1f} ms per task")
    print(_load())
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
