"""Nucleus segmentation: cytogan vs a plain scikit-image recipe vs CellProfiler.

Run:  python benchmarks/segmentation.py [--stardist-wheel WHL] [--cellprofiler-python PY]

Each method runs with its defaults and no per-image tuning:
- cytogan: `segment_nuclei` with default settings; the nucleus diameter is measured from
  each image itself (prepare measures it once per data set, so its real cost per image is
  the "sizes known" column);
- skimage: Gaussian sigma 1, global Otsu, holes filled, distance-transform watershed with
  peaks 7 px apart (the textbook recipe);
- CellProfiler: IdentifyPrimaryObjects' defaults (benchmarks/cellprofiler_peer.py), run
  in its own venv (`python -m venv V && V/bin/pip install cellprofiler-library-nightly`),
  found from --cellprofiler-python or $CELLPROFILER_PYTHON; skipped when absent.

Image sets:
- dsb: the 2018 Data Science Bowl image and its reference mask shipped in the stardist
  wheel (`pip download --no-deps stardist`; data CC0, package BSD-3), real labelled nuclei;
  dsb-x0.6 / x2 / x3: the same resized, real nuclei at 14, 46 and 69 px instead of 23;
- synthetic labelled fields (cytogan_tf.data.synth_nuclei): small, bbbc021-like, large
  textured (60 px, nucleoli), dim (12x brightness range, uneven illumination), clumped;
- synth plates: the `tiny` and `demo` presets' DNA images, scored by nucleus centres
  against synth_cells.csv (a predicted nucleus matches a true centre within half a
  diameter; a multinucleate cell's centre is the mean of its nuclei, so it may miss);
- examplefly: counts only (no reference), next to CellProfiler's.

Reported per set: F1 at IoU 0.5 (optimal matching, scipy), count error, seconds per
megapixel (the fastest of 3 runs per image, for every method). The load average is
printed because the machine may be shared. On small images (the plates' 64x64 and 256x256
fields) every method's time is mostly fixed per-call cost, so s/MP is not comparable there.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED_FLY = HERE.parents[1] / "shared" / "data" / "examplefly"


def plain_skimage(image: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    smoothed = gaussian(image.astype(np.float32), 1.0, preserve_range=True)
    mask = ndi.binary_fill_holes(smoothed > threshold_otsu(smoothed))
    distance = ndi.distance_transform_edt(mask)
    components, _ = ndi.label(mask)
    peaks = peak_local_max(distance, min_distance=7, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask)


def cytogan_default(image: np.ndarray) -> np.ndarray:
    from cytogan_tf.data.segment import segment_nuclei

    return segment_nuclei(image)


def time_sizes_known(pairs) -> float:
    """Seconds of cytogan's segmentation with each image's sizes (and "auto"
    declumping's choice) settled beforehand, as in prepare, which settles them once per
    data set."""
    from dataclasses import replace

    from cytogan_tf.data.segment import choose_declump, resolve_params, segment_nuclei

    seconds = 0.0
    for img, _ in pairs:
        params = resolve_params(img, None)
        if params.declump == "auto":
            params = replace(params, declump=choose_declump([img], params)["method"])
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            segment_nuclei(img, params)
            best = min(best, time.perf_counter() - start)
        seconds += best
    return seconds


def dsb_set(wheel: str | None, scales=(0.6, 2.0, 3.0)) -> dict | None:
    """The DSB image and mask, and copies resized by `scales` (bilinear image, nearest
    mask): the same real nuclei at 14-70 px, as other magnifications would show them."""
    import tifffile
    from skimage.transform import rescale

    if wheel is None:
        found = sorted(glob.glob(str(Path(tempfile.gettempdir()) / "**" / "stardist-*.whl"),
                                 recursive=True))
        wheel = found[-1] if found else None
    if wheel is None or not Path(wheel).is_file():
        print("dsb: no stardist wheel (pip download --no-deps stardist; --stardist-wheel PATH)")
        return None
    with zipfile.ZipFile(wheel) as z:
        img = tifffile.imread(z.open("stardist/data/images/img2d.tif"))
        mask = tifffile.imread(z.open("stardist/data/images/mask2d.tif"))
    out = {"dsb": [(img, mask)]}
    for scale in scales:
        resized = rescale(img.astype(np.float32), scale, order=1, preserve_range=True,
                          anti_aliasing=scale < 1).astype(img.dtype)
        labels = rescale(mask, scale, order=0, preserve_range=True, anti_aliasing=False)
        out[f"dsb-x{scale:g}"] = [(resized, labels.astype(np.int32))]
    return out


def synthetic_sets(seed: int) -> dict:
    from cytogan_tf.data.synth_nuclei import PRESETS, render_field

    return {f"synthetic-{name}": [render_field(field, seed)] for name, field in PRESETS.items()}


def plate_sets(workdir: Path, images: int) -> dict:
    import pandas as pd
    import tifffile

    from cytogan_tf.data.bbbc021 import load_image_sets
    from cytogan_tf.data.synthetic import load_preset, simulate_plates

    out = {}
    for preset in ("tiny", "demo"):
        root = workdir / preset
        if not (root / "synth_cells.csv").is_file():
            simulate_plates(root, load_preset(preset), progress=False)
        table = load_image_sets(root).iloc[:images]
        cells = pd.read_csv(root / "synth_cells.csv")
        pairs = []
        for row in table.to_dict("records"):
            img = tifffile.imread(row["PathName_DNA"])
            here = cells[cells["ImageNumber"] == row["Metadata_ImageNumber"]]
            pairs.append((img, here[["Location_Center_X", "Location_Center_Y"]].to_numpy(float)))
        out[f"synth-plates-{preset}"] = pairs
    return out


def centre_scores(points: np.ndarray, labels: np.ndarray, radius: float) -> dict:
    """F1 of predicted nucleus centroids against true centres within `radius` px."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist
    from skimage.measure import regionprops

    pred = np.array([[p.centroid[1], p.centroid[0]] for p in regionprops(labels)]).reshape(-1, 2)
    tp = 0
    if len(pred) and len(points):
        dist = cdist(points, pred)
        rows, cols = linear_sum_assignment(dist)
        tp = int((dist[rows, cols] <= radius).sum())
    n_true, n_pred = len(points), len(pred)
    return {"tp": tp, "n_true": n_true, "n_pred": n_pred}


def run_cellprofiler(python: str, sets: dict, workdir: Path) -> dict:
    """{set: [labels, ...]} and {set: seconds} from CellProfiler in its own venv."""
    inputs, names = [], []
    for name, pairs in sets.items():
        for i, (img, _) in enumerate(pairs):
            path = workdir / "cp_in" / f"{name}__{i}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, img)
            inputs.append(str(path))
            names.append((name, i))
    out = workdir / "cp_out"
    subprocess.run([python, str(HERE / "cellprofiler_peer.py"), str(out), *inputs], check=True)
    timings = json.loads((out / "timings.json").read_text())
    labels, seconds = {}, {}
    for (name, i), path in zip(names, inputs):
        stem = Path(path).stem
        labels.setdefault(name, []).append(np.load(out / f"{stem}.labels.npy"))
        seconds[name] = seconds.get(name, 0.0) + timings[stem]
    return {"labels": labels, "seconds": seconds}


def score(name: str, pairs, predictions) -> dict:
    from cytogan_tf.data.nucleus_scale import estimate_diameter
    from cytogan_tf.data.seg_metrics import match_objects

    tp = n_true = n_pred = 0
    for (img, truth), pred in zip(pairs, predictions):
        if truth.ndim == 2 and truth.shape == img.shape:
            m = match_objects(truth, pred)
        else:  # centres only
            d = estimate_diameter(img) or 20.0
            m = centre_scores(truth, pred, 0.5 * d)
        tp, n_true, n_pred = tp + m["tp"], n_true + m["n_true"], n_pred + m["n_pred"]
    f1 = 2 * tp / (n_true + n_pred) if (n_true + n_pred) else 1.0
    return {"f1": f1, "count_error": (n_pred - n_true) / max(n_true, 1), "n_true": n_true,
            "n_pred": n_pred}


REPEATS = 3  # each image is timed this often and the fastest run counts (as timeit does)


def timed(fn, pairs):
    out, seconds = [], 0.0
    fn(pairs[0][0][:64, :64])  # imports and first-call set-up are not the method's speed
    for img, _ in pairs:
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            result = fn(img)
            best = min(best, time.perf_counter() - start)
        out.append(result)
        seconds += best
    return out, seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stardist-wheel", default=None)
    ap.add_argument("--cellprofiler-python", default=os.environ.get("CELLPROFILER_PYTHON"))
    ap.add_argument("--workdir", default=None, help="keeps rendered plates between runs")
    ap.add_argument("--plate-images", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the table here")
    args = ap.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="segbench-"))
    sets = {}
    sets.update(dsb_set(args.stardist_wheel) or {})
    sets.update(synthetic_sets(args.seed))
    sets.update(plate_sets(workdir, args.plate_images))
    import tifffile

    fly = sorted(SHARED_FLY.glob("*_D.TIF"))
    fly_pairs = [(tifffile.imread(p), None) for p in fly]

    methods = {"cytogan": cytogan_default, "skimage Otsu+watershed": plain_skimage}
    cp = None
    if args.cellprofiler_python and Path(args.cellprofiler_python).is_file():
        cp = run_cellprofiler(args.cellprofiler_python, {**sets, "examplefly": fly_pairs}, workdir)
    else:
        print("CellProfiler: not run (give --cellprofiler-python or $CELLPROFILER_PYTHON)")
    print(f"load avg {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cpus\n")

    rows = []
    header = f"{'image set':24s} {'method':24s} {'F1@0.5':>7s} {'count err':>9s} {'s/MP':>7s}"
    print(header + f" {'s/MP sizes known':>16s}")
    for name, pairs in sets.items():
        mp = sum(img.size for img, _ in pairs) / 1e6
        for method, fn in methods.items():
            preds, seconds = timed(fn, pairs)
            r = {"set": name, "method": method, **score(name, pairs, preds), "s_per_mp": seconds / mp}
            if method == "cytogan":
                r["s_per_mp_sizes_known"] = time_sizes_known(pairs) / mp
            rows.append(r)
        if cp is not None:
            rows.append({"set": name, "method": "CellProfiler", **score(name, pairs, cp["labels"][name]),
                         "s_per_mp": cp["seconds"][name] / mp})
        for r in rows[-(len(methods) + (cp is not None)):]:
            known = f"{r['s_per_mp_sizes_known']:16.3f}" if "s_per_mp_sizes_known" in r else ""
            print(f"{r['set']:24s} {r['method']:24s} {r['f1']:7.3f} {r['count_error']:+9.1%} "
                  f"{r['s_per_mp']:7.3f} {known}")
        if cp is not None:
            mine = next(r for r in rows if r["set"] == name and r["method"] == "cytogan")
            cp_s = rows[-1]["s_per_mp"]
            print(f"{'':24s} cytogan vs CellProfiler: F1 {mine['f1'] - rows[-1]['f1']:+.3f}, "
                  f"{cp_s / mine['s_per_mp_sizes_known']:.1f}x faster per MP with sizes settled "
                  f"(as prepare), {cp_s / mine['s_per_mp']:.1f}x estimating them per image")
    print("\nExampleFly nucleus counts (no reference masks):")
    for method, fn in methods.items():
        preds, _ = timed(fn, fly_pairs)
        print(f"  {method:24s} " + " ".join(f"{p.name.split('_D')[0]}: {int(l.max())}"
                                            for p, l in zip(fly, preds)))
    if cp is not None:
        print(f"  {'CellProfiler':24s} " + " ".join(
            f"{p.name.split('_D')[0]}: {int(l.max())}" for p, l in zip(fly, cp["labels"]["examplefly"])))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
