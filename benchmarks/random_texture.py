"""How strong is the untrained control? Texture readouts of random and fixed filter banks.

The texture readout (cytogan_tf/models/second_order.py) pools the channel correlations of
D's first stage: 4x4 stride-2 filters over the crop, then a rectifier. Untrained, that
stage is a random filter bank, and random filter banks are known texture descriptors.
This measures, with the benchmark's own plates and scoring (benchmarks/encoders.py), what
such banks reach without any training, so a trained encoder's gain can be read against
the best of them rather than against one draw:

- `rand<C>[s<seed>]`: C random 4x4x3 filters, leaky ReLU (D's first stage, untrained);
- `act<relu|abs><C>`: the same with another rectifier;
- `pyr<C>[l<levels>]`: the same filters on the crop and on its 2x (4x) pooled copies;
- `pca<C>`: the C principal directions of the cells' 4x4 patches as filters;
- `patchcov`: every patch pixel as a channel (48): the linear second-order statistics;
- `<kind>@<k>`: the cell table reduced to k principal components before profiling.

Every kind is averaged over the crop's 8 flips and rotations, as the default encoder is.

    python benchmarks/random_texture.py --workdir /tmp/enc --presets texture,demo \
        --kinds rand16,rand16s1,rand16s2,rand64,actrelu16,pyr16,pca16,patchcov
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PATCH = 4 * 4 * 3  # D's first stage: 4x4 kernels over 3 stains


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/cytogan-encoders",
                   help="benchmarks/encoders.py's workdir (its plates and shards are reused)")
    p.add_argument("--presets", default="texture,demo")
    p.add_argument("--kinds", default="rand16,rand16s1,rand16s2,rand64,actrelu16,pyr16,pca16,patchcov")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


def patches(x):
    """[B, H, W, 3] -> [B, H/2, W/2, 48]: what each first-stage unit sees."""
    import tensorflow as tf

    return tf.image.extract_patches(x, [1, 4, 4, 1], [1, 2, 2, 1], [1, 1, 1, 1], "SAME")


def correlations(responses):
    from cytogan_tf.models.second_order import ChannelCorrelation

    return ChannelCorrelation()(responses)  # one layer per width: it builds for its channels


def glorot(rng, channels):
    limit = np.sqrt(6 / (PATCH + channels))
    return rng.uniform(-limit, limit, (PATCH, channels)).astype(np.float32)


def bank(weights, rectify):
    import tensorflow as tf

    return lambda x: correlations(rectify(tf.einsum("bhwk,kc->bhwc", patches(x), weights)))


def patch_directions(shards, channels, rng):
    """The leading principal directions of the cells' 4x4 patches (a data-fitted bank)."""
    from cytogan_tf.data.pipeline import make_dataset

    sample = []
    for i, batch in enumerate(make_dataset(shards, 256, shuffle=False, augment=False, repeat=False)):
        p = patches(batch).numpy().reshape(-1, PATCH)
        sample.append(p[rng.choice(len(p), 20000, replace=False)])
        if i >= 3:
            break
    p = np.concatenate(sample)
    _, _, vt = np.linalg.svd(p - p.mean(0), full_matrices=False)
    return vt[:channels].T.astype(np.float32)


def readout(kind, shards):
    import tensorflow as tf

    lrelu = lambda y: tf.nn.leaky_relu(y, 0.2)
    if kind == "patchcov":
        return lambda x: correlations(patches(x))
    if kind.startswith("pca"):
        return bank(patch_directions(shards, int(kind[3:]), np.random.default_rng(0)), lrelu)
    if kind.startswith("act"):
        name = kind[3:].rstrip("0123456789")
        rectify = {"relu": tf.nn.relu, "abs": tf.abs}[name]
        return bank(glorot(np.random.default_rng(0), int(kind[3 + len(name):])), rectify)
    if kind.startswith("pyr"):
        channels, _, levels = kind[3:].partition("l")
        one = bank(glorot(np.random.default_rng(0), int(channels)), lrelu)

        def pyramid(x):
            out = []
            for _ in range(int(levels or 2)):
                out.append(one(x))
                x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
            return tf.concat(out, 1)
        return pyramid
    if kind.startswith("rand"):
        channels, _, seed = kind[4:].partition("s")
        return bank(glorot(np.random.default_rng(int(seed or 0)), int(channels)), lrelu)
    raise SystemExit(f"unknown kind {kind!r}")


class DihedralEncoder:
    """The profiling encoder interface ([0, 1] crops in), mean over the 8 dihedral views."""

    def __init__(self, name, fn, image_size):
        self.name, self.path, self.image_size, self.fn = name, Path(name), int(image_size), fn

    def __call__(self, images):
        import tensorflow as tf

        x = tf.constant(images * 2.0 - 1.0, tf.float32)
        views = []
        for k in range(4):
            r = tf.image.rot90(x, k)
            views += [self.fn(r).numpy(), self.fn(tf.image.flip_left_right(r)).numpy()]
        return np.mean(views, axis=0).astype(np.float32)


def principal_components(table, k):
    import pandas as pd
    from sklearn.decomposition import PCA

    from cytogan_tf.metrics import metadata_columns

    meta = metadata_columns(table)
    x = table.drop(columns=meta).to_numpy(np.float64)
    z = PCA(k, random_state=0).fit_transform((x - x.mean(0)) / (x.std(0) + 1e-9))
    return pd.concat([table[meta].reset_index(drop=True),
                      pd.DataFrame(z, columns=[f"pc_{i}" for i in range(k)])], axis=1)


def main(argv=None):
    import pandas as pd

    import encoders as bench
    from cytogan_tf.config import load_config
    from cytogan_tf.profiling import cell_features

    args = parse_args(argv)
    work = Path(args.workdir)
    crop = int(load_config("demo")["prepare"]["crop_size"])
    out = work / "random_texture.json"
    rows = json.loads(out.read_text()) if out.is_file() else []
    for preset in args.presets.split(","):
        shards = bench.make_shards(work, preset, crop, args.data_seed, args.workers)
        for kind in args.kinds.split(","):
            if any(r["preset"] == preset and r["kind"] == kind for r in rows):
                continue
            base, _, k = kind.partition("@")
            cache = work / preset / f"random_texture-{base}.parquet"
            if cache.is_file():
                table = pd.read_parquet(cache)
            else:
                encoder = DihedralEncoder(base, readout(base, shards), crop)
                table, _ = cell_features(shards, features="encoder", encoder=encoder, progress=False)
                table.to_parquet(cache)
            if k:
                table = principal_components(table, int(k))
            r = bench.score(table)
            rows.append({"preset": preset, "kind": kind, **r})
            out.write_text(json.dumps(rows, indent=1))
            print(f"{preset:8s} {kind:14s} NSC {r['nsc']:.3f} NSCB {r['nscb']:.3f} mAP {r['map']:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
