"""Convolutional building blocks shared by the four GANs.

Every network works at `image_size` = 16 * s (s = 2..8, i.e. 32..128 px): four stride-2
stages between an s x s feature map and the image. `widths` lists the channel counts from
the deepest (s x s) stage to the shallowest, e.g. [256, 128, 64, 32]. Images are
channels_last (oneDNN's fast layout on CPU). Output layers are float32 so losses and
exported signatures never see bfloat16/float16.
"""

from __future__ import annotations

import keras
from keras import layers

KERNEL = 4  # discriminator: 4x4 kernels with stride 2 tile evenly (no uneven overlap)
UP_KERNEL = 3  # generator/decoder: 3x3 convolution after each x2 resize


def start_size(image_size: int) -> int:
    return image_size // 16


@keras.saving.register_keras_serializable(package="cytogan")
class FusedBatchNorm(layers.Layer):
    """Batch norm over the channels of NHWC feature maps through TF's fused kernel.

    Hand-written because Keras 3's BatchNormalization builds moments and normalisation
    from separate ops and upcasts bfloat16 inputs to float32 for them; the fused kernel
    (oneDNN on CPU, cuDNN on GPU) does it in one pass in the compute dtype, with float32
    statistics. Same weights as Keras' layer (gamma, beta, moving_mean, moving_variance).
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = (int(input_shape[-1]),)
        def weight(name, init, trainable):
            return self.add_weight(shape=channels, initializer=init, name=name,
                                   trainable=trainable, autocast=False)
        self.gamma = weight("gamma", "ones", True)
        self.beta = weight("beta", "zeros", True)
        self.moving_mean = weight("moving_mean", "zeros", False)
        self.moving_variance = weight("moving_variance", "ones", False)

    def call(self, inputs, training=False):
        import tensorflow as tf

        if not training:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma.value, self.beta.value, mean=self.moving_mean.value,
                variance=self.moving_variance.value, epsilon=self.epsilon, is_training=False)
            return y
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma.value, self.beta.value, epsilon=self.epsilon, is_training=True)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


def _norm(kind: str, name: str):
    if kind == "batch":
        return FusedBatchNorm(momentum=0.9, epsilon=1e-5, name=name)
    if kind == "layer":
        return layers.LayerNormalization(axis=[1, 2, 3], epsilon=1e-5, name=name)
    return None


def _act(kind: str, name: str):
    if kind == "relu":
        return layers.ReLU(name=name)
    if kind == "elu":
        return layers.ELU(name=name)
    return layers.LeakyReLU(negative_slope=0.2, name=name)


def _upsample_conv(x, filters, *, use_bias, name):
    """x2 nearest-neighbour resize, then a 3x3 convolution (Odena et al. 2016).

    Not a stride-2 transposed conv: each of its four output phases has its own kernel
    taps, so at initialisation neighbouring pixels are independent noise. On masked cells
    on black the discriminator separated that texture within ~100 steps and the
    generator's shared "remove the noise" gradient erased its dependence on z (every
    sample the same blob; diversity 0.03 vs 0.12 for real cells). A resize makes
    neighbouring pixels start out equal, so samples are smooth and differ from the start.
    """
    x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_resize")(x)
    return layers.Conv2D(filters, UP_KERNEL, padding="same", use_bias=use_bias, name=name)(x)


def upsampling_decoder(z, image_size, widths, *, norm, act, prefix, out_activation):
    """Dense -> s x s x widths[0] -> four resize-conv stages -> H x W x 3 (float32)."""
    s = start_size(image_size)
    use_bias = norm == "none"
    x = layers.Dense(s * s * widths[0], use_bias=use_bias, name=f"{prefix}_project")(z)
    x = layers.Reshape((s, s, widths[0]), name=f"{prefix}_reshape")(x)
    for i, w in enumerate(list(widths[1:]) + [None]):
        n = _norm(norm, f"{prefix}_norm{i}")
        if n is not None:
            x = n(x)
        x = _act(act, f"{prefix}_act{i}")(x)
        if w is None:
            break
        x = _upsample_conv(x, w, use_bias=use_bias, name=f"{prefix}_up{i}")
    x = _upsample_conv(x, 3, use_bias=True, name=f"{prefix}_to_rgb")
    return layers.Activation(out_activation, dtype="float32", name=f"{prefix}_out")(x)


def downsampling_stages(images, widths, *, norm, act, prefix):
    """Four stride-2 conv stages (shallow -> deep widths); returns every stage's
    activations, shallow first. No norm on the first stage (the usual DCGAN choice:
    normalising raw pixels hurts)."""
    x, stages = images, []
    for i, w in enumerate(reversed(widths)):
        n = _norm(norm, f"{prefix}_norm{i}") if i > 0 else None
        x = layers.Conv2D(
            w, KERNEL, strides=2, padding="same", use_bias=n is None, name=f"{prefix}_conv{i}"
        )(x)
        if n is not None:
            x = n(x)
        x = _act(act, f"{prefix}_act{i}")(x)
        stages.append(x)
    return stages


def build_generator(latent_dim, image_size, widths, *, norm="batch", act="relu", name="generator"):
    """z [B, latent] -> images [B, H, W, 3] in [-1, 1] (tanh), float32."""
    z = keras.Input((latent_dim,), name="z")
    out = upsampling_decoder(
        z, image_size, widths, norm=norm, act=act, prefix="g", out_activation="tanh"
    )
    return keras.Model(z, out, name=name)


def build_discriminator_with_encoder(image_size, widths, encoder_dim, *, norm="batch",
                                     readout="hidden", head_features="multiscale", views="single"):
    """Discriminator whose output is Dense(1) on a linear `encoder_dim` hidden layer.

    Returns (D, encoder, trunk). The encoder shares D's layers and reads it out as
    `readout` names (see `READOUTS`); `trunk` maps images to [logits, pooled features]
    in one pass, for heads that train on D's features: `head_features` picks them
    ("multiscale", "texture" or "both"), so self-supervision can train the readout used.
    """
    images = keras.Input((image_size, image_size, 3), name="images")
    stages = downsampling_stages(images, widths, norm=norm, act="lrelu", prefix="d")
    feats = layers.Flatten(name="d_flatten")(stages[-1])
    hidden = layers.Dense(encoder_dim, dtype="float32", name="encoder_hidden")(feats)
    logits = layers.Dense(1, dtype="float32", name="d_logits")(hidden)
    pooled = multiscale_pool(stages, prefix="d")
    disc = keras.Model(images, logits, name="discriminator")
    trunk = keras.Model(images, [logits, _head_features(stages, pooled, head_features)],
                        name="discriminator_trunk")
    encoder = _readout_model(images, hidden, stages, readout, prefix="d", pooled=pooled, views=views)
    return disc, encoder, trunk


READOUTS = ("hidden", "multiscale", "texture")
HEAD_FEATURES = ("multiscale", "texture", "both", "each")


def _head_features(stages, pooled, which, *, prefix="d_head"):
    """The pooled features a contrastive head reads (`HEAD_FEATURES`); `pooled` is the
    stages' multiscale readout where the caller already has it (None: pooled here)."""
    from .second_order import texture_pool

    if which not in HEAD_FEATURES:
        raise ValueError(f"unknown head features {which!r}; valid: {', '.join(HEAD_FEATURES)}")
    if pooled is None and which != "texture":
        pooled = multiscale_pool(stages, prefix=prefix)
    if which == "multiscale":
        return pooled
    texture = texture_pool(stages, prefix=prefix)
    if which == "texture":
        return texture
    # "both"; "each": one head per block (ssl_head.head_blocks)
    return layers.Concatenate(dtype="float32", name=f"{prefix}_{which}")([pooled, texture])


def _readout_model(images, hidden, stages, readout, *, prefix, pooled=None, views="single"):
    """The encoder: `hidden` (the paper's dense code), `multiscale` (first-order pooling
    of every stage) or `texture` (second-order pooling of the first, models/second_order.py),
    averaged over the crop's 8 flips and rotations where `views` is "dihedral" (models/views.py)."""
    from .views import with_views

    name = "encoder" if views == "single" else "encoder_one_view"
    if readout == "hidden":
        out = hidden
    elif readout == "multiscale":
        out = pooled if pooled is not None else multiscale_pool(stages, prefix=prefix)
    elif readout == "texture":
        from .second_order import texture_pool

        out = texture_pool(stages, prefix=prefix)
    else:
        raise ValueError(f"unknown encoder readout {readout!r}; valid: {', '.join(READOUTS)}")
    return with_views(keras.Model(images, out, name=name), views)


def multiscale_pool(stages, *, prefix):
    """Global average and global max of every stage's channels, concatenated (float32).

    Why: the paper's readout (a dense layer on the flattened deepest map) is tied to
    where things sit in the crop and sees only the coarsest scale; pooling each stage
    gives translation-invariant statistics from fine texture (stage 1, 4x4 receptive
    field) to whole-cell shape (stage 4), the way the DCGAN paper read out its
    discriminator. Width: 2 * sum(widths).
    """
    parts = []
    for i, x in enumerate(stages):
        parts.append(layers.GlobalAveragePooling2D(dtype="float32", name=f"{prefix}_avgpool{i}")(x))
        parts.append(layers.GlobalMaxPooling2D(dtype="float32", name=f"{prefix}_maxpool{i}")(x))
    return layers.Concatenate(dtype="float32", name=f"{prefix}_multiscale")(parts)


def multiscale_dim(widths) -> int:
    return 2 * sum(int(w) for w in widths)


def head_blocks(widths, head_features):
    """The widths of the blocks the heads' features join, in column order, where each
    block gets a contrastive head of its own (head_features "each"); None otherwise."""
    if head_features != "each":
        return None
    from .second_order import texture_dim

    return (multiscale_dim(widths), texture_dim(widths))


def build_autoencoder(image_size, widths, encoder_dim, *, readout="hidden", views="single"):
    """BEGAN discriminator: conv encoder -> linear bottleneck -> decoder. Returns
    (autoencoder, encoder); the "hidden" readout is the float32 bottleneck."""
    images = keras.Input((image_size, image_size, 3), name="images")
    stages = downsampling_stages(images, widths, norm="none", act="elu", prefix="d_enc")
    feats = layers.Flatten(name="d_enc_flatten")(stages[-1])
    code = layers.Dense(encoder_dim, dtype="float32", name="encoder_hidden")(feats)
    recon = upsampling_decoder(
        code, image_size, widths, norm="none", act="elu", prefix="d_dec", out_activation="linear"
    )
    encoder = _readout_model(images, code, stages, readout, prefix="d_enc", views=views)
    return keras.Model(images, recon, name="discriminator"), encoder
