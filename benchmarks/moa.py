"""MOA benchmark on the synthetic demo plates: NSC / NSCB 1-NN accuracy and mAP of
hand-made features, an untrained encoder and briefly trained encoders, plus embedding
speed through the exported SavedModel.

    python benchmarks/moa.py --workdir /tmp/moa-bench --archs lsgan,wgan --steps 300

Stages reuse what a previous run left in --workdir (plates, shards, runs, exports), so
an interrupted benchmark continues. Results: <workdir>/moa_benchmark.json and a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/cytogan-moa-bench")
    p.add_argument("--preset", default="demo", help="cytogan synth preset (tiny, demo, full)")
    p.add_argument("--crop-size", type=int, default=64)
    p.add_argument("--archs", default="dcgan,lsgan,wgan,began",
                   help="comma-separated trained archs ('' for none)")
    p.add_argument("--steps", type=int, default=300, help="training steps per arch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--normalize", default="dmso", choices=("none", "dmso", "tvn"))
    p.add_argument("--no-handcrafted", action="store_true")
    p.add_argument("--no-random", action="store_true", help="skip the untrained encoder")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_shards(work: Path, preset: str, crop: int, seed: int, workers: int) -> Path:
    from cytogan_tf.data.prepare import PrepareOptions, prepare
    from cytogan_tf.data.synthetic import load_preset, simulate_plates

    plates, shards = work / "plates", work / "shards"
    if not (plates / "BBBC021_v1_image.csv").is_file():
        settings = dataclasses.replace(load_preset(preset), seed=seed)  # settings are frozen
        print(simulate_plates(plates, settings, progress=False))
    if not (shards / "dataset.json").is_file():
        res = prepare(plates, shards, options=PrepareOptions(crop_size=crop, workers=workers, seed=seed,
                                                             progress=False))
        print(res.summary())
    return shards


def random_encoder(work: Path, arch: str, crop: int, seed: int) -> Path:
    """build_gan + export with no training: what the architecture alone gives."""
    from cytogan_tf.config import load_config
    from cytogan_tf.export import export_models, list_versions, model_dirs
    from cytogan_tf.models import build_gan

    name = f"random-{arch}"
    base = work / "exported"
    enc_dir = model_dirs(name, base)["encoder"]
    if list_versions(enc_dir):
        return enc_dir
    cfg = load_config(arch)
    model_cfg = dict(cfg["model"], image_size=crop)
    gan = build_gan(model_cfg, seed=seed)
    gan.generator(np.zeros((1, gan.latent_dim), np.float32))
    gan.encoder(np.zeros((1, crop, crop, 3), np.float32))
    export_models(gan.generator, gan.encoder, {"arch": arch, "image_size": crop,
                                               "latent_dim": int(gan.latent_dim), "step": 0}, name, base)
    return enc_dir


def trained_encoder(work: Path, shards: Path, arch: str, crop: int, steps: int, batch: int, seed: int):
    from cytogan_tf.config import apply_overrides, load_config
    from cytogan_tf.export import export_run, list_versions, model_dirs
    from cytogan_tf.training import train

    name = f"{arch}-{steps}"
    base = work / "exported"
    enc_dir = model_dirs(name, base)["encoder"]
    if list_versions(enc_dir):
        return enc_dir, None
    run_dir = work / "runs" / name
    cfg = apply_overrides(load_config(arch), {"model.image_size": crop, "train.batch_size": batch,
                                              "train.sample_every": max(steps, 1),
                                              "train.checkpoint_every": max(steps, 1)})
    t0 = time.perf_counter()
    result = train(cfg, shards, run_dir, steps=steps, seed=seed, resume=run_dir.exists(), verbose=0)
    train_s = time.perf_counter() - t0
    export_run(run_dir, name, base)
    return enc_dir, {"train_seconds": train_s, "train_images_per_s": result.images_per_second,
                     "precision": result.precision}


def evaluate(work: Path, shards: Path, label: str, *, encoder=None, features="encoder",
             normalize="dmso", workers=1) -> dict:
    from cytogan_tf.evaluation import evaluate_profiles
    from cytogan_tf.profiling import profile_shards

    out = work / "profiles" / label
    t0 = time.perf_counter()
    info = profile_shards(shards, out, encoder=encoder, features=features, normalize=normalize,
                          workers=workers, progress=False)
    profile_s = time.perf_counter() - t0
    m = evaluate_profiles(out)
    by_norm = compare_normalizations(out / "cells.parquet")
    return {"by_normalization": by_norm, "label": label, "nsc": m["nsc"]["accuracy"], "nscb": m["nscb"]["accuracy"], "map": m["map"],
            "chance": m["nsc"]["chance_prior"], "chance_uniform": m["nsc"]["chance_uniform"],
            "nscb_dropped": m["nscb"]["moas_dropped"], "n_treatments": m["n_treatments"],
            "n_cells": info["n_cells"], "cells_per_s": info.get("cells_per_s"),
            "profile_seconds": profile_s}


def compare_normalizations(cells_path) -> dict:
    """NSC / NSCB / mAP of the same cells under each profile normalisation (cheap: the
    per-cell table is reused, only aggregation and evaluation rerun)."""
    import pandas as pd

    from cytogan_tf.evaluation import evaluate_table
    from cytogan_tf.profiling import build_profiles

    cells = pd.read_parquet(cells_path)
    out = {}
    for norm, scope in (("none", "global"), ("dmso", "plate"), ("tvn", "global"), ("tvn", "plate")):
        r = evaluate_table(build_profiles(cells, normalize=norm, tvn_scope=scope)["treatments_mean"])
        out[f"{norm}-{scope}" if norm == "tvn" else norm] = {
            "nsc": r["nsc"].accuracy, "nscb": r["nscb"].accuracy, "map": r["map"]}
    return out


def main(argv=None):
    args = parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    shards = make_shards(work, args.preset, args.crop_size, args.seed, args.workers)
    rows = []

    def record(row):
        rows.append(row)
        print(f"{row['label']:<20} NSC {row['nsc']:.3f}  NSCB {row['nscb']:.3f}  mAP {row['map']:.3f}  "
              f"chance {row['chance']:.3f}", flush=True)
        (work / "moa_benchmark.json").write_text(json.dumps({"args": vars(args), "results": rows}, indent=2))

    if not args.no_handcrafted:
        record(evaluate(work, shards, "handcrafted", features="handcrafted", normalize=args.normalize,
                        workers=args.workers))
    archs = [a for a in args.archs.split(",") if a]
    if not args.no_random:
        for arch in archs or ["lsgan"]:
            enc = random_encoder(work, arch, args.crop_size, args.seed)
            record(evaluate(work, shards, f"random-{arch}", encoder=enc, normalize=args.normalize))
    for arch in archs:
        enc, train_info = trained_encoder(work, shards, arch, args.crop_size, args.steps, args.batch_size,
                                          args.seed)
        row = evaluate(work, shards, f"{arch}-{args.steps}steps", encoder=enc, normalize=args.normalize)
        row.update(train_info or {})
        record(row)

    print(f"\nMOA benchmark: preset {args.preset}, crops {args.crop_size}, normalize {args.normalize}, "
          f"{rows[0]['n_cells'] if rows else 0} cells, {rows[0]['n_treatments'] if rows else 0} treatments")
    print("chance = sum of squared MOA frequencies over the queries (random guess by class frequency)")
    print(f"{'features':<20} {'NSC':>6} {'NSCB':>6} {'mAP':>6} {'chance':>7} {'embed cells/s':>14}")
    for r in rows:
        speed = f"{r['cells_per_s']:.0f}" if r.get("cells_per_s") else "-"
        print(f"{r['label']:<20} {r['nsc']:>6.3f} {r['nscb']:>6.3f} {r['map']:>6.3f} {r['chance']:>7.3f} {speed:>14}")
    print("\nNSC / NSCB by profile normalisation (treatment means)")
    norms = list(rows[0]["by_normalization"]) if rows else []
    print(f"{'features':<20} " + " ".join(f"{n:>15}" for n in norms))
    for r in rows:
        cells = " ".join(f"{r['by_normalization'][n]['nsc']:>7.3f}/{r['by_normalization'][n]['nscb']:<7.3f}"
                         for n in norms)
        print(f"{r['label']:<20} {cells}")
    return rows


if __name__ == "__main__":
    main()
