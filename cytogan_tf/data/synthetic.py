"""A simulated BBBC021: MCF7-like cells under drugs, written in the real set's exact layout.

Why simulate: the real BBBC021 cannot be downloaded here, and tests and demos need a plate
set whose ground truth (MOA, dose, cell positions) is known. The simulator mimics what makes
BBBC021 hard: each MOA changes morphology in its own way (nuclear size and chromatin,
actin, tubulin texture, cell size, mitotic arrest), compounds of one MOA differ, higher
doses act more strongly, cells respond unevenly, and plates differ in gain, illumination
and background. Each compound is imaged in one week only while every MOA spans two or more
weeks, so both NSC and NSCB (not-same-compound-or-batch) MOA accuracy are meaningful.

Output (`simulate_plates`): `<out>/BBBC021_v1_image.csv`, `<out>/BBBC021_v1_moa.csv`
(CR line endings, the real column names), `<out>/Week<k>/Week<k>_<id>/<well>_s<site>_w<n>
<UUID>.tif` (16-bit, w1 DAPI, w2 Tubulin, w4 Actin), and `<out>/synth_cells.csv` (one row
per simulated cell: image, well, nucleus centre, compound, MOA). Deterministic per seed.

Drawing is vectorised numpy over a small patch per cell (no per-pixel Python loops).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from ..errors import DataError
from ..io_utils import atomic_directory
from .bbbc021 import CONTROL_MOA, IMAGE_COLUMNS, IMAGE_CSV, MOA_CSV, MOA_COLUMNS, NEGATIVE_CONTROL
from .synth_texture import TARGET_MEAN, TEXTURE_KEYS, TEXTURE_PHENOTYPES, match_mean, match_regions

# ------------------------------------------------------------------- MOAs and compounds

# MOA -> compounds (real BBBC021 compound names where they exist). Taxol comes first so
# that the positive-control compound is also a real treatment, as in BBBC021.
MOA_COMPOUNDS: dict[str, list[str]] = {
    "Microtubule stabilizers": ["taxol", "docetaxel", "epothilone B"],
    "Microtubule destabilizers": ["nocodazole", "colchicine", "vincristine"],
    "Actin disruptors": ["cytochalasin B", "latrunculin B", "cytochalasin D"],
    "Aurora kinase inhibitors": ["AZ258", "AZ841", "AZ-A"],
    "Eg5 inhibitors": ["AZ138", "AZ-C", "AZ-D"],
    "DNA damage": ["chlorambucil", "cisplatin", "etoposide"],
    "DNA replication": ["camptothecin", "floxuridine", "methotrexate"],
    "Protein synthesis": ["anisomycin", "emetine", "cycloheximide"],
}
POSITIVE_CONTROL = ("taxol", 0.3)
# Dose series (uM, half-log steps); a compound gets consecutive doses from it.
DOSE_LADDER = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)

# Cell parameters for DMSO (untreated) cells. Lengths are in units of the base cell radius.
BASE = {
    "cell_r": 1.0,  # cell radius
    "elong": 1.35,  # cell aspect ratio
    "ragged": 0.10,  # amplitude of boundary harmonics
    "nuc_r": 0.42,  # nucleus radius relative to cell radius
    "nuc_elong": 1.25,
    "dna": 1.0,  # DNA brightness
    "chromatin": 0.35,  # chromatin texture contrast
    "n_nuclei": 0.0,  # extra nuclei (multinucleation), expected count
    "mitotic": 0.04,  # probability of a rounded mitotic cell with condensed DNA
    "monopolar": 0.0,  # probability a mitotic cell is a monoaster (Eg5 block)
    "actin": 1.0,
    "cortex": 0.55,  # cortical actin rim weight
    "fibres": 0.55,  # stress fibre weight
    "aggregates": 0.0,  # actin aggregates (count scale)
    "tubulin": 1.0,
    "filaments": 0.65,  # radial microtubule contrast
    "bundling": 0.0,  # thick, bright microtubule bundles
    "toxicity": 0.0,  # fewer cells per image
}
# What each MOA moves towards at full effect (keys not given stay at BASE).
PHENOTYPES: dict[str, dict[str, float]] = {
    "Microtubule stabilizers": {"tubulin": 1.7, "filaments": 1.0, "bundling": 1.0, "elong": 1.1,
                                "mitotic": 0.25, "ragged": 0.16},
    "Microtubule destabilizers": {"filaments": 0.02, "tubulin": 0.85, "cell_r": 0.8, "elong": 1.05,
                                  "ragged": 0.04, "mitotic": 0.35, "fibres": 0.8},
    "Actin disruptors": {"fibres": 0.0, "cortex": 0.15, "aggregates": 1.0, "cell_r": 0.75,
                         "ragged": 0.22, "actin": 1.2},
    "Aurora kinase inhibitors": {"n_nuclei": 2.0, "cell_r": 1.45, "nuc_r": 0.36, "dna": 0.9,
                                 "chromatin": 0.5},
    "Eg5 inhibitors": {"mitotic": 0.75, "monopolar": 1.0, "cell_r": 0.85, "elong": 1.0},
    "DNA damage": {"nuc_r": 0.58, "cell_r": 1.3, "chromatin": 0.6, "dna": 1.15, "toxicity": 0.35},
    "DNA replication": {"nuc_r": 0.52, "cell_r": 1.15, "dna": 0.8, "chromatin": 0.2,
                        "nuc_elong": 1.05, "toxicity": 0.25},
    "Protein synthesis": {"cell_r": 0.72, "nuc_r": 0.46, "dna": 0.7, "actin": 0.55, "tubulin": 0.55,
                          "fibres": 0.3, "toxicity": 0.3},
}

# Parameters that a week's cells bend in their own way when they respond to a drug.
BATCH_RESPONSE_KEYS = ("cell_r", "nuc_r", "elong", "actin", "tubulin", "fibres", "filaments", "chromatin")
QUIRK_KEYS = ("cell_r", "nuc_r", "elong", "dna", "actin", "tubulin", "chromatin")

# `SynthSettings.phenotypes`: which MOA phenotype table the plates are drawn from.
# "demo" moves size, brightness and texture; "texture" only texture and shape
# (cytogan_tf.data.synth_texture), so size and intensity features are at chance.
PHENOTYPE_SETS = {
    "demo": {"phenotypes": PHENOTYPES, "batch_keys": BATCH_RESPONSE_KEYS, "quirk_keys": QUIRK_KEYS,
             "matched": False},
    "texture": {"phenotypes": TEXTURE_PHENOTYPES, "batch_keys": TEXTURE_KEYS,
                "quirk_keys": TEXTURE_KEYS, "matched": True},
}

# Photon-count scale per channel (DNA, Actin, Tubulin) and camera settings.
CHANNEL_SCALE = np.array([9000.0, 3200.0, 4200.0], dtype=np.float32)
READ_NOISE = 25.0


@dataclass(frozen=True)
class SynthSettings:
    """Size of the simulated experiment (defaults = the demo preset). Presets live in
    `configs/synth.toml`."""

    plates: int = 4
    wells_per_treatment: int = 2
    sites: int = 2
    image_size: tuple[int, int] = (256, 256)
    cells_per_image: int = 14
    cell_radius: float = 18.0
    moas: int = 8
    compounds_per_moa: int = 3
    concentrations_per_compound: int = 2
    dmso_wells_per_plate: int = 4
    control_wells_per_plate: int = 2
    phenotypes: str = "demo"  # a PHENOTYPE_SETS key
    seed: int = 0

    def validate(self) -> "SynthSettings":
        checks = {
            "plates": self.plates >= 2,
            "wells_per_treatment": self.wells_per_treatment >= 1,
            "sites": self.sites >= 1,
            "image_size": len(self.image_size) == 2 and min(self.image_size) >= 32,
            "cells_per_image": self.cells_per_image >= 1,
            "cell_radius": 4 <= self.cell_radius <= min(self.image_size) / 3,
            "moas": 6 <= self.moas <= len(MOA_COMPOUNDS),
            "compounds_per_moa": 2 <= self.compounds_per_moa <= 3,
            "concentrations_per_compound": 2 <= self.concentrations_per_compound <= 4,
            "dmso_wells_per_plate": self.dmso_wells_per_plate >= 1,
            "control_wells_per_plate": self.control_wells_per_plate >= 0,
            "phenotypes": self.phenotypes in PHENOTYPE_SETS,
            "seed": 0 <= self.seed < 2**63,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise DataError(f"synth settings: invalid value for {', '.join(bad)}: "
                            + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad))
        return self


def load_preset(name: str) -> SynthSettings:
    """A named size preset (tiny, demo, full) from `configs/synth.toml`."""
    from ..config import load_config
    from ..errors import ConfigError

    presets = load_config("synth").get("synth", {}).get("presets", {})
    if name not in presets:
        raise ConfigError(f"unknown synth preset {name!r}; known: {', '.join(sorted(presets))}")
    values = dict(presets[name])
    if "image_size" in values:
        values["image_size"] = tuple(values["image_size"])
    fields = {f.name for f in dataclasses.fields(SynthSettings)}
    unknown = set(values) - fields
    if unknown:
        raise ConfigError(f"configs/synth.toml [synth.presets.{name}]: unknown key(s) {', '.join(sorted(unknown))}")
    return SynthSettings(**values)


# ------------------------------------------------------------------- experiment design


@dataclass(frozen=True)
class Treatment:
    compound: str
    concentration: float
    moa: str
    week: int
    strength: float  # 0..1 fraction of the MOA's full phenotype at this dose
    quirk: tuple  # compound-specific tweaks: ((param, factor), ...)


@dataclass(frozen=True)
class Well:
    plate: str
    week: int
    well: str
    treatment: Treatment | None  # None: DMSO
    control: str  # "negative", "positive" or "treatment"
    replicate: int


def design_experiment(s: SynthSettings) -> tuple[list[str], list[int], list[Treatment], list[Well]]:
    """Plates, weeks, treatments and the well map, all drawn from the seed."""
    rng = np.random.default_rng([s.seed, 101])
    n_weeks = max(2, s.plates // 2)
    plate_week = [p * n_weeks // s.plates for p in range(s.plates)]
    plate_ids = rng.choice(np.arange(20000, 40000), size=s.plates, replace=False)
    plates = [f"Week{w + 1}_{pid}" for w, pid in zip(plate_week, plate_ids)]

    treatments: list[Treatment] = []
    for m, moa in enumerate(list(MOA_COMPOUNDS)[: s.moas]):
        for i, compound in enumerate(MOA_COMPOUNDS[moa][: s.compounds_per_moa]):
            week = (m + i) % n_weeks  # consecutive compounds of an MOA go to different weeks
            efficacy = rng.uniform(0.65, 1.0)
            if compound == POSITIVE_CONTROL[0]:
                start = DOSE_LADDER.index(POSITIVE_CONTROL[1])
            else:
                start = int(rng.integers(0, len(DOSE_LADDER) - s.concentrations_per_compound + 1))
            doses = DOSE_LADDER[start : start + s.concentrations_per_compound]
            # Like BBBC021's MOA-annotated treatments, even the lowest dose shows a visible
            # phenotype (about half strength); higher doses approach the compound's maximum.
            ec50 = doses[0] * rng.uniform(0.5, 1.2)
            quirk_keys = rng.choice(list(PHENOTYPE_SETS[s.phenotypes]["quirk_keys"]), size=2, replace=False)
            quirk = tuple((str(k), float(rng.uniform(0.85, 1.18))) for k in quirk_keys)
            for dose in doses:
                strength = efficacy * dose / (dose + ec50)  # Hill curve, coefficient 1
                treatments.append(Treatment(compound, float(dose), moa, week, float(strength), quirk))

    wells: list[Well] = []
    n_controls = s.dmso_wells_per_plate + s.control_wells_per_plate
    for p, plate in enumerate(plates):
        week = plate_week[p]
        week_plates = [q for q in range(s.plates) if plate_week[q] == week]
        # Replicate r of a treatment goes to the r-th plate of its week (round robin).
        assigned = [(t, r + 1) for t in treatments if t.week == week
                    for r in range(s.wells_per_treatment) if week_plates[r % len(week_plates)] == p]
        positions = _well_positions(n_controls + len(assigned))
        for k, pos in enumerate(positions[:n_controls]):  # same control wells on every plate
            if k < s.dmso_wells_per_plate:
                wells.append(Well(plate, week, pos, None, "negative", k + 1))
            else:
                wells.append(Well(plate, week, pos, _control_treatment(treatments), "positive",
                                  k - s.dmso_wells_per_plate + 1))
        free = positions[n_controls:]
        order = rng.permutation(len(free))  # treatments land on shuffled positions
        for (t, rep), slot in zip(assigned, order):
            wells.append(Well(plate, week, free[slot], t, "treatment", rep))
    return plates, plate_week, treatments, wells


def _control_treatment(treatments: list[Treatment]) -> Treatment:
    for t in treatments:
        if (t.compound, t.concentration) == POSITIVE_CONTROL:
            return t
    # Taxol not among this run's treatments: the control wells still show its phenotype.
    return Treatment(POSITIVE_CONTROL[0], POSITIVE_CONTROL[1], "Microtubule stabilizers", -1, 0.6, ())


def _well_positions(n: int) -> list[str]:
    """The first `n` wells of a 96-well plate (384 when more are needed), column by column
    from column 2 like BBBC021's inner wells; controls take the first ones on every plate."""
    rows, cols = ("ABCDEFGH", 12) if n <= 96 else ("ABCDEFGHIJKLMNOP", 24)
    order = [f"{r}{c:02d}" for c in list(range(2, cols + 1)) + [1] for r in rows]
    if n > len(order):
        raise DataError(f"synth: {n} wells do not fit on a 384-well plate; use more plates")
    return order[:n]


# ------------------------------------------------------------------- drawing cells


def _cell_params(rng, t: Treatment | None, n: int, batch_response: dict | None = None,
                 phenotypes: dict | None = None) -> list[dict]:
    """Per-cell phenotype parameters: DMSO values pulled towards the MOA by a per-cell dose.

    `batch_response` holds the week's treatment-by-batch interaction: cells of one week
    respond with a shared twist (multipliers raised to the cell's response), which DMSO
    normalisation cannot remove. It is what makes NSCB harder than NSC in real screens.
    """
    target = (PHENOTYPES if phenotypes is None else phenotypes).get(t.moa, {}) if t else {}
    quirk = dict(t.quirk) if t else {}
    batch_response = batch_response or {}
    strength = t.strength * batch_response.get("sensitivity", 1.0) if t else 0.0
    cells = []
    for _ in range(n):
        # Uneven response: some cells barely react, others overshoot the well average.
        responds = rng.random() < 0.2 + 0.8 * strength
        w = float(np.clip(strength * rng.normal(1.0, 0.35), 0, 1.3)) if responds else 0.0
        p = {}
        for key, base in BASE.items():
            value = base + w * (target.get(key, base) - base)
            if w > 0:
                value *= quirk.get(key, 1.0) * batch_response.get(key, 1.0) ** w
            p[key] = value
        # Biological variability independent of treatment.
        for key, sd in (("cell_r", 0.14), ("nuc_r", 0.10), ("dna", 0.15), ("actin", 0.2),
                        ("tubulin", 0.2), ("elong", 0.1), ("chromatin", 0.25), ("fibres", 0.3),
                        ("filaments", 0.2)):
            p[key] *= float(np.exp(rng.normal(0, sd)))
        p["elong"] = max(1.0, p["elong"])
        p["mitotic_now"] = rng.random() < p["mitotic"]
        p["w"] = w
        cells.append(p)
    return cells


def _place_cells(rng, radii: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centres that mostly keep cells apart (a few may touch, as in real wells)."""
    h, w = shape
    centres = np.zeros((len(radii), 2))
    for i, r in enumerate(radii):
        for attempt in range(25):
            c = rng.uniform([0, 0], [h, w])
            if i == 0:
                break
            d = np.hypot(*(centres[:i] - c).T)
            if np.all(d > 0.95 * (radii[:i] + r)):
                break
        centres[i] = c
    return centres


def _col(values) -> np.ndarray:
    """Per-fibre parameters as float32 [n, 1, 1], to broadcast over a patch without
    promoting the patch arithmetic to float64."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def _bump(x: np.ndarray) -> np.ndarray:
    """Smooth compact bump max(0, 1 - x^2)^2: a Gaussian-like line profile from
    multiplications only (np.exp over every fibre and pixel dominated the run time)."""
    q = np.maximum(1 - x * x, 0)
    return q * q


def _render_cell(canvas, fields, rng, p: dict, cy: float, cx: float, R: float,
                 matched: bool = False) -> tuple[int, float, float, float]:
    """Add one cell to the 3xHxW canvas; return (nuclei, nucleus centre y, x, cell radius).

    `matched` (texture phenotypes): several nuclei overlap as lobes of about one
    nucleus' area, and each channel's mean over the nucleus and over the rest of the
    cell is set by the cell's brightness factors alone."""
    H, W = canvas.shape[1:]
    mitotic = p["mitotic_now"]
    r = R * p["cell_r"] * (0.8 if mitotic else 1.0)
    elong = 1.05 if mitotic else p["elong"]
    half = int(math.ceil(r * math.sqrt(elong) * (1.0 + p["ragged"] * 2) + 3))
    y0, y1 = max(0, int(cy) - half), min(H, int(cy) + half + 1)
    x0, x1 = max(0, int(cx) - half), min(W, int(cx) + half + 1)
    if y0 >= y1 or x0 >= x1:
        return 0, cy, cx, r
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    theta = rng.uniform(0, math.pi)
    ct, st = math.cos(theta), math.sin(theta)
    u, v = dx * ct + dy * st, -dx * st + dy * ct
    a, b = r * math.sqrt(elong), r / math.sqrt(elong)
    rho = np.hypot(u / a, v / b)
    phi = np.arctan2(v / b, u / a)
    edge = np.ones_like(phi)
    ragged = 0.3 * p["ragged"] if mitotic else p["ragged"]
    for k, amp in ((2, 0.7), (3, 0.5), (4, 0.3), (6, 0.15)):
        edge += ragged * amp * rng.normal(0, 0.8) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    cell = np.clip((edge - rho) * r / 1.5 + 0.5, 0, 1)
    patch = (slice(y0, y1), slice(x0, x1))
    tex_a, tex_b = fields[0][patch], fields[1][patch]

    # Nuclei: one normally, several for cytokinesis failure (Aurora), condensed if mitotic.
    n_nuc = 1 + (rng.poisson(p["n_nuclei"]) if not mitotic else 0)
    n_nuc = min(n_nuc, 4)
    dna = np.zeros_like(rho)
    nuc_mask = np.zeros_like(rho)
    monopolar = mitotic and rng.random() < p["monopolar"]
    centres = []
    for j in range(n_nuc):
        if n_nuc == 1:
            ny, nx = rng.normal(0, 0.08 * r, size=2)
        else:
            ang = 2 * math.pi * j / n_nuc + rng.uniform(0, 1)
            spread = 0.22 if matched else 0.38  # matched: overlapping lobes, one nucleus' area
            ny, nx = spread * r * math.sin(ang), spread * r * math.cos(ang)
        centres.append((ny, nx))
        share = 1.0 if n_nuc == 1 else (0.75 if matched else 0.8)
        nr = r * p["nuc_r"] * (0.62 if mitotic else 1.0) * share
        ne = 1.6 if (mitotic and not monopolar) else p["nuc_elong"]
        nt = rng.uniform(0, math.pi)
        cn, sn = math.cos(nt), math.sin(nt)
        nu, nv = (dx - nx) * cn + (dy - ny) * sn, -(dx - nx) * sn + (dy - ny) * cn
        nrho = np.hypot(nu / (nr * math.sqrt(ne)), nv / (nr / math.sqrt(ne)))
        m = np.clip((1 - nrho) * nr / 1.2 + 0.5, 0, 1)
        if monopolar:  # Eg5 block: chromosomes in a ring around a single aster
            m = m * np.clip(nrho * 1.8, 0, 1)
        chrom = p["chromatin"] * (1.8 if mitotic else 1.0)
        intensity = p["dna"] * (2.0 if mitotic else 1.0)
        dna += m * intensity * (0.8 + 0.2 * (1 - np.minimum(nrho, 1) ** 2)) * (1 + chrom * tex_a)
        nuc_mask = np.maximum(nuc_mask, m)

    # Actin: cortical rim + a few roughly parallel stress fibres + aggregates.
    rim = np.exp(-(((rho - edge * 0.92) / 0.09) ** 2))
    n_fib = rng.integers(3, 8)
    beta = _col(rng.uniform(0, math.pi) + rng.normal(0, 0.15, n_fib))
    offsets = _col(rng.uniform(-0.8, 0.8, n_fib) * r)
    across = -dx[None] * np.sin(beta) + dy[None] * np.cos(beta) - offsets
    fib = (_col(rng.uniform(0.4, 1.0, n_fib)) * _bump(across / 1.6)).sum(0)
    actin = 0.25 + p["cortex"] * rim + 1.3 * p["fibres"] * fib * (1 - 0.6 * nuc_mask)
    n_agg = rng.poisson(6 * p["aggregates"])
    if n_agg:
        ar = rng.uniform(0, 0.8, n_agg) * r
        aa = rng.uniform(0, 2 * math.pi, n_agg)
        ay, ax = ar * np.sin(aa), ar * np.cos(aa)
        sig = _col(rng.uniform(1.0, 2.2, n_agg))
        blobs = np.exp(-((dy[None] - _col(ay)) ** 2 + (dx[None] - _col(ax)) ** 2) / (2 * sig**2))
        actin = actin + 2.5 * blobs.sum(0)
    actin = actin * cell * p["actin"] * (1 + 0.2 * tex_b)

    # Tubulin: thin, slightly curved filaments radiating from a centrosome beside the
    # nucleus; stabilisers make fewer, thicker, brighter bundles, destabilisers a haze.
    cy_c, cx_c = rng.normal(0, 0.15 * r, size=2)
    bundled = p["bundling"]
    n_fil = max(5, int(round(rng.integers(16, 26) * (1 - 0.5 * bundled))))
    dirs = _col(rng.uniform(0, 2 * math.pi, n_fil))
    ry, rx = dy[None] - np.float32(cy_c), dx[None] - np.float32(cx_c)
    along = np.maximum(rx * np.cos(dirs) + ry * np.sin(dirs), 0)
    bend = _col(rng.normal(0, 0.06, n_fil) / max(r, 1.0)) * along * along
    perp = -rx * np.sin(dirs) + ry * np.cos(dirs) - bend
    width = np.float32(1.3 + 1.5 * bundled)
    fil = (_bump(perp / width) * (along > 0) * _col(rng.uniform(0.5, 1.0, n_fil))).sum(0)
    fil = fil / (1 + 0.5 * fil)  # overlapping filaments saturate instead of adding up
    dist = np.hypot(rx[0], ry[0])
    tub = 0.3 + 1.4 * p["filaments"] * (1 + bundled) * fil
    tub = tub + bundled * 1.0 * np.exp(-(((rho - edge * 0.85) / 0.1) ** 2))  # peripheral bundles
    tub = tub + 0.8 * np.exp(-(dist**2) / (2 * (0.12 * r) ** 2))  # centrosome
    if mitotic:
        tub = tub * 0.5 + 2.0 * np.exp(-(dist**2) / (2 * (0.22 * r) ** 2))  # spindle/aster
    tub = tub * (0.7 + 0.3 * np.exp(-rho)) * (1 - 0.55 * nuc_mask) * cell * p["tubulin"]
    tub = tub * (1 + 0.2 * tex_b)

    dna = dna * np.maximum(cell, nuc_mask)
    if matched:
        dna = match_mean(dna, nuc_mask, TARGET_MEAN["dna"] * p["dna"])
        actin = match_regions(actin, nuc_mask, cell, TARGET_MEAN["actin"] * p["actin"])
        tub = match_regions(tub, nuc_mask, cell, TARGET_MEAN["tubulin"] * p["tubulin"])
    canvas[0, y0:y1, x0:x1] += dna
    canvas[1, y0:y1, x0:x1] += actin
    canvas[2, y0:y1, x0:x1] += tub
    ny, nx = np.mean(centres, axis=0)
    return n_nuc, cy + ny, cx + nx, r


def render_image(rng, s: SynthSettings, t: Treatment | None, plate_fx: dict) -> tuple[np.ndarray, list[dict]]:
    """One field of view: 3xHxW uint16 (DNA, Actin, Tubulin) and its cells' ground truth."""
    H, W = s.image_size
    strength = t.strength if t else 0.0
    pset = PHENOTYPE_SETS[s.phenotypes]
    tox = BASE["toxicity"] + strength * (pset["phenotypes"].get(t.moa, {}).get("toxicity", 0.0) if t else 0.0)
    n = max(1, rng.poisson(s.cells_per_image * (1 - tox)))
    response = batch_response(plate_fx["seed"], plate_fx["week"], t.moa, s.phenotypes) if t else None
    params = _cell_params(rng, t, n, response, pset["phenotypes"])
    radii = np.array([s.cell_radius * p["cell_r"] * math.sqrt(p["elong"]) for p in params])
    centres = _place_cells(rng, radii, (H, W))
    # Two smooth noise fields shared by the cells of this image: chromatin and fibre texture.
    fields = [ndimage.gaussian_filter(rng.standard_normal((H, W)).astype(np.float32), sg) * k
              for sg, k in ((1.0, 2.0), (1.5, 2.5))]
    canvas = np.zeros((3, H, W), dtype=np.float32)
    truth = []
    for p, (cy, cx) in zip(params, centres):
        n_nuc, ny, nx, radius = _render_cell(canvas, fields, rng, p, cy, cx, s.cell_radius,
                                             matched=pset["matched"])
        truth.append({
            # Nucleus centre (mean of a multinucleate cell's nuclei), x = column.
            "Location_Center_X": round(float(np.clip(nx, 0, W - 0.01)), 2),
            "Location_Center_Y": round(float(np.clip(ny, 0, H - 0.01)), 2),
            "Cell_Radius": round(float(radius), 2), "Nuclei": n_nuc,
            "Mitotic": bool(p["mitotic_now"]), "Response": round(p["w"], 3),
        })
    # Plate/batch effects: gain, vignetting, background; then shot and read noise.
    signal = canvas * CHANNEL_SCALE[:, None, None] * plate_fx["gain"][:, None, None]
    signal = signal * plate_fx["illumination"][None] + plate_fx["background"][:, None, None]
    # Shot noise (variance = signal) and read noise add up: one Gaussian draw covers both.
    sigma = np.sqrt(np.maximum(signal, 0) + np.float32(READ_NOISE**2))
    noisy = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 65535).astype(np.uint16), truth


def _plate_effects(rng, shape: tuple[int, int], week: int, seed: int) -> dict:
    """Per-plate gain, illumination falloff and background (weeks differ more than plates)."""
    H, W = shape
    week_rng = np.random.default_rng([seed, 404, week])  # effects shared by a week's plates
    week_gain = np.exp(week_rng.normal(0, 0.2, 3))
    gain = (week_gain * np.exp(rng.normal(0, 0.08, 3))).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cy, cx = H / 2 + rng.normal(0, 0.1 * H), W / 2 + rng.normal(0, 0.1 * W)
    rr = ((yy - cy) / H) ** 2 + ((xx - cx) / W) ** 2
    falloff = week_rng.uniform(0.4, 1.0) * rng.uniform(0.8, 1.2)
    illumination = (1 - falloff * rr).astype(np.float32)
    background = (np.array([300.0, 420.0, 380.0]) * np.exp(rng.normal(0, 0.2, 3))).astype(np.float32)
    return {"gain": gain, "illumination": illumination, "background": background,
            "seed": seed, "week": week}


@functools.lru_cache(maxsize=None)
def batch_response(seed: int, week: int, moa: str, phenotypes: str = "demo") -> dict:
    """How one week's cells bend one MOA's phenotype (treatment-by-batch interaction).

    Same-week compounds of an MOA share it, so they look more alike than the same MOA
    imaged in another week: NSCB (matches from other weeks only) is harder than NSC, as in
    real screens. Keyed by MOA so it does not make all of a week's drugs look alike.
    """
    moa_index = list(MOA_COMPOUNDS).index(moa) if moa in MOA_COMPOUNDS else len(MOA_COMPOUNDS)
    rng = np.random.default_rng([seed, 505, week, moa_index])
    response = {key: float(np.exp(rng.normal(0, 0.18))) for key in PHENOTYPE_SETS[phenotypes]["batch_keys"]}
    response["sensitivity"] = float(rng.uniform(0.8, 1.15))
    return response


# ------------------------------------------------------------------- writing a plate set


def simulate_plates(out: str | os.PathLike, settings: SynthSettings | None = None, progress: bool = True) -> dict:
    """Write a simulated plate set to `out` (a new or empty directory); return a summary."""
    import tifffile
    from ..progress import progress_bar

    s = (settings or SynthSettings()).validate()
    out = Path(out)
    if out.exists():
        if not out.is_dir() or any(out.iterdir()):
            raise DataError(f"{out}: output directory exists and is not empty; choose a new one")
        out.rmdir()
    plates, plate_week, treatments, wells = design_experiment(s)
    fx_rng = np.random.default_rng([s.seed, 202])
    plate_fx = {pl: _plate_effects(fx_rng, s.image_size, wk, s.seed) for pl, wk in zip(plates, plate_week)}

    image_rows, cell_rows = [], []
    jobs = [(w, site) for w in wells for site in range(1, s.sites + 1)]
    with atomic_directory(out) as tmp:
        for number, (w, site) in enumerate(progress_bar(jobs, desc="synth images", unit="img",
                                                         enabled=progress), start=1):
            rng = np.random.default_rng([s.seed, 303, number])
            uid = str(uuid.UUID(bytes=rng.bytes(16), version=4)).upper()
            t = w.treatment
            pixels, truth = render_image(rng, s, t, plate_fx[w.plate])
            folder = f"Week{w.week + 1}/{w.plate}"
            names = {}
            for channel, (stain, tag) in zip(range(3), (("DAPI", "w1"), ("Actin", "w4"), ("Tubulin", "w2"))):
                name = f"{w.well}_s{site}_{tag}{uid}.tif"
                path = tmp / folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(path, pixels[channel], photometric="minisblack", metadata=None)
                names[stain] = name
            compound = t.compound if t else NEGATIVE_CONTROL
            conc = t.concentration if t else 0.0
            moa = NEGATIVE_CONTROL if t is None else (CONTROL_MOA if w.control == "positive" else t.moa)
            image_rows.append({
                "TableNumber": w.week + 1, "ImageNumber": number,
                "Image_FileName_DAPI": names["DAPI"], "Image_PathName_DAPI": folder,
                "Image_FileName_Tubulin": names["Tubulin"], "Image_PathName_Tubulin": folder,
                "Image_FileName_Actin": names["Actin"], "Image_PathName_Actin": folder,
                "Image_Metadata_Plate_DAPI": w.plate, "Image_Metadata_Well_DAPI": w.well,
                "Replicate": w.replicate, "Image_Metadata_Compound": compound,
                "Image_Metadata_Concentration": conc,
            })
            for k, cell in enumerate(truth, start=1):
                cell_rows.append({"ImageNumber": number, "CellNumber": k, "Metadata_Plate": w.plate,
                                  "Metadata_Well": w.well, "Metadata_Site": site,
                                  "Metadata_Compound": compound, "Metadata_Concentration": conc,
                                  "Metadata_MOA": moa, "Metadata_Control": w.control, **cell})
        images = pd.DataFrame(image_rows, columns=IMAGE_COLUMNS)
        _write_cr_csv(images, tmp / IMAGE_CSV)
        moa_rows = [{"compound": t.compound, "concentration": t.concentration, "moa": t.moa} for t in treatments]
        moa_rows.append({"compound": NEGATIVE_CONTROL, "concentration": 0.0, "moa": NEGATIVE_CONTROL})
        _write_cr_csv(pd.DataFrame(moa_rows, columns=MOA_COLUMNS), tmp / MOA_CSV)
        pd.DataFrame(cell_rows).to_csv(tmp / "synth_cells.csv", index=False)

    return {
        "out": str(out), "plates": len(plates), "weeks": len(set(plate_week)), "wells": len(wells),
        "images": len(image_rows), "cells": len(cell_rows), "treatments": len(treatments),
        "moas": len({t.moa for t in treatments}), "compounds": len({t.compound for t in treatments}),
    }


def _write_cr_csv(df: pd.DataFrame, path: Path) -> None:
    # The real BBBC021 CSVs end lines with a bare CR (classic Mac); so do ours, so every
    # reader is tested against the real trap.
    path.write_text(df.to_csv(index=False, lineterminator="\r"), encoding="utf-8")
