"""Second-order (texture) readout: how the first stage's filter responses co-vary.

Why: the MOAs that differ in texture at matched size and brightness (chromatin grain,
tubulin bundles vs haze, actin puncta vs fibres) move the joint statistics of fine-scale
filter responses, not their means. First-order pooling (the multiscale readout's average
and max) averages texture away; the correlation matrix of the first stage's channels,
with each channel's spread, is the classic texture descriptor of filter-bank and Gatys
style features. Measured on the texture plates (benchmarks/encoders.py, 3 seeds): NSC
0.82 against 0.47 for the multiscale readout of the same trained networks. The stage
is the first one because deeper stages' correlations add dimensions faster than signal
(0.66 with stages 1-2 as well).
"""

from __future__ import annotations

import numpy as np
from keras import layers, ops


class ChannelCorrelation(layers.Layer):
    """[B, H, W, C] -> [B, C (C - 1) / 2 + C]: the upper triangle of the channels'
    correlation matrix over the image, then each channel's standard deviation (float32)."""

    def __init__(self, eps: float = 1e-6, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.eps = float(eps)

    def build(self, input_shape):
        c = int(input_shape[-1])
        rows, cols = np.triu_indices(c, 1)
        self._flat_index = (rows * c + cols).astype("int32")
        self.channels = c

    def call(self, x):
        x = ops.cast(x, "float32")
        shape = ops.shape(x)
        flat = ops.reshape(x, (shape[0], -1, self.channels))
        flat = flat - ops.mean(flat, axis=1, keepdims=True)
        cov = ops.einsum("bnc,bnd->bcd", flat, flat) / ops.cast(ops.shape(flat)[1], "float32")
        std = ops.sqrt(ops.diagonal(cov, axis1=1, axis2=2) + self.eps)
        corr = cov / (std[:, :, None] * std[:, None, :])
        corr = ops.take(ops.reshape(corr, (shape[0], -1)), self._flat_index, axis=1)
        return ops.concatenate([corr, std], axis=1)

    def compute_output_shape(self, input_shape):
        c = int(input_shape[-1])
        return (input_shape[0], c * (c - 1) // 2 + c)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


def texture_pool(stages, *, prefix):
    """The second-order readout of a stage list (shallow first): its first stage."""
    return ChannelCorrelation(name=f"{prefix}_texture")(stages[0])


def texture_dim(widths) -> int:
    c = int(list(widths)[-1])  # downsampling_stages runs the widths deep -> shallow, reversed
    return c * (c - 1) // 2 + c
