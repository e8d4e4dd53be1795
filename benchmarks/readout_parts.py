"""Which parts of D's features does training change? Per-stage and joined readouts,
trained vs untrained, from the per-cell tables `benchmarks/encoders.py` saves.

The multiscale readout is the average and max of every D stage; this scores each stage
alone, the averages and maxima alone, the deeper stages' maxima, and the texture readout
joined with the multiscale readout or with parts of it, for the trained and the untrained
network of each seed, through the same profiling and scoring as encoders.py. It reads the
dihedral tables only and trains nothing (a few seconds per table).

    python benchmarks/readout_parts.py --workdir /tmp/enc13 \
        --variant lsgan-ssl-window-both --seeds 0,1,2 --presets texture,demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import encoders  # noqa: E402  (the benchmark whose tables and scoring this reuses)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="an encoders.py workdir (its tables/)")
    p.add_argument("--variant", required=True, help="an encoders.py variant that was run")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--presets", default="texture,demo")
    return p.parse_args(argv)


def stage_columns(widths_deep_first, stages, kinds):
    """The multiscale table's columns of `stages` (0 = shallowest) and `kinds` (avg, max):
    multiscale_pool writes each stage's averages, then its maxima, shallow stage first."""
    cols, offset = [], 0
    for i, width in enumerate(reversed(list(widths_deep_first))):
        for kind in ("avg", "max"):
            if i in stages and kind in kinds:
                cols += [f"enc_{j}" for j in range(offset, offset + width)]
            offset += width
    return cols


def parts(widths):
    """name -> (columns of the multiscale table, whether the texture readout joins them)."""
    n = len(list(widths))
    # Stages are named from 1, the shallowest (the one the texture readout reads).
    out = {f"stage {i + 1}": (stage_columns(widths, [i], ("avg", "max")), False) for i in range(n)}
    every = list(range(n))
    out.update({
        "averages": (stage_columns(widths, every, ("avg",)), False),
        "maxima": (stage_columns(widths, every, ("max",)), False),
        f"maxima of stages 2-{n}": (stage_columns(widths, every[1:], ("max",)), False),
        "texture + multiscale": (stage_columns(widths, every, ("avg", "max")), True),
        f"texture + maxima 2-{n}": (stage_columns(widths, every[1:], ("max",)), True),
    })
    return out


def joined_table(tables: Path, stem: str):
    """The multiscale and texture tables of one encoder, side by side (same cells)."""
    import pandas as pd

    from cytogan_tf.metrics import metadata_columns

    ms = pd.read_parquet(tables / f"{stem}-multiscale-dihedral.parquet")
    tex = pd.read_parquet(tables / f"{stem}-texture-dihedral.parquet")
    meta = metadata_columns(ms)
    if not (ms[meta].astype(str).values == tex[meta].astype(str).values).all():
        raise SystemExit(f"{stem}: the multiscale and texture tables list different cells")
    tex = tex[[c for c in tex.columns if c not in meta]]
    tex.columns = [f"tex_{c}" for c in tex.columns]
    return pd.concat([ms, tex], axis=1), list(tex.columns)


def main(argv=None):
    args = parse_args(argv)
    tables = Path(args.workdir) / "tables"
    widths = encoders.model_config(args.variant, 64, None)["model"]["widths"]
    readout_parts = parts(widths)
    results = {}
    for preset in args.presets.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            for kind in ("trained", "untrained"):
                stem = f"{preset}-{args.variant}-s{seed}-{kind}"
                if not (tables / f"{stem}-multiscale-dihedral.parquet").is_file():
                    raise SystemExit(f"{tables}/{stem}-*: not found; run benchmarks/encoders.py "
                                     f"--variants {args.variant} --seeds {seed} first")
                cells, texture = joined_table(tables, stem)
                for name, (cols, with_texture) in readout_parts.items():
                    r = encoders.score(cells, columns=(texture if with_texture else []) + cols)
                    results.setdefault((preset, name, kind), []).append((seed, r))
    print(f"{'preset':8s} {'readout part':24s} {'network':9s}  NSC / NSCB / mAP (mean)   NSC per seed")
    for (preset, name, kind), rows in results.items():
        mean = [np.mean([r[k] for _, r in rows]) for k in ("nsc", "nscb", "map")]
        per = " ".join(f"{r['nsc']:.3f}" for _, r in sorted(rows, key=lambda x: x[0]))
        print(f"{preset:8s} {name:24s} {kind:9s}  {mean[0]:.3f} / {mean[1]:.3f} / {mean[2]:.3f}   {per}")


if __name__ == "__main__":
    main()
