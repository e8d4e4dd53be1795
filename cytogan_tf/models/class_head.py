"""Weak-label heads on the discriminator's pooled features (or E's z): a treatment
classifier, or the projection the set-level loss compares (losses.set_contrast_loss).

Why: see `data/labels.py`. The head is one linear layer, as in a linear probe, so the
pooled features themselves (what the exported encoder returns) must separate the
treatments; a deeper head could learn that separation in its own hidden layers and leave
the features as they were. Discarded at export, like the contrastive head.
"""

from __future__ import annotations

import keras
from keras import layers

from ..losses import RUN_LOSSES


def build_class_head(feature_dim: int, n_classes: int, name: str = "class_head"):
    """features [B, feature_dim] -> class logits [B, n_classes], float32 (also E's linear
    morphology head, models/morphology.py: one output per statistic)."""
    feats = keras.Input((feature_dim,), name="features", dtype="float32")
    # Pooled max/average features differ in scale by stage; normalising them lets one
    # learning rate suit every stage without touching what the encoder exports.
    x = layers.LayerNormalization(dtype="float32", name="class_norm")(feats)
    logits = layers.Dense(int(n_classes), dtype="float32", name="class_logits")(x)
    return keras.Model(feats, logits, name=name)


# Objectives scored over runs of one class (the batch ordered by data.pipeline's group_size).
GROUPED_OBJECTIVES = tuple(RUN_LOSSES)
WEAK_OBJECTIVES = ("class", *GROUPED_OBJECTIVES)
SET_PROJECTION_DIM = 64  # the set loss's cosine space: SimCLR-like width, well under the features'


def build_weak_head(feature_dim: int, objective: str, n_classes: int, name: str = "class_head",
                    *, owner: str = "model"):
    """The head `weak_objective` trains: class logits (class, set_class), or (set) a linear
    projection whose half-run means the set loss compares. Linear for the class head's reason.
    `owner` (the arch) names the model in the error of a class count below 2."""
    if objective not in WEAK_OBJECTIVES:
        raise ValueError(f"unknown weak_objective {objective!r}; valid: {', '.join(WEAK_OBJECTIVES)}")
    if int(n_classes) < 2:
        raise ValueError(f"{owner}: weak labels need n_classes >= 2, got {n_classes}")
    width = SET_PROJECTION_DIM if objective == "set" else n_classes
    return build_class_head(feature_dim, width, name=name)
