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


class Columns(layers.Layer):
    """x[:, start:stop]: a serialisable column slice (a Lambda would not reload safely)."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[:, self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


def build_block_projection_heads(block_dims, hidden: int = 256, out: int = PROJECTION_DIM):
    """features [B, sum(block_dims)] -> projections [B, n_blocks, out]: one head per block.

    Why: one head on joined readouts (head_features "both") can solve the views' task
    with whichever block finds it easiest and leave the other as it was; a head and a
    loss per block make each readout tell the views apart on its own (head_features
    "each"). Blocks are consecutive column ranges of the features, in order.
    """
    dims = [int(d) for d in block_dims]
    feats = keras.Input((sum(dims),), name="features", dtype="float32")
    projections, start = [], 0
    for k, dim in enumerate(dims):
        block = Columns(start, start + dim, dtype="float32", name=f"ssl_block{k}")(feats)
        x = layers.Dense(hidden, dtype="float32", name=f"ssl_hidden{k}")(block)
        x = layers.LeakyReLU(negative_slope=0.2, dtype="float32", name=f"ssl_act{k}")(x)
        x = layers.Dense(out, dtype="float32", name=f"ssl_projection{k}")(x)
        projections.append(layers.Reshape((1, out), dtype="float32", name=f"ssl_stack{k}")(x))
        start += dim
    stacked = layers.Concatenate(axis=1, dtype="float32", name="ssl_blocks")(projections)
    return keras.Model(feats, stacked, name="ssl_head")
