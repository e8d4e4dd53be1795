"""Differentiable augmentation of the discriminator's inputs (DiffAugment-style).

Why: a demo plate set holds ~2k cells, which a discriminator memorises within a few
hundred steps; its features then describe those crops instead of cells in general.
Applying the same random, differentiable transforms to real and generated batches
(Zhao et al. 2020) keeps the generator's target unchanged while D must judge cells under
every transform. Only transforms that keep a cell's biology are used: the 8 flips and
right-angle rotations (a cell has no preferred orientation) and small translations
(pixels shifted in are background); "strong" adds a mild zoom and per-stain gains, for the
contrastive head; "window" keeps one square window of the cell instead, so two views share
its texture, not its layout; "window-paired" draws a cell's two contrastive views as windows
of one size, so matching them asks for texture but not for indifference to how much of the
window the cell fills (its size); "cell-silhouette" (BiGAN's encoder head only) pairs a
cell with its own flat-coloured silhouette, so matching them asks for the outline. Every op
but the silhouette is differentiable, so gradients reach the generator.

Randomness comes from a stateless seed (the model's SeedGenerator), so a seeded run
repeats exactly.
"""

from __future__ import annotations

import tensorflow as tf

AUGMENTS = ("none", "diff", "strong", "window", "window-paired", "window-silhouette")
BACKGROUND = -1.0  # black in the networks' [-1, 1] pixel scale


def _split(seed, n):
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n)


def dihedral(images, seed):
    """Each image gets one of the 8 flips/right-angle rotations (square images)."""
    batch = tf.shape(images)[0]
    s = _split(seed, 3)
    coins = [tf.random.stateless_uniform([batch, 1, 1, 1], seed=s[i]) < 0.5 for i in range(3)]
    x = tf.where(coins[0], tf.transpose(images, [0, 2, 1, 3]), images)
    x = tf.where(coins[1], tf.reverse(x, axis=[1]), x)
    return tf.where(coins[2], tf.reverse(x, axis=[2]), x)


def translate(images, seed, ratio=0.125):
    """Shift each image by up to `ratio` of its size in y and x, filling with background."""
    size = images.shape[1]
    pad = max(1, int(round(size * ratio)))
    batch = tf.shape(images)[0]
    shifts = tf.random.stateless_uniform([batch, 2], seed=seed, minval=-pad, maxval=pad + 1,
                                         dtype=tf.int32)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]],
                    constant_values=tf.cast(BACKGROUND, images.dtype))
    grid = tf.range(size)[None, :]
    rows = grid + (pad - shifts[:, :1])
    cols = grid + (pad - shifts[:, 1:])
    x = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(x, cols, axis=2, batch_dims=1)


def diff_augment(images, seed):
    """The "diff" policy: a random dihedral transform, then a translation."""
    s = _split(seed, 2)
    return translate(dihedral(images, s[0]), s[1])


def channel_gain(images, seed, spread=0.4):
    """Each image's stains scaled by their own factors in [1 - spread, 1 + spread] (in
    [0, 1] intensity, background stays black): plate-to-plate gain, and what keeps a
    contrastive objective from telling two cells apart by brightness alone."""
    batch = tf.shape(images)[0]
    gain = tf.random.stateless_uniform([batch, 1, 1, 3], seed=seed, minval=1.0 - spread,
                                       maxval=1.0 + spread, dtype=images.dtype)
    unit = (images - BACKGROUND) * 0.5
    return tf.clip_by_value(unit * gain, 0.0, 1.0) * 2.0 + BACKGROUND


def _random_sides(batch, seed, min_side, max_side):
    """Per image, a square's side as a fraction of the image's: [B, 1]."""
    return tf.random.stateless_uniform([batch, 1], seed=seed, minval=min_side, maxval=max_side)


def _random_squares(batch, seed, min_side, max_side, side=None):
    """Per image, a square's side (min_side..max_side, as a fraction of the image's; or
    `side` where given) and its top-left corner [y, x], placed uniformly inside the image:
    [B, 1] and [B, 2]."""
    s = _split(seed, 2)
    if side is None:
        side = _random_sides(batch, s[0], min_side, max_side)
    start = tf.random.stateless_uniform([batch, 2], seed=s[1]) * (1.0 - side)
    return side, start


def zoom(images, seed, min_side=0.8):
    """A random square crop of `min_side`..1 of the side, resized back (bilinear)."""
    size = images.shape[1]
    batch = tf.shape(images)[0]
    side, start = _random_squares(batch, seed, min_side, 1.0)
    boxes = tf.concat([start, start + side], axis=1)
    out = tf.image.crop_and_resize(tf.cast(images, tf.float32), boxes, tf.range(batch), [size, size])
    return tf.cast(out, images.dtype)


def strong_augment(images, seed):
    """The "strong" policy: "diff", then a zoom and per-stain gains (SimCLR's lesson: the
    views must differ in what should not matter, or a contrastive D matches cells by
    size and brightness)."""
    s = _split(seed, 3)
    return channel_gain(zoom(diff_augment(images, s[0]), s[1]), s[2])


WINDOW_SIDES = (0.5, 0.75)  # a window's side, as a fraction of the crop's


def window(images, seed, min_side=WINDOW_SIDES[0], max_side=WINDOW_SIDES[1], side=None):
    """Keep one random square window of each image (`min_side`..`max_side` of the side, or
    `side` [B, 1] where given), background elsewhere: two windows of one cell share its
    texture, not its layout."""
    size = images.shape[1]
    side, start = _random_squares(tf.shape(images)[0], seed, min_side, max_side, side)
    grid = (tf.cast(tf.range(size), tf.float32) + 0.5) / size
    inside_y = (grid[None, :] >= start[:, :1]) & (grid[None, :] < start[:, :1] + side)
    inside_x = (grid[None, :] >= start[:, 1:]) & (grid[None, :] < start[:, 1:] + side)
    mask = tf.cast(inside_y[:, :, None] & inside_x[:, None, :], images.dtype)[..., None]
    return images * mask + tf.cast(BACKGROUND, images.dtype) * (1 - mask)


def window_augment(images, seed):
    """The "window" policy: a dihedral transform, then one window of the cell kept
    (`window`). Views that agree on texture statistics only, not zoom- or gain-invariant."""
    s = _split(seed, 2)
    return window(dihedral(images, s[0]), s[1])


def paired_windows(images, seed):
    """The "window-paired" policy's two contrastive views: each cell's two windows have one
    side (each view its own dihedral transform and place). With independent sides
    (`window`) the views differ in how much of them the cell fills, so matching them
    teaches D's first stage to discard cell size, which the demo plates' MOAs need."""
    s = _split(seed, 5)
    side = _random_sides(tf.shape(images)[0], s[0], *WINDOW_SIDES)
    return (window(dihedral(images, s[1]), s[2], side=side),
            window(dihedral(images, s[3]), s[4], side=side))


def silhouette(images, seed):
    """Each cell's foreground painted in one flat random colour per stain: its outline and
    nothing else (not differentiable; used on real cells only)."""
    dtype = images.dtype
    fg = tf.cast(tf.reduce_max(images, axis=-1, keepdims=True) > BACKGROUND + 0.02, dtype)
    colour = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, images.shape[-1]],
                                         seed=seed, minval=0.3, maxval=0.8, dtype=dtype)
    return fg * colour * 2.0 + tf.cast(BACKGROUND, dtype)


def _pair(policy):
    """A view-pair policy of two independent draws of a one-view policy."""
    def views(images, seed):
        s = _split(seed, 2)
        return policy(images, s[0]), policy(images, s[1])
    return views


def cell_and_silhouette(images, seed):
    """A cell and its own silhouette, each under its own flips, rotations and shifts:
    matching them asks for the outline's shape."""
    s = _split(seed, 3)
    return diff_augment(images, s[0]), silhouette(diff_augment(images, s[1]), s[2])


# One view per call; the fake batch and the adversarial view of the real batch use these.
POLICIES = {"diff": diff_augment, "strong": strong_augment, "window": window_augment,
            "window-paired": window_augment, "window-silhouette": window_augment}
# Policies whose contrastive views differ per feature block of head_features "each": the
# view-pair policy of each block, in networks.head_blocks' order (multiscale, texture).
BLOCK_VIEWS = {"window-silhouette": (cell_and_silhouette, _pair(window_augment))}
# Policies whose contrastive views are drawn together, as a pair of the same cells.
# "cell-silhouette" is for BiGAN's encoder head only (`ssl_views`): D's adversarial view
# has no single-view form of it.
PAIRED = {"window-paired": paired_windows, "cell-silhouette": cell_and_silhouette}
# The views BiGAN's encoder head may use (`ssl_views`): one head on one feature block,
# so the per-block silhouette policy has no meaning there; a cell against its own
# silhouette does (E's features must then carry the outline's shape).
ENCODER_VIEWS = ("window", "window-paired", "strong", "diff", "cell-silhouette")


def contrastive_views(policy, images, next_seed):
    """A batch's two contrastive views under `policy`: one draw of a paired policy (a cell's
    two views made together), else two independent draws of its one-view policy.
    `next_seed` gives each draw's seed, so seeded runs repeat."""
    if policy in PAIRED:
        return PAIRED[policy](images, next_seed())
    return POLICIES[policy](images, next_seed()), POLICIES[policy](images, next_seed())
