"""Does moving DMSO cells along a treatment's latent direction do what the treatment does?

For each MOA of a plate set, with an exported model:
- encode DMSO cells and the MOA's cells (BiGAN: `encode` signature; other archs: generator
  inversion), direction = mean z(MOA) - mean z(DMSO);
- move every DMSO cell along it and generate: G(z_dmso + direction);
- hand-made features (z-scored by the real DMSO cells) give two shifts: generated
  (moved cells minus the reconstructed DMSO cells G(z_dmso), so the reconstruction's own
  bias cancels) and real (treated cells minus DMSO cells). Their cosine is reported per
  MOA, with the cosine against the real DMSO cells as the base too.

    python benchmarks/latent_arithmetic.py --export /tmp/exp/demo-generator \
        --shards /tmp/enc/demo/shards --cells 40 --steps 150
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export", required=True, help="exported generator or encoder (sibling found)")
    p.add_argument("--shards", required=True)
    p.add_argument("--cells", type=int, default=40, help="cells per MOA (and of DMSO) encoded")
    p.add_argument("--method", default="auto", choices=("auto", "signature", "invert"))
    p.add_argument("--steps", type=int, default=150, help="inversion steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file for the results")
    return p.parse_args(argv)


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def main(argv=None):
    args = parse_args(argv)
    from cytogan_tf.evaluation import handcrafted_features, standardize_by
    from cytogan_tf.latent_cells import InversionSettings, LatentModels, cells_by_group

    models = LatentModels(args.export)
    images, moas = cells_by_group(args.shards, args.cells, args.seed)
    t0 = time.perf_counter()
    settings = InversionSettings(steps=args.steps, seed=args.seed)
    parts = [models.encode(images[i:i + 128], args.method, settings) for i in range(0, len(images), 128)]
    z = np.concatenate([p[0] for p in parts])
    mse = np.concatenate([p[1] for p in parts])
    encode_s = time.perf_counter() - t0

    real = handcrafted_features(images)
    dmso = moas == "DMSO"
    norm = standardize_by(real[dmso])
    real = norm(real)
    base = norm(handcrafted_features(models.generate(z[dmso])))
    rows = []
    for moa in sorted(set(moas) - {"DMSO"}):
        sel = moas == moa
        direction = z[sel].mean(0) - z[dmso].mean(0)
        moved = norm(handcrafted_features(models.generate(z[dmso] + direction)))
        real_shift = real[sel].mean(0) - real[dmso].mean(0)
        rows.append({"moa": moa, "n_cells": int(sel.sum()),
                     "cosine_vs_reconstructed_dmso": cosine(moved.mean(0) - base.mean(0), real_shift),
                     "cosine_vs_real_dmso": cosine(moved.mean(0) - real[dmso].mean(0), real_shift)})
    method = models.resolve_method(args.method)
    result = {"export": str(models.paths["generator"]), "shards": args.shards, "method": method,
              "n_cells": int(len(images)), "reconstruction_mse": float(mse.mean()),
              "encode_seconds": encode_s, "moas": rows,
              "mean_cosine": float(np.mean([r["cosine_vs_reconstructed_dmso"] for r in rows]))}
    print(f"{models.name} ({method}), {len(images)} cells, recon MSE {mse.mean():.5f}, "
          f"encode {encode_s:.0f} s")
    print(f"{'MOA':28s} {'cells':>5s} {'cos (vs G(z_dmso))':>19s} {'cos (vs real DMSO)':>19s}")
    for r in rows:
        print(f"{r['moa']:28s} {r['n_cells']:5d} {r['cosine_vs_reconstructed_dmso']:19.3f} "
              f"{r['cosine_vs_real_dmso']:19.3f}")
    print(f"{'mean':28s} {'':5s} {result['mean_cosine']:19.3f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
