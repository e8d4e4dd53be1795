"""Does pooling D's stages over the cell alone keep mean intensity apart from size?

The multiscale readout averages each stage over the whole crop, so a larger cell and a
brighter one raise the same averages. This pools every stage of the trained and the
untrained network of each seed over the cell's foreground instead (the crop's brightest
channel above its Otsu threshold, holes filled: the hand-made features' cell threshold,
without their pick of the component at the centre, so a touching neighbour counts too),
divided by the foreground's area (`mmean`), with the foreground's standard
deviation (`mstd`) and maximum (`mmax`), and scores each combination beside the global
average and max (`avg`, `max`: the multiscale readout itself) through encoders.py's
profiling and scoring, averaged over the crop's 8 flips and rotations. It trains
nothing: it reads the runs encoders.py saved (about 35 s per run on 2 cores).

    python benchmarks/masked_pooling.py --workdir /tmp/d1 --preset demo \
        --variant lsgan-set-ms-g16 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encoders  # noqa: E402  (the benchmark whose runs, tables and scoring this reuses)

READOUTS = {"avg+max (multiscale)": ("avg", "max"), "mmean+max": ("mmean", "max"),
            "mmean+mmax": ("mmean", "mmax"), "mmean+mstd": ("mmean", "mstd"),
            "mmean+mstd+max": ("mmean", "mstd", "max"), "avg+max+mmean": ("avg", "max", "mmean")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="an encoders.py workdir (its runs/ and <preset>/)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--variant", required=True, help="an encoders.py variant that was run")
    p.add_argument("--seeds", default="0,1,2")
    return p.parse_args(argv)


def cells_and_masks(preset_dir: Path):
    """Every crop in the hand-made table's cell order, in D's [-1, 1] scale, its
    foreground mask, and the table's metadata columns."""
    import pandas as pd
    from scipy import ndimage

    from cytogan_tf.features import otsu_thresholds
    from cytogan_tf.metrics import metadata_columns
    from cytogan_tf.profiling import _iterate_batches

    hand = pd.read_parquet(encoders.handmade_path(preset_dir.parent, preset_dir.name))
    meta = hand[metadata_columns(hand)].reset_index(drop=True)
    images, ids = zip(*_iterate_batches(preset_dir / "shards", 512, "uint8"))
    images, ids = np.concatenate(images), np.concatenate(ids)
    position = pd.Series(np.arange(len(ids)), index=ids)
    images = images[position.loc[meta["Metadata_CellId"].to_numpy()].to_numpy()]
    brightest = images.max(-1)
    masks = np.stack([ndimage.binary_fill_holes(b > t)
                      for b, t in zip(brightest, otsu_thresholds(brightest))]).astype(np.float32)
    return images.astype(np.float32) / 127.5 - 1.0, masks, meta


def stage_statistics(gan, images, masks, batch=64):
    """{(stage, statistic): [cells, channels]}, each the mean over the crop's 8 views
    (models.views.DihedralViews turns the crop and its mask alike)."""
    import keras

    from cytogan_tf.models.views import N_DIHEDRAL, DihedralViews

    enc = gan.encoder
    n = len([layer for layer in enc.layers if layer.name.startswith("d_avgpool")])
    stages = keras.Model(enc.inputs[0], [enc.get_layer(f"d_avgpool{i}").input for i in range(n)])
    views = DihedralViews()
    parts = {}
    for s in range(0, len(images), batch):
        m = np.asarray(views(masks[s:s + batch, ..., None]))
        for i, f in enumerate(stages(views(images[s:s + batch]), training=False)):
            f = np.asarray(f, np.float32)
            side = f.shape[1]
            k = m.shape[1] // side
            fg = m.reshape(len(m), side, k, side, k, 1).mean((2, 4))  # foreground share per cell of the map
            area = fg.sum((1, 2)) + 1e-3
            mean = (f * fg).sum((1, 2)) / area
            var = (f * f * fg).sum((1, 2)) / area - mean ** 2
            stats = {"avg": f.mean((1, 2)), "max": f.max((1, 2)), "mmean": mean,
                     "mstd": np.sqrt(np.maximum(var, 0.0)),
                     "mmax": np.where(fg > 0.25, f, -1e4).max((1, 2))}
            for name, value in stats.items():  # [8 b, C], view by view -> [b, C]
                parts.setdefault((i, name), []).append(
                    value.reshape(N_DIHEDRAL, -1, value.shape[-1]).mean(0))
    return {key: np.concatenate(value) for key, value in parts.items()}


def scored(stats, meta, statistics):
    import pandas as pd

    cols = np.concatenate([stats[k] for k in sorted(stats) if k[1] in statistics], axis=1)
    table = pd.concat([meta, pd.DataFrame(cols, columns=[f"enc_{j}" for j in range(cols.shape[1])])], axis=1)
    return encoders.score(table)


def main(argv=None):
    args = parse_args(argv)
    work = Path(args.workdir)
    images, masks, meta = cells_and_masks(work / args.preset)
    cfg = encoders.model_config(args.variant, images.shape[1], None)
    results = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        run = work / "runs" / f"{args.variant}-s{seed}-{args.preset}"
        if not run.is_dir():
            raise SystemExit(f"{run}: not found; run benchmarks/encoders.py --variants {args.variant} "
                             f"--seeds {seed} first")
        for kind in ("trained", "untrained"):
            gan = (encoders.restore(run, "multiscale") if kind == "trained"
                   else encoders.untrained(cfg, seed, "multiscale"))
            stats = stage_statistics(gan, images, masks)
            for name, statistics in READOUTS.items():
                results.setdefault((name, kind), []).append(scored(stats, meta, statistics))
    print(f"{'readout':22s} {'network':9s}  NSC / NSCB (mean)   NSC per seed")
    for (name, kind), rows in results.items():
        per = " ".join(f"{r['nsc']:.3f}" for r in rows)
        print(f"{name:22s} {kind:9s}  {np.mean([r['nsc'] for r in rows]):.3f} / "
              f"{np.mean([r['nscb'] for r in rows]):.3f}   {per}")


if __name__ == "__main__":
    main()
