"""The simulator's texture phenotype set: MOAs that differ in texture, not size or brightness.

Why: on the demo phenotypes most MOAs change cell and nucleus size and stain intensity,
which any random convolution (and 8 hand-made size/intensity features) already carries,
so an encoder can look good without learning anything. Real MOAs also differ at similar
size and brightness (microtubule bundles vs a tubulin haze, actin puncta vs fibres, HDAC
chromatin, multinucleation, ruffled outlines). Here every MOA only moves texture, shape
and arrangement parameters; cell and nucleus sizes keep DMSO's distribution (each of
several nuclei has a single nucleus' size) and each channel's mean intensity over the
cell is rescaled to a level drawn independently of the treatment.
"""

from __future__ import annotations

import numpy as np

# What each MOA moves towards at full effect; keys not given stay at the DMSO values
# (synthetic.BASE). No key here changes size (cell_r, nuc_r), brightness (dna, actin,
# tubulin), mitosis (mitotic rounds and shrinks cells) or toxicity.
TEXTURE_PHENOTYPES: dict[str, dict[str, float]] = {
    "Microtubule stabilizers": {"bundling": 1.0, "filaments": 1.0},       # thick bundles
    "Microtubule destabilizers": {"filaments": 0.02},                     # tubulin haze
    "Actin disruptors": {"fibres": 0.0, "cortex": 0.2, "aggregates": 1.0},  # actin puncta
    "Aurora kinase inhibitors": {"n_nuclei": 2.0},                        # multinucleate
    "Eg5 inhibitors": {"ragged": 0.32, "elong": 1.0},                     # round, ruffled outline
    "DNA damage": {"chromatin": 1.1},                                     # coarse chromatin
    "DNA replication": {"chromatin": 0.0, "nuc_elong": 1.0},              # smooth round nuclei
    "Protein synthesis": {"fibres": 1.5, "cortex": 0.9},                  # strong stress fibres
}

# Compound quirks and the week-by-MOA response may only bend texture parameters too,
# or they would smuggle MOA-specific size or brightness back in.
TEXTURE_KEYS = ("chromatin", "fibres", "filaments", "ragged", "elong", "cortex")

# Mean intensity over the cell mask of each channel for a cell at brightness factor 1
# (DNA over the nucleus); close to what a DMSO cell of the demo phenotypes renders.
TARGET_MEAN = {"dna": 1.25, "actin": 0.75, "tubulin": 0.55}


def match_mean(channel: np.ndarray, mask: np.ndarray, target: float) -> np.ndarray:
    """`channel` rescaled so its mean over `mask` (weights in [0, 1]) equals `target`."""
    weight = float(mask.sum())
    if weight <= 0:
        return channel
    mean = float((channel * mask).sum()) / weight
    return channel * np.float32(target / mean) if mean > 0 else channel


NUCLEUS_SHARE = 0.45  # a cytoplasmic stain's mean over the nucleus, relative to its level


def match_regions(channel: np.ndarray, nucleus: np.ndarray, cell: np.ndarray, target: float) -> np.ndarray:
    """A cytoplasmic stain rescaled separately over the nucleus and over the rest of the
    cell, so neither compartment's mean intensity depends on how the MOA arranged it
    (actin puncta over the nucleus would otherwise raise its nuclear mean)."""
    inner = nucleus * cell
    outer = np.clip(cell - inner, 0, 1)
    a = match_mean(channel * inner, inner, NUCLEUS_SHARE * target)
    b = match_mean(channel * outer, outer, target)
    return a + b
