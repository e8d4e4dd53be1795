"""Do the GANs learn cells? Sample diversity and Frechet distance on the demo plates.

    python benchmarks/sample_quality.py --archs lsgan,began --steps 2400
    python benchmarks/sample_quality.py --archs began --set model.k_init=0.0   # the paper's k_0

Each arch trains with the demo's settings (configs/<arch>.toml under configs/demo.toml's
overrides, as `cytogan demo --arch` does) on the simulated demo plates, then N samples are
compared with N real crops:
- diversity: per-pixel standard deviation across crops, averaged over pixels, in [0,1]
  units. A collapsed generator (every sample the same image) scores ~0.
- mean: average pixel intensity (the masked real crops are mostly black background).
- Frechet distance on the z-scored hand-made features, with the real-vs-real floor
  (one half of the real crops against the other).
Runs are kept in --workdir and resumed, so a longer --steps continues training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/cytogan-quality-bench")
    p.add_argument("--archs", default="lsgan,began")
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--samples", type=int, default=512, help="generated and real crops compared")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every arch, e.g. model.gamma=0.7 (repeatable)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def diversity(images_unit: np.ndarray) -> float:
    return float(images_unit.std(axis=0).mean())


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    from moa import make_shards

    from cytogan_tf.config import apply_overrides, parse_set_options
    from cytogan_tf.demo import demo_config, model_config
    from cytogan_tf.evaluation import read_real_images, sample_quality
    from cytogan_tf.training import generate_unit, load_run, train

    work = Path(args.workdir)
    demo = demo_config()
    shards = make_shards(work, demo["demo"]["synth_preset"], int(demo["prepare"]["crop_size"]),
                         args.seed, args.workers)
    real = read_real_images(shards, args.samples, seed=args.seed).astype(np.float32) / 255.0
    overrides = parse_set_options(args.overrides)
    tag = "-".join(f"{k.split('.')[-1]}{v}" for k, v in sorted(overrides.items()))
    rows = [{"model": "real crops", "diversity": diversity(real), "mean": float(real.mean())}]
    for arch in [a for a in args.archs.split(",") if a]:
        cfg = apply_overrides(model_config(demo_config(arch)), overrides)  # on the arch's keys
        run_dir = work / f"run-{arch}{'-' + tag if tag else ''}"
        t0 = time.perf_counter()
        result = train(cfg, shards, run_dir, steps=args.steps,
                       resume=(run_dir / "run.json").is_file(), seed=args.seed, verbose=0)
        seconds = time.perf_counter() - t0
        gan = load_run(run_dir).gan
        z = np.random.default_rng(args.seed + 1).standard_normal(
            (args.samples, gan.latent_dim)).astype(np.float32)
        fake = np.concatenate([generate_unit(gan, z[i: i + 256]) for i in range(0, len(z), 256)])
        q = sample_quality(real, fake, seed=args.seed)["handcrafted"]
        rows.append({"model": f"{arch} {result.step} steps" + (f" ({tag})" if tag else ""),
                     "diversity": diversity(fake), "mean": float(fake.mean()),
                     "fd": q["fd_real_fake"], "fd_floor": q["fd_real_real"],
                     "train_s": round(seconds), "run": str(run_dir)})
        print(json.dumps(rows[-1]), flush=True)

    print(f"\n# {args.samples} crops each, demo plates, seed {args.seed}")
    print(f"{'model':34s} {'diversity':>9s} {'mean':>6s} {'FD (hand-made)':>15s} {'floor':>6s}")
    for r in rows:
        fd = f"{r['fd']:15.2f} {r['fd_floor']:6.2f}" if "fd" in r else ""
        print(f"{r['model']:34s} {r['diversity']:9.4f} {r['mean']:6.3f} {fd}")
    (work / "sample_quality.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
