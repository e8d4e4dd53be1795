"""Image sets on disk -> single-cell TFRecord shards (`cytogan prepare`).

Stages, each restartable:

1. **Plan.** Load the image-set table, assign contiguous blocks of image sets to the K
   output shards, fingerprint the options. Compute the per-plate normalisation from a
   seeded sample of each plate's images and save it with the plan in
   `<out>/.parts/state.json` *before* any shard work, so every resumed or parallel job
   reuses exactly the same values.
2. **Parts.** For each shard: read, check, segment, crop, mask and normalise its image
   sets (in a process pool over images; results are consumed in image order, so the
   output never depends on the worker count), then write `.parts/part-k.json` (its cell
   rows, skipped files) and `.parts/part-k.tfrecord` (crops, cell ids local to the part),
   each atomically. A part whose two files exist is done and is skipped on a re-run.
3. **Merge.** When all K parts exist: renumber cells globally (`cell_id` is the row of
   the cell table, which needs every part's count), write the final
   `shard-k-of-K.tfrecord` files, `cells.parquet/.csv` and last `dataset.json`, then
   delete `.parts`. A single run merges at its end. Cluster jobs (`--shard i/N`, job i
   makes parts k with k % N == i) merge in whichever job finds all parts done (guarded by
   a lock file); `cytogan prepare --merge-only` merges by hand, e.g. after a job died.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, DataError
from ..io_utils import atomic_write_json
from . import normalize, shards
from .crops import (CELLS_PER_CROP, CHANNELS, SaturatedImage, all_bad_files, bad_files_error,
                    load_image_set, process_image_set, suggest_crop, suggested_crop_size)
from .segment import SegmentParams
from .settle import describe_declump, settle_segmentation

log = logging.getLogger(__name__)

PARTS_DIR = ".parts"
STATE_JSON = "state.json"
MERGE_LOCK = "merge.lock"

# Defaults of the `[prepare]` config section (segmentation parameters live in SegmentParams).
DEFAULTS: dict[str, Any] = {
    "crop_size": 64,
    "mask": True,
    "shards_count": 8,
    "percentiles": [0.1, 99.9],
    "normalization_sample_images": 8,
    "saturation_fraction": 0.5,   # an image with more pixels at the maximum value is skipped
}
DIAMETER_SAMPLE_IMAGES = 8  # images the nucleus size is measured on (2 per plate)


def prepare_section(config: str | None, layout: str | None = None,
                    set_options=()) -> dict:
    """The `[prepare]` settings: defaults, then the config's section, then `--set` items.

    Without an explicit config, a bundled config named like the layout (bbbc021,
    examplefly) supplies the section, so each data set gets its own segmentation scale.
    """
    from ..config import apply_overrides, available_configs, load_config, parse_set_options

    if config is None and layout in available_configs():
        config = layout
    elif config is None and str(layout).endswith(".toml") and Path(layout).is_file():
        config = layout  # a layout TOML may carry its own [prepare] section, as examplefly's does
    section = dict(load_config(config).get("prepare", {})) if config else {}
    PrepareOptions.from_config(section)  # reject unknown keys before merging
    full = {**DEFAULTS, **asdict(SegmentParams()), **section}
    sets = {k if k.startswith("prepare.") else f"prepare.{k}": v
            for k, v in parse_set_options(tuple(set_options)).items()}
    return apply_overrides({"prepare": full}, sets)["prepare"]


@dataclass
class PrepareOptions:
    crop_size: int = 64
    mask: bool = True
    shards_count: int = 8
    workers: int = 1
    seed: int = 0
    skip_bad: bool = False
    limit: int | None = None
    objects: str | None = None
    scheduler: object = None   # Dask: an address, "local" or a Client (cytogan_tf.cluster)
    percentiles: tuple[float, float] = (0.1, 99.9)
    normalization_sample_images: int = 8
    saturation_fraction: float = 0.5
    segment: SegmentParams = field(default_factory=SegmentParams)
    progress: bool = True

    @classmethod
    def from_config(cls, section: Mapping | None, **overrides) -> "PrepareOptions":
        """`[prepare]` section values, then explicit (non-None) overrides."""
        section = dict(section or {})
        known = set(DEFAULTS) | {f.name for f in fields(SegmentParams)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"[prepare]: unknown key(s) {', '.join(unknown)}")
        values = {k: section.get(k, v) for k, v in DEFAULTS.items()}
        values["percentiles"] = tuple(float(p) for p in values["percentiles"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(segment=SegmentParams.from_config(section), **values)

    def validate(self) -> None:
        problem = shards.crop_size_problem(self.crop_size)
        if problem is not None:
            raise DataError(f"crop size {problem}")
        if self.shards_count < 1:
            raise DataError(f"shards count must be >= 1, got {self.shards_count}")
        if self.workers < 1:
            raise DataError(f"workers must be >= 1, got {self.workers}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise DataError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {self.percentiles}")
        self.segment.validate()


@dataclass
class PrepareResult:
    out: Path
    n_image_sets: int
    n_cells: int
    skipped: list
    zero_cell_images: int
    shards: list
    complete: bool     # False when this job made its parts but could not merge yet
    nucleus_diameter: dict | None = None   # {"value", "source", "images"}
    crop_size: int | None = None
    declump: dict | None = None            # settle.settle_segmentation's "auto" choice

    def summary(self) -> str:
        lines = [
            f"image sets: {self.n_image_sets}",
            f"cells:      {self.n_cells}" + ("" if self.complete else " (in this job's parts)"),
            f"skipped:    {len(self.skipped)}"
            + "".join(f"\n  {s['reason']}" for s in self.skipped[:20])
            + (f"\n  ... and {len(self.skipped) - 20} more" if len(self.skipped) > 20 else ""),
            f"zero-cell image sets: {self.zero_cell_images}",
            *self._size_lines(),
            f"shards:     {len(self.shards)}",
            f"output:     {self.out}" + ("" if self.complete else " (parts only; merge pending)"),
        ]
        return "\n".join(lines)

    def _size_lines(self) -> list[str]:
        if not self.nucleus_diameter:
            return []
        d = self.nucleus_diameter
        how = {"given": "from --nucleus-diameter", "fallback": "too few nuclei to measure; default",
               "estimated": f"estimated from {d.get('images', 0)} images"}.get(d["source"], d["source"])
        line = f"nuclei:     {d['value']:.1f} px across ({how})"
        if self.crop_size is not None:
            best = suggested_crop_size(d["value"])
            line += (f"; crop {self.crop_size} px" +
                     ("" if best == self.crop_size else
                      f" (about {CELLS_PER_CROP:g} diameters would be {best} px)"))
        return [line] + ([describe_declump(self.declump)] if self.declump else [])


# --------------------------------------------------------------------------- entry point

def prepare(source, out, *, layout="bbbc021", options: PrepareOptions | None = None,
            shard: tuple[int, int] | None = None, merge_only: bool = False) -> PrepareResult:
    """Run (or resume) a prepare job; see the module docstring for the stages."""
    from .bbbc021 import load_image_sets

    options = options or PrepareOptions()
    options.validate()
    out = Path(out)
    if out.resolve() == Path(source).resolve():
        raise DataError(f"{out}: --out is the source directory; write the shards elsewhere")
    parts = out / PARTS_DIR
    if shard is not None:
        i, n = shard
        if not (n >= 1 and 0 <= i < n):
            raise DataError(f"--shard expects i/N with 0 <= i < N, got {i}/{n}")

    if merge_only:
        if (out / shards.DATASET_JSON).is_file() and not parts.exists():
            return _result_from_info(out, shards.read_dataset_info(out))  # already merged
        state = _read_state(parts)
        return _merge(out, state, options)

    table = load_image_sets(source, layout=layout, skip_bad=options.skip_bad)
    load_skipped = [{"file": str(f), "reason": str(r)} for f, r in table.attrs.get("skipped", [])]
    if options.limit is not None:
        table = table.iloc[: max(0, int(options.limit))]
    if len(table) == 0:
        raise DataError(f"{source}: no image sets to prepare")
    objects = _read_objects(options.objects, table) if options.objects else None

    rows = [_row_dict(r) for r in table.to_dict("records")]
    n_shards = min(options.shards_count, len(rows))
    plan = {
        "source": str(Path(source).resolve()),
        "layout": str(layout),
        "image_numbers": [r["Metadata_ImageNumber"] for r in rows],
        "n_shards": n_shards,
        "crop_size": options.crop_size,
        "mask": options.mask,
        "seed": options.seed,
        "percentiles": list(options.percentiles),
        "normalization_sample_images": options.normalization_sample_images,
        "saturation_fraction": options.saturation_fraction,
        "segmentation": asdict(options.segment),
        "objects": _file_digest(options.objects) if options.objects else None,
    }
    fingerprint = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]

    done = _finished_info(out, fingerprint)
    if done is not None:
        return _result_from_info(out, done)

    state = _load_or_make_state(parts, plan, fingerprint, rows, options, load_skipped)
    blocks = _blocks(len(rows), n_shards)
    mine = [k for k in range(n_shards) if shard is None or k % shard[1] == shard[0]]
    if shard is not None and not mine:
        log.warning("job %d/%d has no output shard to make: the dataset has %d "
                    "(pass --shards-count %d or more so every job gets one)",
                    shard[0], shard[1], n_shards, shard[1])
    todo = [k for k in mine if not _part_done(parts, k)]
    _clean_stale_temps(parts)
    if todo:
        _make_parts(parts, todo, blocks, rows, state, objects, options)

    if all(_part_done(parts, k) for k in range(n_shards)):
        if shard is None:
            return _merge(out, state, options)
        lock = _try_lock(parts)
        if lock:
            return _merge(out, state, options)
    try:
        summaries = [_read_part_json(parts, k) for k in mine]
    except DataError:
        if (out / shards.DATASET_JSON).is_file():  # another job merged meanwhile
            return _result_from_info(out, shards.read_dataset_info(out))
        raise
    return PrepareResult(
        out=out, n_image_sets=sum(len(blocks[k]) for k in mine),
        n_cells=sum(len(s["cells"]["Metadata_ObjectNumber"]) for s in summaries),
        skipped=[s for p in summaries for s in p["skipped"]],
        zero_cell_images=sum(p["zero_cell_images"] for p in summaries),
        shards=[], complete=False)


# --------------------------------------------------------------------------- planning

def _row_dict(rec: Mapping) -> dict:
    """Plain JSON-able types for one image-set row (numpy scalars -> Python)."""
    out = {}
    for k, v in rec.items():
        out[k] = v.item() if hasattr(v, "item") else v
    return out


def _blocks(n_rows: int, n_shards: int) -> list[list[int]]:
    return [list(range(k * n_rows // n_shards, (k + 1) * n_rows // n_shards)) for k in range(n_shards)]


def _file_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _read_objects(path, table) -> dict[int, np.ndarray]:
    """Object table -> {ImageNumber: [(x, y), ...]} in the table's row order. Centres are
    CellProfiler's Nuclei_Location_Center_X/Y or the plain Location_Center_X/Y that
    pycytominer tables and `cytogan synth`'s synth_cells.csv use."""
    import pandas as pd

    from .bbbc021 import read_csv_table

    try:
        header = set(pd.read_csv(path, nrows=0).columns)
    except Exception:  # read_csv_table below names the problem
        header = set()
    prefix = "" if {"Location_Center_X", "Location_Center_Y"} <= header and not \
        {"Nuclei_Location_Center_X", "Nuclei_Location_Center_Y"} <= header else "Nuclei_"
    cols = ["ImageNumber", f"{prefix}Location_Center_X", f"{prefix}Location_Center_Y"]
    df = read_csv_table(Path(path), cols)
    points: dict[int, list] = {}
    for line, (img, x, y) in enumerate(df[cols].itertuples(index=False), start=2):
        try:
            key, px, py = int(float(img)), float(x), float(y)
        except ValueError:
            raise DataError(f"{path}: row {line}: cannot read ImageNumber/centre "
                            f"{img!r}, {x!r}, {y!r}") from None
        if not (np.isfinite(px) and np.isfinite(py)):
            raise DataError(f"{path}: row {line}: non-finite nucleus centre")
        points.setdefault(key, []).append((px, py))
    known = set(int(v) for v in table["Metadata_ImageNumber"])
    if not known & set(points):
        raise DataError(f"{path}: no ImageNumber matches the image sets being prepared")
    return {k: np.asarray(v, float) for k, v in points.items()}


def _load_or_make_state(parts: Path, plan, fingerprint, rows, options, load_skipped) -> dict:
    path = parts / STATE_JSON
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: unreadable prepare state ({exc}); delete {parts} to start over") from None
        if state.get("fingerprint") == fingerprint:
            return state
        if any(parts.glob("part-*.tfrecord")):
            raise DataError(f"{parts.parent}: holds a prepare run with different inputs or "
                            f"options; use a new --out or delete {parts}")
        # The earlier run failed before finishing any part: nothing to keep, start afresh.
        shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True, exist_ok=True)
    normalization, norm_skipped, samples = _compute_normalization(rows, options)
    state = {"fingerprint": fingerprint, "plan": plan, "rows": rows,
             "normalization": normalization, "load_skipped": load_skipped,
             "normalization_skipped": norm_skipped,
             **settle_segmentation(samples, options.segment)}
    atomic_write_json(path, state)  # saved before any shard work: resumes reuse it
    # Continue from what was saved, so a fresh run and a resumed one see identical values.
    return json.loads(path.read_text())


def _read_state(parts: Path) -> dict:
    path = parts / STATE_JSON
    if not path.is_file():
        raise DataError(f"{path}: no prepare in progress here (nothing to merge)")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable prepare state ({exc})") from None


def _compute_normalization(rows, options) -> tuple[dict, list]:
    plates: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        plates.setdefault(str(r["Metadata_Plate"]), []).append(i)
    skipped, bad = [], []

    def sample(idx_list):
        # Bad and saturated images must not set a plate's range; draw replacements so a
        # plate with a few bad files still gets a full sample when it can.
        good = []
        order = normalize.sample_images(idx_list, len(idx_list), seed=options.seed)
        rng = np.random.default_rng(options.seed)
        order = [order[j] for j in rng.permutation(len(order))]
        for i in order:
            if len(good) >= options.normalization_sample_images:
                break
            try:
                good.append(load_image_set(rows[i], options.saturation_fraction))
            except SaturatedImage:
                continue  # reported when its shard is made
            except DataError as exc:
                (skipped if options.skip_bad else bad).append(str(exc))
        return good

    from ..progress import progress_bar

    per_plate, samples = {}, []
    for plate in progress_bar(sorted(plates), desc="normalisation", unit="plate",
                              enabled=options.progress):
        imgs = sample(plates[plate])
        if imgs:  # else every image of the plate is bad or saturated: all get skipped later
            per_plate[plate] = normalize.channel_ranges(imgs, options.percentiles)
            samples.extend(imgs[:2])  # a few per plate measure the nucleus size
    if bad:
        # Only the failure case pays for a full read: name every bad file in one message
        # rather than one per attempt. Nothing has been saved yet.
        raise bad_files_error(all_bad_files(rows, options))
    return ({"method": normalize.METHOD, "percentiles": list(options.percentiles),
             "per_plate": per_plate}, skipped, samples[:DIAMETER_SAMPLE_IMAGES])


# --------------------------------------------------------------------------- per image

# --------------------------------------------------------------------------- parts

def _part_paths(parts: Path, k: int) -> tuple[Path, Path]:
    return parts / f"part-{k:05d}.json", parts / f"part-{k:05d}.tfrecord"


def _part_done(parts: Path, k: int) -> bool:
    js, rec = _part_paths(parts, k)
    return js.is_file() and rec.is_file()


def _read_part_json(parts: Path, k: int) -> dict:
    path = _part_paths(parts, k)[0]
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable part summary ({exc}); delete it to redo the part") from None


def _clean_stale_temps(parts: Path) -> None:
    # Temp files of a killed writer (atomic_path names them .<name>.<random>.tmp*).
    if parts.is_dir():
        for p in parts.glob(".part-*.tmp*"):
            p.unlink(missing_ok=True)


def _make_parts(parts, todo, blocks, rows, state, objects, options) -> None:
    from ..progress import progress_bar

    opts = {"crop_size": options.crop_size, "mask": options.mask, "skip_bad": options.skip_bad,
            "saturation_fraction": options.saturation_fraction,
            "segmentation": state["segmentation"]}
    per_plate = state["normalization"]["per_plate"]

    def task(i):
        row = rows[i]
        points = None
        if objects is not None:
            points = objects.get(int(row["Metadata_ImageNumber"]), np.zeros((0, 2))).tolist()
        return {"row": row, "options": opts, "ranges": per_plate.get(str(row["Metadata_Plate"])),
                "points": points}

    tasks = [task(i) for k in todo for i in blocks[k]]
    bar = progress_bar(total=len(tasks), desc="prepare", unit="image", enabled=options.progress)
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        results = _run_tasks(stack, tasks, options)
        errors = []
        for k in todo:
            block = [(i, next(results)) for i in blocks[k]]
            bar.update(len(block))
            failed = [res["reason"] for _, res in block if res["status"] == "error"]
            if failed:  # the part is not written, so a re-run after the fix redoes it
                errors.extend(failed)
                continue
            _write_part(parts, k, block, rows)
    if errors:
        raise bad_files_error(errors)


def _run_tasks(stack: contextlib.ExitStack, tasks: list, options: PrepareOptions):
    """process_image_set over `tasks`, results in task order: on a Dask cluster
    (--scheduler), a local process pool (--workers N) or in this process."""
    if options.scheduler:
        from ..cluster import dask_client, map_in_order

        client = stack.enter_context(dask_client(options.scheduler, options.workers,
                                                 quiet=not options.progress))
        results = map_in_order(client, process_image_set, tasks, key="cytogan-image-set")
        stack.callback(results.close)  # cancel what is left before the client closes
        return results
    if options.workers > 1 and len(tasks) > 1:
        from ..workers import process_pool

        # forkserver: workers never inherit a parent that has TensorFlow's threads;
        # they exit by themselves if this process is killed.
        pool = process_pool(options.workers, "forkserver")
        stack.callback(pool.shutdown, cancel_futures=True)
        return pool.map(process_image_set, tasks, chunksize=1)
    return map(process_image_set, tasks)


def _write_part(parts: Path, k: int, block, rows) -> None:
    skipped, records = [], []
    cols: dict[str, list] = {"row": [], "Metadata_ObjectNumber": [], "Location_Center_X": [],
                             "Location_Center_Y": []}
    zero = found = 0
    fits: dict[str, int] = {}
    for i, res in block:
        if res["status"] == "ok":
            found += res.get("found", len(res["cells"]))
            for size, n in res.get("fits", {}).items():
                fits[size] = fits.get(size, 0) + n
        if res["status"] != "ok":
            skipped.append({"file": res["file"], "reason": res["reason"]})
            log.warning("%s", res["reason"])
            continue
        if not res["cells"]:
            zero += 1
        row = rows[i]
        for crop, (obj, x, y) in zip(res["crops"], res["cells"]):
            local = len(cols["row"])
            cols["row"].append(i)
            cols["Metadata_ObjectNumber"].append(obj)
            cols["Location_Center_X"].append(x)
            cols["Location_Center_Y"].append(y)
            records.append(shards.serialize_cell(crop, _example_meta(row, local, x, y)))
    js, rec = _part_paths(parts, k)
    atomic_write_json(js, {"cells": cols, "skipped": skipped, "zero_cell_images": zero,
                           "n_image_sets": len(block), "found": found, "fits": fits})
    shards.write_shard(rec, records)  # written last: its presence marks the part done


def _example_meta(row: Mapping, cell_id: int, x: float, y: float) -> dict:
    return {"cell_id": cell_id, "plate": row["Metadata_Plate"], "well": row["Metadata_Well"],
            "compound": row["Metadata_Compound"], "moa": row["Metadata_MOA"],
            "concentration": row["Metadata_Concentration"], "site": row["Metadata_Site"],
            "center_x": x, "center_y": y}


# --------------------------------------------------------------------------- merge

def _try_lock(parts: Path) -> bool:
    try:
        fd = os.open(parts / MERGE_LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        log.warning("another job is merging %s (remove %s if it died, or run --merge-only)",
                    parts.parent, parts / MERGE_LOCK)
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True


def _merge(out: Path, state: dict, options: PrepareOptions) -> PrepareResult:
    import pandas as pd

    parts = out / PARTS_DIR
    plan, rows = state["plan"], state["rows"]
    n_shards = plan["n_shards"]
    missing = [k for k in range(n_shards) if not _part_done(parts, k)]
    if missing:
        raise DataError(f"{parts}: parts {', '.join(map(str, missing))} of {n_shards} are not "
                        f"done yet; run the remaining --shard jobs first")
    summaries = [_read_part_json(parts, k) for k in range(n_shards)]
    counts = [len(s["cells"]["row"]) for s in summaries]
    total = int(sum(counts))
    skipped = state["load_skipped"] + [s for p in summaries for s in p["skipped"]]
    n_images = len(rows)
    found = int(sum(s.get("found", 0) for s in summaries))
    if total == 0:
        # Nothing worth keeping: drop the parts so a retry with other options can start.
        shutil.rmtree(parts, ignore_errors=True)
        if found:
            raise DataError(f"{plan['source']}: found {found} cells in {n_images} image sets but "
                            f"every {plan['crop_size']} px crop around them is cut by the image "
                            f"border; {suggest_crop(summaries, found)}")
        raise DataError(f"{plan['source']}: no cells found in any of {n_images} image sets"
                        + (f" ({len(skipped)} skipped)" if skipped else ""))
    if found and total < 0.5 * found:
        log.warning("the %d px crop keeps only %d of %d cells found (the rest touch the image "
                    "border); %s", plan["crop_size"], total, found, suggest_crop(summaries, found))

    # A state saved before the diameter was measured (an older release's parts) has none.
    size_info = state.get("nucleus_diameter")
    diameter = size_info["value"] if size_info else 0.0
    if size_info and plan["crop_size"] < 1.5 * diameter:
        log.warning("the %d px crop is narrower than 1.5 nucleus diameters (nuclei are %.0f px "
                    "across): most cells are cut; --crop-size %d fits one cell",
                    plan["crop_size"], diameter, suggested_crop_size(diameter))

    names = [shards.shard_name(k, n_shards) for k in range(n_shards)]
    offset = 0
    tables = []
    for k, (summary, name) in enumerate(zip(summaries, names)):
        n = counts[k]
        final = out / name
        if not final.is_file():  # a merge killed half-way already wrote the earlier ones
            src = _part_paths(parts, k)[1]
            shards.write_shard(final, _renumbered(src, offset, n))
        cells = summary["cells"]
        part_rows = [rows[i] for i in cells["row"]]
        t = pd.DataFrame({
            c: [r[c] for r in part_rows] for c in _metadata_columns(rows)
        })
        t["Metadata_ObjectNumber"] = np.asarray(cells["Metadata_ObjectNumber"], np.int64)
        t["Metadata_CellId"] = np.arange(offset, offset + n, dtype=np.int64)
        t["Metadata_Shard"] = name
        t["Location_Center_X"] = np.asarray(cells["Location_Center_X"], float)
        t["Location_Center_Y"] = np.asarray(cells["Location_Center_Y"], float)
        tables.append(t)
        offset += n
    table = pd.concat(tables, ignore_index=True)
    shards.write_cells_table(out, table)
    info = {
        "crop_size": plan["crop_size"],
        "channels": list(CHANNELS),
        "normalization": state["normalization"],
        "n_cells": total,
        "n_image_sets": n_images,
        "zero_cell_images": int(sum(p["zero_cell_images"] for p in summaries)),
        "shards": names,
        "shard_cells": counts,
        "source": plan["source"],
        "layout": plan["layout"],
        "mask": plan["mask"],
        "seed": plan["seed"],
        "segmentation": state.get("segmentation", plan["segmentation"]),
        "nucleus_diameter": size_info,
        "declump": state.get("declump"),
        "suggested_crop_size": suggested_crop_size(diameter) if size_info else None,
        "skipped": skipped,
        "prepare_fingerprint": state["fingerprint"],
        "format_version": shards.FORMAT_VERSION,
    }
    shards.write_dataset_info(out, info)  # last: its presence means the dataset is complete
    shutil.rmtree(parts, ignore_errors=True)
    return _result_from_info(out, info)


def _metadata_columns(rows) -> list[str]:
    # Fixed order (state.json stores rows with sorted keys): the image-set table's order,
    # then any extra Metadata_ columns a layout adds, alphabetically.
    from .bbbc021 import METADATA_COLUMNS

    present = [c for c in rows[0] if c.startswith("Metadata_")]
    return [c for c in METADATA_COLUMNS if c in present] + sorted(
        c for c in present if c not in METADATA_COLUMNS)


def _renumbered(src: Path, offset: int, expected: int):
    """Records of a part with `cell_id` shifted from part-local to global."""
    import tensorflow as tf

    n = 0
    for raw in tf.data.TFRecordDataset(str(src)).as_numpy_iterator():
        ex = tf.train.Example.FromString(raw)
        ids = ex.features.feature["cell_id"].int64_list.value
        ids[0] = offset + ids[0]
        yield ex.SerializeToString(deterministic=True)
        n += 1
    if n != expected:
        raise DataError(f"{src}: {n} records but its summary lists {expected}; delete the part to redo it")


def _finished_info(out: Path, fingerprint: str) -> dict | None:
    if not (out / shards.DATASET_JSON).is_file():
        return None
    info = shards.read_dataset_info(out)
    if info.get("prepare_fingerprint") != fingerprint:
        raise DataError(f"{out}: already holds a prepared dataset made with other inputs or "
                        f"options; use a new --out")
    return info


def _result_from_info(out: Path, info: Mapping) -> PrepareResult:
    return PrepareResult(out=out, n_image_sets=int(info.get("n_image_sets", 0)),
                         n_cells=int(info["n_cells"]), skipped=list(info.get("skipped", [])),
                         zero_cell_images=int(info.get("zero_cell_images", 0)),
                         shards=list(info["shards"]), complete=True,
                         nucleus_diameter=info.get("nucleus_diameter"),
                         crop_size=info.get("crop_size"), declump=info.get("declump"))
