"""How sure is an encoder's gain, and which MOAs does it get? Per-MOA NSC and bootstrap
intervals from the per-cell tables `benchmarks/encoders.py` saves.

Why: at 48 treatments one query moves NSC by 0.021, and seeds of one variant differ by
0.02-0.06, so a gain of +0.08 against a target of +0.10 may be one query of noise, or
a real shortfall. This reads the saved embeddings of a run (no training, no images) and
reports, for one readout of one variant:

- NSC of hand-made, untrained, trained and hand-made (+) trained features, per MOA
  (each query's hit averaged over the seeds), so a shortfall has a name;
- the trained-minus-untrained and trained-minus-hand-made NSC differences with 95%
  intervals from a paired bootstrap over queries (scipy.stats.bootstrap, BCa): each
  query's hit is averaged over the seeds first, so the interval covers which treatments
  a plate set happens to hold, not training noise (the seeds' spread shows that).

`--workdir` takes several workdirs, comma-separated, each an independent draw of the
plates (encoders.py `--data-seed`): their queries are pooled, so the intervals narrow by
about 1/sqrt(draws) where one draw's 48 queries cannot decide a target.

    python benchmarks/encoder_stats.py --workdir /tmp/enc --preset demo \
        --variant bigan-ssl-z-w3 --readout "hidden dihedral" --seeds 0,1,2
    python benchmarks/encoder_stats.py --workdir /tmp/enc,/tmp/enc-ds1 --preset demo ...
    python benchmarks/encoder_stats.py ... --readout "multiscale dihedral+texture dihedral"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package

from encoders import evaluate_cells, evaluate_joined, handmade_path, table_path  # noqa: E402

QUERY = ["Metadata_Compound", "Metadata_Concentration"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True,
                   help="an encoders.py workdir (its tables/), or several (one per plate draw), "
                        "comma-separated, whose queries are pooled")
    p.add_argument("--preset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--readout", default="hidden dihedral",
                   help="the features key without trained/untrained; 'a+b' joins two readouts' "
                        "profiles (each normalised alone, as `cytogan combine` joins feature sets)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--mode", default="nsc", choices=("nsc", "nscb"))
    p.add_argument("--resamples", type=int, default=10000)
    p.add_argument("--normalize", default="tvn")
    return p.parse_args(argv)


def query_hits(result: dict, mode: str) -> pd.Series:
    """1.0 / 0.0 per query (compound, concentration), indexed by query and MOA."""
    pred = result[mode].predictions
    return pred.set_index(QUERY + ["Metadata_MOA"])["Correct"].astype(float)


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SystemExit(f"{path}: no such table (run benchmarks/encoders.py with these settings first)")
    return pd.read_parquet(path)


def collect_hits(args) -> pd.DataFrame:
    """One column per feature set, one row per query (of every workdir): hits averaged
    over the seeds."""
    works = [w for w in args.workdir.split(",") if w]
    return pd.concat({w: draw_hits(args, Path(w)) for w in works}, names=["draw"])


def draw_hits(args, work: Path) -> pd.DataFrame:
    """collect_hits for one workdir (one draw of the plates)."""
    hand = read_table(handmade_path(work, args.preset))
    seeds = [int(s) for s in args.seeds.split(",")]
    columns = {"hand-made": query_hits(evaluate_cells(hand, args.normalize), args.mode)}
    per_seed = {"untrained": [], "trained": [], "hand-made (+) trained": []}
    readouts = args.readout.split("+")  # "a+b": the readouts' profiles joined
    for seed in seeds:
        for kind in ("untrained", "trained"):
            tables = {r: read_table(table_path(work, args.preset, args.variant, seed, f"{kind} {r}"))
                      for r in readouts}
            if len(tables) == 1:
                result = evaluate_cells(tables[readouts[0]], args.normalize)
            else:
                result = evaluate_joined(tables, args.normalize)
            per_seed[kind].append(query_hits(result, args.mode))
            if kind == "trained":
                per_seed["hand-made (+) trained"].append(
                    query_hits(evaluate_joined({**tables, "hand-made": hand}, args.normalize), args.mode))
    for name, hits in per_seed.items():
        columns[name] = pd.concat(hits, axis=1).mean(axis=1)
    return pd.DataFrame(columns)


def paired_interval(a: np.ndarray, b: np.ndarray, resamples: int, seed: int = 0) -> tuple:
    """Mean of a - b over queries and its 95% BCa interval, resampling queries in pairs."""
    from scipy.stats import bootstrap

    diff = a - b
    if np.allclose(diff, diff[0]):  # no spread: the interval is the point
        return float(diff.mean()), float(diff.mean()), float(diff.mean())
    res = bootstrap((diff,), np.mean, n_resamples=resamples, confidence_level=0.95,
                    method="BCa", random_state=np.random.default_rng(seed))
    return float(diff.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def main(argv=None):
    args = parse_args(argv)
    hits = collect_hits(args)
    n = len(hits)
    print(f"{args.preset} / {args.variant} / {args.readout}: {args.mode.upper()} over {n} queries "
          f"(one query = {1 / n:.3f}), hits averaged over seeds {args.seeds}\n")
    per_moa = hits.groupby(level="Metadata_MOA").mean()
    per_moa.insert(0, "queries", hits.groupby(level="Metadata_MOA").size())
    with pd.option_context("display.width", 160, "display.float_format", "{:.2f}".format):
        print(per_moa.to_string())
        print("\nall", " ".join(f"{c}={hits[c].mean():.3f}" for c in hits.columns))
    print()
    for a, b in (("trained", "untrained"), ("trained", "hand-made"),
                 ("hand-made (+) trained", "hand-made")):
        mean, low, high = paired_interval(hits[a].to_numpy(), hits[b].to_numpy(), args.resamples)
        print(f"{a} - {b}: {mean:+.3f}  95% interval [{low:+.3f}, {high:+.3f}]")


if __name__ == "__main__":
    main()
