"""What `prepare` settles once per data set from its sample images, before any shard work.

Why once: every image set of a screen must be segmented the same way, or a compound that
changes nucleus size or chromatin texture would also change how its cells are found and
split. The record is saved in the prepare state (resumes and Dask workers reuse it) and
in dataset.json.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from .nucleus_scale import dataset_diameter
from .segment import MIN_LONE_NUCLEI, SegmentParams, choose_declump


def settle_segmentation(samples, params: SegmentParams) -> dict:
    """{"nucleus_diameter", "declump" (None unless "auto" chose it), "segmentation"
    (every setting, sizes resolved, the declumping method named)}."""
    diameter = dataset_diameter(samples, params.nucleus_diameter)
    resolved = params.resolved(diameter["value"])
    declump = choose_declump(samples, resolved) if resolved.declump == "auto" else None
    if declump is not None:
        resolved = replace(resolved, declump=declump["method"])
    return {"nucleus_diameter": diameter, "declump": declump, "segmentation": asdict(resolved)}


def describe_declump(record: dict) -> str:
    """The summary line of an "auto" declumping choice."""
    share, lone = record["multi_peak_share"], record["lone_nuclei"]
    why = ("too few lone nuclei to judge" if share is None or lone < MIN_LONE_NUCLEI
           else f"{share:.0%} of {lone} lone nuclei show several intensity peaks")
    return f"declumping: {record['method']} (auto: {why})"
