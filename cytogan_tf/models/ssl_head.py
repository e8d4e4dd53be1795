"""Projection head for the discriminator's contrastive self-supervision (ContraD-style).

Why: the adversarial loss alone only asks D to tell real from generated cells, which a
random-feature network with a trained last layer can nearly do; its features then carry
no more biology than random ones (measured: a trained LSGAN encoder profiles like its
untrained control). A SimCLR objective on two augmented views of each real cell makes
D's pooled features tell cells apart from one another, which is what profiling needs.
The head is discarded at export, as in SimCLR: the encoder reads D's pooled features.
"""

from __future__ import annotations

import keras
from keras import layers

PROJECTION_DIM = 128


def build_projection_head(feature_dim: int, hidden: int = 256, out: int = PROJECTION_DIM):
    """features [B, feature_dim] -> projections [B, out]: Dense-LeakyReLU-Dense, float32."""
    feats = keras.Input((feature_dim,), name="features", dtype="float32")
    x = layers.Dense(hidden, dtype="float32", name="ssl_hidden")(feats)
    x = layers.LeakyReLU(negative_slope=0.2, dtype="float32", name="ssl_act")(x)
    proj = layers.Dense(out, dtype="float32", name="ssl_projection")(x)
    return keras.Model(feats, proj, name="ssl_head")
