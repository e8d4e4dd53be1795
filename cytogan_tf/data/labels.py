"""Weak labels for training: each cell's treatment (or compound) as a class index.

Why: a screen's metadata already says which treatment every cell received. Training the
discriminator to tell treatments apart (as DeepProfiler and Caicedo et al. 2018 train
their CNNs) ties its features to what the compounds do to cells, the signal profiling
needs, where the adversarial loss alone only asks "real or generated?". MOA labels are
never used: evaluation asks for the MOA of a compound the features were not told about
(not-same-compound matching), so the labels cannot leak the answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .shards import read_cells_table

LABEL_KINDS = ("treatment", "compound")


@dataclass(frozen=True)
class WeakLabels:
    kind: str
    classes: list[str]       # class index -> "compound@concentration" (or "compound")
    cell_ids: np.ndarray     # int64, Metadata_CellId of every cell
    labels: np.ndarray       # int64 class index of each cell, aligned with cell_ids

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def class_key(compound, concentration, kind: str) -> str:
    if kind == "compound":
        return str(compound)
    return f"{compound}@{float(concentration):g}"


def weak_labels(shards_dir: str | os.PathLike, kind: str) -> WeakLabels:
    """Class indices (sorted class names, so the same shards always give the same
    numbering) for every cell of a shards directory."""
    if kind not in LABEL_KINDS:
        raise ConfigError(f"model.weak_labels: {kind!r} must be one of none, {', '.join(LABEL_KINDS)}")
    cells = read_cells_table(shards_dir)
    need = ["Metadata_CellId", "Metadata_Compound"] + (
        ["Metadata_Concentration"] if kind == "treatment" else [])
    missing = [c for c in need if c not in cells.columns]
    if missing:
        raise ConfigError(f"{shards_dir}: cell table lacks {', '.join(missing)}, "
                          f"needed for weak_labels={kind}")
    conc = cells["Metadata_Concentration"] if kind == "treatment" else [0.0] * len(cells)
    keys = [class_key(c, x, kind) for c, x in zip(cells["Metadata_Compound"], conc)]
    classes = sorted(set(keys))
    if len(classes) < 2:
        raise ConfigError(f"{shards_dir}: weak_labels={kind} needs at least 2 {kind}s, "
                          f"found {len(classes)} ({', '.join(classes) or 'no cells'})")
    index = {k: i for i, k in enumerate(classes)}
    return WeakLabels(kind=kind, classes=classes,
                      cell_ids=cells["Metadata_CellId"].to_numpy(np.int64),
                      labels=np.array([index[k] for k in keys], np.int64))


def label_table(weak: WeakLabels):
    """A TF hash table cell_id -> class index (-1 for a cell the table does not know)."""
    import tensorflow as tf

    init = tf.lookup.KeyValueTensorInitializer(tf.constant(weak.cell_ids, tf.int64),
                                               tf.constant(weak.labels, tf.int64))
    return tf.lookup.StaticHashTable(init, default_value=-1)
