"""Training speed (images/s) of the four GANs, and of PyTorch peers of LSGAN and WGAN-GP.

    python benchmarks/train_speed.py            # full run (several minutes)
    python benchmarks/train_speed.py --quick    # short check
    python benchmarks/train_speed.py --archs "" --config lsgan --config lsgan+train.head_lr=3e-4
        # the bundled config as `cytogan train` builds it (its encoder options and
        # widths), beside the same config with a key changed

Every measurement runs in a fresh subprocess (TF and torch never share a process or its
thread pools), TF and torch runs alternate, warm-up steps (tracing, oneDNN primitive
creation) are excluded, and both frameworks time the same number of steps on the same
batch; TF's steps are timed between callbacks inside one fit() call, as training runs
them. A step is one generator update (WGAN-GP: n_critic=5 critic updates + 1 generator
update), images/s = batch * steps / seconds. The machine's load average is printed with
the figures: other processes on the same cores distort them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TORCH_ARCHS = ("lsgan", "wgan")
WIDTHS = [256, 128, 64, 32]


def _steps_for(arch, steps):
    return max(2, steps // 5) if arch == "wgan" else steps


def _config_variant(spec):
    """`lsgan+train.head_lr=3e-4`: a bundled config with dotted keys replaced, as
    `cytogan train --config lsgan --set train.head_lr=3e-4` reads it."""
    from cytogan_tf.config import apply_overrides, load_config, parse_set_options

    name, *sets = spec.split("+")
    cfg = apply_overrides(load_config(name), parse_set_options(sets))
    return cfg["model"], cfg["train"]


def tf_worker(args):
    import numpy as np
    import keras
    import tensorflow as tf

    from cytogan_tf.models import build_gan, make_head_optimizer, make_optimizers
    from cytogan_tf.precision import set_policy

    policy = set_policy(args.precision)
    if args.arch.startswith("config:"):
        model_cfg, train_cfg = _config_variant(args.arch[len("config:"):])
    else:  # the plain arch: its code defaults, no encoder options
        model_cfg, train_cfg = {"arch": args.arch}, {"g_lr": 1e-4, "d_lr": 1e-4}
    model_cfg = dict(model_cfg, image_size=args.image_size)
    model_cfg.setdefault("widths", WIDTHS)
    weak = model_cfg.get("weak_labels", "none") != "none"
    if weak:  # the benchmark plates' 49 treatments, drawn at random per cell
        model_cfg.setdefault("n_classes", 49)
    gan = build_gan(model_cfg, seed=0)
    gan.compile(*make_optimizers(train_cfg), head_optimizer=make_head_optimizer(train_cfg),
                steps_per_execution=args.spe)
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.image_size, args.image_size, 3))
    batch = x.astype("float32")
    if weak:
        labels = np.random.default_rng(1).integers(0, model_cfg["n_classes"], args.batch)
        batch = (batch, labels.astype("int64"))
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    steps = _steps_for(args.arch, args.steps)
    steps = max(args.spe, steps - steps % args.spe)  # fit() runs whole executions
    warmup_steps = max(args.warmup, 1) * args.spe

    class StepClock(keras.callbacks.Callback):
        """Wall and CPU clocks at the end of the warm-up executions and of the last one.

        Timed inside one fit() call, as `cytogan train` runs: timing separate fit()
        calls also counts fit()'s own start-up and tear-down, which here stalled up to
        3.6 s per call (a 4-step WGAN-GP fit took 10.2 s, its steps 6.6 s)."""

        marks = {}

        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 in (warmup_steps, warmup_steps + steps):
                self.marks[batch + 1] = (time.perf_counter(), time.process_time())

    clock = StepClock()
    logs = gan.fit(ds, steps_per_epoch=warmup_steps + steps, epochs=1, verbose=0,
                   callbacks=[clock]).history
    (w0, c0), (w1, c1) = clock.marks[warmup_steps], clock.marks[warmup_steps + steps]
    assert all(np.isfinite(v[-1]) for v in logs.values()), logs
    return {"policy": policy, "steps": steps, "seconds": w1 - w0, "cpu_seconds": c1 - c0}


def torch_worker(args):
    import torch

    sys.path.insert(0, str(HERE))
    from torch_peer import PeerGAN

    bf16 = args.precision in ("mixed_bfloat16", "bf16")
    gan = PeerGAN(args.arch, image_size=args.image_size, widths=WIDTHS, bf16=bf16,
                  channels_last=args.torch_channels_last)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size) * 2 - 1
    for _ in range(max(args.warmup, 1)):
        gan.step(x)
    steps = _steps_for(args.arch, args.steps)
    steps = max(args.spe, steps - steps % args.spe)  # same count as the TF run
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        gan.step(x)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"policy": "bf16 autocast" if bf16 else "float32", "steps": steps, "seconds": seconds,
            "cpu_seconds": cpu_seconds}


def run_worker(framework, arch, precision, args):
    cmd = [sys.executable, __file__, "--worker", framework, "--arch", arch,
           "--precision", precision, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--spe", str(args.spe), "--batch", str(args.batch), "--image-size", str(args.image_size)]
    if args.torch_channels_last:
        cmd.append("--torch-channels-last")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if framework == "torch":
        # torch's OpenMP threads spin-wait by default; on cores shared with other
        # processes that made it 2-3x slower here, so give it the passive policy.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{framework} {arch} {precision} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["images_per_s"] = args.batch * result["steps"] / result["seconds"]
    # images per CPU-second (all threads): less distorted than wall time when other
    # processes share the cores, though a framework that spin-waits still pays for it
    result["images_per_cpu_s"] = args.batch * result["steps"] / result["cpu_seconds"]
    result["load"] = os.getloadavg()[0]
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="LSGAN and WGAN-GP only, few steps, one round")
    p.add_argument("--archs", default="dcgan,lsgan,wgan,began")
    p.add_argument("--config", action="append", default=[],
                   help="a bundled config timed as `cytogan train` builds it (repeatable); "
                        "CONFIG+section.key=value+... changes keys, e.g. "
                        "lsgan+model.widths=[128,64,32,16] (TF only)")
    p.add_argument("--precisions", default="float32,auto",
                   help="TF policies; 'auto' resolves per device (bf16 on a bf16 CPU)")
    p.add_argument("--steps", type=int, default=40, help="timed steps (WGAN-GP: a fifth)")
    p.add_argument("--warmup", type=int, default=2, help="untimed executions before timing")
    p.add_argument("--reps", type=int, default=2, help="alternating rounds; the median is reported")
    p.add_argument("--spe", type=int, default=4, help="TF steps_per_execution")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--torch-channels-last", action="store_true")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", choices=["tf", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--arch", help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        result = (tf_worker if args.worker == "tf" else torch_worker)(args)
        print(json.dumps(result))
        return
    if args.quick:
        args.archs, args.steps, args.reps, args.warmup = "lsgan,wgan", 8, 1, 1

    from cytogan_tf.precision import resolve_policy

    archs = [a for a in args.archs.split(",") if a]
    archs += [f"config:{spec}" for spec in args.config]
    precisions = [resolve_policy(name) for name in args.precisions.split(",")]
    print(f"# {args.image_size}x{args.image_size}, batch {args.batch}, widths {WIDTHS}, "
          f"steps {args.steps} (wgan {_steps_for('wgan', args.steps)}), TF steps_per_execution "
          f"{args.spe}, {args.reps} round(s), {os.cpu_count()} CPUs", flush=True)
    rows = []
    for precision in dict.fromkeys(precisions):
        for rep in range(args.reps):
            for arch in archs:
                frameworks = ["tf"] + (["torch"] if arch in TORCH_ARCHS and not args.no_torch else [])
                if rep % 2:
                    frameworks.reverse()  # alternate who goes first
                for fw in frameworks:
                    r = run_worker(fw, arch, precision, args)
                    r.update(framework=fw, arch=arch, precision=precision, rep=rep)
                    rows.append(r)
                    print(f"{fw:5s} {arch:6s} {precision:15s} round {rep}: "
                          f"{r['images_per_s']:7.1f} img/s  {r['images_per_cpu_s']:7.1f} img/cpu-s  "
                          f"(load {r['load']:.2f})", flush=True)

    med, med_cpu = {}, {}
    for key in {(r["framework"], r["arch"], r["precision"]) for r in rows}:
        mine = [r for r in rows if (r["framework"], r["arch"], r["precision"]) == key]
        med[key] = statistics.median(r["images_per_s"] for r in mine)
        med_cpu[key] = statistics.median(r["images_per_cpu_s"] for r in mine)
    print("\n# median           images/s  images/cpu-s")
    for (fw, arch, precision) in sorted(med):
        print(f"{fw:5s} {arch:6s} {precision:15s} {med[(fw, arch, precision)]:7.1f} "
              f"{med_cpu[(fw, arch, precision)]:9.1f}")
    print("\n# TF / PyTorch    wall  cpu-time")
    for precision in dict.fromkeys(precisions):
        for arch in TORCH_ARCHS:
            tf_key, pt_key = ("tf", arch, precision), ("torch", arch, precision)
            if tf_key in med and pt_key in med:
                print(f"{arch:6s} {precision:15s} {med[tf_key] / med[pt_key]:5.2f} "
                      f"{med_cpu[tf_key] / med_cpu[pt_key]:5.2f}")
    print(f"# load average now: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
