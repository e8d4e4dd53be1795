"""BiGAN / ALI (Donahue et al. 2017; Dumoulin et al. 2017): an encoder learned inside
the adversarial game.

Why: a GAN's discriminator is trained to tell real from generated cells, not to describe
them, and its features profile no better than random ones (CytoGAN's own finding, and
this project's measurement). BiGAN trains an encoder E: x -> z jointly with G: z -> x
against a discriminator on (image, latent) pairs: real pairs (x, E(x)) against generated
ones (G(z), z). At the optimum E inverts G, so E(x) places a real cell in the latent space
the generator draws from: it is the exported encoder, and G(E(x)) reconstructs a cell.

Losses are the non-saturating DCGAN ones with the pair labels; G and E share the
generator's optimizer (they are one "generator" of pairs).

`recon_weight` > 0 adds ALICE's explicit cycle term (Li et al. 2017), weight * mean
|x - G(E(x))|, to G and E's loss. Why: the adversarial pair game gives E a weak signal
at a CPU budget; the cycle term gives E a dense per-pixel one, to keep each cell's size,
shape, intensity and layout (docs/learned-encoders.md: it adds little over the pair game).

`ssl = "contrastive"` gives E its own contrastive head (SimCLR between two views of each
real cell, `ssl_views`), in G and E's loss. Why: the pair game teaches E what G can draw
(size, brightness, layout), and at a CPU budget G draws little texture; two windows of
one cell share its texture, so matching them teaches E's stages the texture the
adversarial signal leaves out (docs/learned-encoders.md).

`weak_labels` ("treatment" or "compound", data/labels.py) gives E a linear class head on
z, trained in G and E's loss on each real cell under a flip, rotation and shift. Why: the
pair game and the windows teach E what a cell looks like, not which differences between
cells a compound causes; a screen's metadata says which treatment every cell received,
and a z that tells treatments apart carries those differences (DeepProfiler's signal,
here on the exported z itself rather than on D). MOA labels are never used.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from .. import losses
from .base import BaseGAN
from .networks import _readout_model, build_generator, downsampling_stages

JOINT_WIDTH = 256


LATENT_FROM = ("flatten", "pooled", "pooled-texture")


def build_latent_encoder(image_size, widths, latent_dim, *, readout="hidden", views="single",
                         head_features=None, latent_from="flatten"):
    """E: images [B, H, W, 3] -> z [B, latent] (float32). Returns (E, embedding model,
    head trunk): the embedding model reads E out as `readout` names ("hidden": z itself),
    averaged over `views`; E itself always sees the crop as it is, so G(E(x))
    reconstructs x. The head trunk (None without `head_features`) maps images to the E
    features a contrastive head reads (ENCODER_HEAD_FEATURES), over the same layers.

    `latent_from` "flatten": z is a dense layer on the flattened deepest map (BiGAN's
    E), so it knows where things sit in the crop; "pooled": on every stage's global
    average and max (layer-normalised, as their scales differ by stage). Why: a dense
    layer over the 4x4 positions must learn position invariance weight by weight, which
    two windows of a cell ask of it and 800 steps do not teach; pooled stages have it
    built in, and carry the first stages' fine texture as well. "pooled-texture": the
    same with the texture readout's second-order statistics of the first stage joined."""
    if latent_from not in LATENT_FROM:
        raise ValueError(f"unknown latent_from {latent_from!r}; valid: {', '.join(LATENT_FROM)}")
    images = keras.Input((image_size, image_size, 3), name="images")
    stages = downsampling_stages(images, widths, norm="layer", act="lrelu", prefix="e")
    if latent_from == "flatten":
        feats = layers.Flatten(name="e_flatten")(stages[-1])
    else:
        from .networks import _head_features

        which = "multiscale" if latent_from == "pooled" else "both"
        feats = layers.LayerNormalization(dtype="float32", name="e_latent_norm")(
            _head_features(stages, None, which, prefix="e_latent"))
    z = layers.Dense(latent_dim, dtype="float32", name="e_latent")(feats)
    latent_encoder = keras.Model(images, z, name="latent_encoder")
    trunk = None
    if head_features is not None:
        trunk = keras.Model(images, _encoder_head_features(z, stages, head_features),
                            name="encoder_head_trunk")
    return latent_encoder, _readout_model(images, z, stages, readout, prefix="e", views=views), trunk


ENCODER_HEAD_FEATURES = ("latent", "texture", "multiscale", "both", "all")


def _encoder_head_features(z, stages, which):
    """What E's contrastive head reads: z ("latent"), E's readouts as D's heads read D's
    (networks._head_features: texture, multiscale, both), or z and both ("all")."""
    from .networks import _head_features

    if which not in ENCODER_HEAD_FEATURES:
        raise ValueError(f"unknown encoder head features {which!r}; "
                         f"valid: {', '.join(ENCODER_HEAD_FEATURES)}")
    if which == "latent":
        return z
    pooled = _head_features(stages, None, "both" if which == "all" else which, prefix="e_head")
    if which != "all":
        return pooled
    return layers.Concatenate(dtype="float32", name="e_head_all")([z, pooled])


def build_joint_discriminator(image_size, widths, latent_dim):
    """D: [images, z] -> logits, and D's image stages (images -> every stage's activations,
    the same layers). The image branch is the DCGAN discriminator's conv stack, the latent
    branch two dense layers; a joint dense layer scores the pair."""
    images = keras.Input((image_size, image_size, 3), name="images")
    z = keras.Input((latent_dim,), name="z")
    stages = downsampling_stages(images, widths, norm="none", act="lrelu", prefix="dx")
    image_stages = keras.Model(images, stages, name="discriminator_image_stages")
    x = stages[-1]
    x = layers.Flatten(name="dx_flatten")(x)
    x = layers.Dense(JOINT_WIDTH, name="dx_dense")(x)
    x = layers.LeakyReLU(negative_slope=0.2, name="dx_act")(x)
    h = z
    for i in range(2):
        h = layers.Dense(JOINT_WIDTH, name=f"dz_dense{i}")(h)
        h = layers.LeakyReLU(negative_slope=0.2, name=f"dz_act{i}")(h)
    j = layers.Concatenate(name="dj_concat")([x, layers.Activation("linear", dtype=x.dtype)(h)])
    j = layers.Dense(JOINT_WIDTH, name="dj_dense")(j)
    j = layers.LeakyReLU(negative_slope=0.2, name="dj_act")(j)
    logits = layers.Dense(1, dtype="float32", name="d_logits")(j)
    return keras.Model([images, z], logits, name="discriminator"), image_stages


class BiGAN(BaseGAN):
    def __init__(self, generator, discriminator, encoder, *, latent_encoder, recon_weight=0.0,
                 recon_space="pixels", image_stages=None, encoder_trunk=None,
                 encoder_ssl_weight=1.0, encoder_ssl_views="window", encoder_class_head=None,
                 encoder_weak_weight=1.0, morphology_weight=0.0, morphology_statistics="shape",
                 encoder_weak_objective="class", encoder_weak_group=losses.RUN_GROUP,
                 encoder_weak_cancel=0, encoder_weak_temperature=losses.SET_TEMPERATURE, **kwargs):
        self.recon_weight = float(recon_weight)
        if self.recon_weight > 0:
            self.metric_names = self.metric_names + ("recon_loss",)
        if encoder_trunk is not None:
            self.metric_names = self.metric_names + ("ssl_loss",)
        if encoder_class_head is not None:
            self.metric_names = self.metric_names + ("class_loss",)
        if float(morphology_weight) > 0:
            self.metric_names = self.metric_names + ("morphology_loss",)
        super().__init__(generator, discriminator, encoder, **kwargs)
        # E's morphology head, not BaseGAN's on D's features (set after BaseGAN's own).
        self.morphology_weight = float(morphology_weight)
        # E's weak-label head (on z; G and E's optimizer trains it, not D's as in BaseGAN).
        self.encoder_class_head = encoder_class_head
        self.encoder_weak_weight = float(encoder_weak_weight)
        self.encoder_weak_objective = encoder_weak_objective
        self.encoder_weak_group = int(encoder_weak_group)
        self.encoder_weak_cancel = int(encoder_weak_cancel)
        self.encoder_weak_temperature = float(encoder_weak_temperature)
        self.latent_encoder = latent_encoder
        self.recon_space = recon_space
        self.image_stages = image_stages  # D's image branch, for recon_space "features"
        # E's own contrastive head (ssl = "contrastive"): SimCLR between two views of each
        # real cell, on the E features `head_features` names, in G and E's loss.
        self.encoder_trunk = encoder_trunk
        self.encoder_ssl_weight = float(encoder_ssl_weight)
        self.encoder_ssl_views = encoder_ssl_views
        # E's morphology head (morphology_weight > 0): z predicts each cell's statistics.
        self.encoder_morphology_head = None
        self.morphology_statistics = morphology_statistics
        if self.morphology_weight > 0:
            from .class_head import build_class_head
            from .morphology import n_statistics

            self.encoder_morphology_head = build_class_head(
                int(latent_encoder.outputs[0].shape[-1]), n_statistics(morphology_statistics),
                name="morphology_head")
        self.encoder_head = None
        if encoder_trunk is not None:
            from .ssl_head import build_projection_head
            self.encoder_head = build_projection_head(int(encoder_trunk.outputs[0].shape[-1]))

    @classmethod
    def from_config_values(cls, *, latent_dim, image_size, widths, encoder_dim, seed, update, arch,
                           readout="hidden", augment="none", views="single", recon_weight=0.0,
                           recon_space="pixels", ssl="none", ssl_weight=1.0, ssl_temperature=0.2,
                           ssl_objective="nt-xent", head_features="latent", ssl_views="window",
                           latent_from="flatten", weak_labels="none", weak_weight=1.0, n_classes=0,
                           weak_objective="class", weak_group=losses.RUN_GROUP, weak_cancel=0,
                           weak_temperature=losses.SET_TEMPERATURE,
                           morphology_weight=0.0, morphology_statistics="shape"):
        gen = build_generator(latent_dim, image_size, widths, norm="batch", act="relu")
        latent_encoder, embed, trunk = build_latent_encoder(
            image_size, widths, latent_dim, readout=readout, views=views,
            head_features=head_features if ssl == "contrastive" else None,
            latent_from=latent_from)
        disc, image_stages = build_joint_discriminator(image_size, widths, latent_dim)
        class_head = None
        if weak_labels != "none":
            from .class_head import build_weak_head
            class_head = build_weak_head(latent_dim, weak_objective, n_classes, owner=arch)
        return cls(gen, disc, embed, latent_encoder=latent_encoder, latent_dim=latent_dim,
                   image_size=image_size, arch=arch, encoder_dim=int(embed.outputs[0].shape[-1]),
                   seed=seed, update=update, augment=augment, recon_weight=recon_weight,
                   recon_space=recon_space, image_stages=image_stages, encoder_trunk=trunk,
                   encoder_ssl_weight=ssl_weight, encoder_ssl_views=ssl_views,
                   ssl_temperature=ssl_temperature, ssl_objective=ssl_objective,
                   encoder_class_head=class_head, encoder_weak_weight=weak_weight,
                   encoder_weak_objective=weak_objective, encoder_weak_group=weak_group,
                   encoder_weak_cancel=weak_cancel, encoder_weak_temperature=weak_temperature,
                   morphology_weight=morphology_weight,
                   morphology_statistics=morphology_statistics)

    @property
    def g_variables(self):
        heads = (self.encoder_head, self.encoder_class_head, self.encoder_morphology_head)
        head = [v for h in heads if h is not None for v in h.trainable_variables]
        return (list(self.generator.trainable_variables)
                + list(self.latent_encoder.trainable_variables) + head)

    def extra_networks(self) -> dict:
        extra = {**super().extra_networks(), "latent_encoder": self.latent_encoder}
        if self.encoder_head is not None:
            extra["encoder_head"] = self.encoder_head
        if self.encoder_class_head is not None:
            extra["encoder_class_head"] = self.encoder_class_head
        if self.encoder_morphology_head is not None:
            extra["encoder_morphology_head"] = self.encoder_morphology_head
        return extra

    def averaged_networks(self) -> list:
        # E (its z: encode(), reconstruction) owns every readout's layers: listed before
        # the readout, for BaseGAN.averaged_networks' reason.
        return [self.generator, self.latent_encoder, self.encoder]

    def warm_up(self, images, z):
        images, z = tf.convert_to_tensor(images), tf.convert_to_tensor(z, tf.float32)
        self.latent_encoder(images, training=False)
        self.discriminator([images, z], training=False)

    def encode(self, images):
        """Real cells (networks' [-1, 1] scale) -> z."""
        return self.latent_encoder(images, training=False)

    def _pair_logits(self, real, fake, z):
        """D's logits on (real, E(real)) and (fake, z) pairs, and E(real)."""
        z_real = self.latent_encoder(real, training=True)
        images = self._augmented(tf.concat([real, fake], axis=0))
        latents = tf.concat([tf.cast(z_real, tf.float32), tf.cast(z, tf.float32)], axis=0)
        real_logits, fake_logits = tf.split(self.discriminator([images, latents], training=True), 2, axis=0)
        return real_logits, fake_logits, z_real

    def _ge_loss(self, real, real_logits, fake_logits, z_real, labels=None):
        """G and E's loss: the pair labels swapped (generated pairs should look real, real
        pairs fake), plus the weighted cycle term, E's weighted contrastive loss and E's
        weighted class loss and morphology loss; and those terms by their metric names (only
        the ones on)."""
        loss = losses.dcgan_discriminator_loss(fake_logits, real_logits)
        parts = {}
        if self.encoder_class_head is not None:
            parts["class_loss"] = self._encoder_class_loss(real, labels)
            loss = loss + self.encoder_weak_weight * parts["class_loss"]
        if self.encoder_morphology_head is not None:
            parts["morphology_loss"] = self._encoder_morphology_loss(real)
            loss = loss + self.morphology_weight * parts["morphology_loss"]
        if self.encoder_head is not None:
            parts["ssl_loss"] = self._encoder_contrastive_loss(real)
            loss = loss + self.encoder_ssl_weight * parts["ssl_loss"]
        if self.recon_weight > 0:
            # G in inference mode: its batch norm then uses the moving statistics of G(z)
            # batches, as the exported generator does. Under a batch's own statistics G
            # would learn to reconstruct from differences between E(x) that the exported
            # G never sees.
            parts["recon_loss"] = self._cycle_loss(real, self.generator(z_real, training=False))
            loss = loss + self.recon_weight * parts["recon_loss"]
        return loss, parts

    def _encoder_contrastive_loss(self, real):
        """SimCLR (or VICReg, `ssl_objective`) between two views of each real cell, on
        E's head features."""
        from .augment import contrastive_views

        a, b = contrastive_views(self.encoder_ssl_views, real, self._stateless_seed)
        feats = self.encoder_trunk(tf.concat([a, b], axis=0), training=True)
        proj_a, proj_b = tf.split(self.encoder_head(feats, training=True), 2, axis=0)
        return self._mean_contrastive([(proj_a, proj_b)])

    def _encoder_class_loss(self, real, labels):
        """Cross-entropy of E's z, through the linear class head, against each real cell's
        weak label; each cell under a random flip, rotation and shift (augment.diff_augment),
        so E cannot learn the labels by a cell's pixels at one pose (~2k cells). With
        `weak_objective = "set"` / `"set_class"` the loss is scored over runs of one class."""
        from .class_head import GROUPED_OBJECTIVES

        out = self.encoder_class_head(self._z_of_moved(real), training=True)
        if self.encoder_weak_objective in GROUPED_OBJECTIVES:
            return losses.grouped_weak_loss(self.encoder_weak_objective, out, labels,
                                            self.encoder_weak_group, cancel=self.encoder_weak_cancel,
                                            temperature=self.encoder_weak_temperature)
        return losses.classification_loss(out, labels)

    def _z_of_moved(self, real):
        """E's float32 z of each real cell under a random flip, rotation and shift
        (augment.diff_augment): what E's class and morphology heads read."""
        from .augment import diff_augment

        z = self.latent_encoder(diff_augment(real, self._stateless_seed()), training=True)
        return tf.cast(z, tf.float32)

    def _encoder_morphology_loss(self, real):
        """Squared error of E's z, through the linear morphology head, against each real
        cell's standardized statistics (models/morphology.py), taken from the cell as it
        is while E sees it under a random flip, rotation and shift."""
        from .morphology import head_loss

        return head_loss(self.encoder_morphology_head, self._z_of_moved(real), real,
                         self.morphology_statistics)

    def _cycle_loss(self, real, reconstructed):
        """The cycle term in pixels, or on D's image stages (the mean of each stage's L1;
        D is not trained by it: its gradients go to G and E only)."""
        if self.recon_space == "pixels":
            return losses.cycle_reconstruction_loss(real, reconstructed)
        stages = self.image_stages(tf.concat([real, reconstructed], axis=0), training=True)
        terms = [losses.cycle_reconstruction_loss(*tf.split(s, 2, axis=0)) for s in stages]
        return tf.add_n(terms) / len(terms)

    @property
    def needs_labels(self) -> bool:  # E's head, not D's (BaseGAN's class_head)
        return self.encoder_class_head is not None

    def _train_step(self, real, labels=None):
        parts = {}

        def losses_of(real, fake):
            real_logits, fake_logits, z_real = self._pair_logits(real, fake, z)
            d_loss = losses.dcgan_discriminator_loss(real_logits, fake_logits)
            if self.update != "simultaneous":  # G and E step later, in g_loss_of
                return d_loss, None, None
            g_loss, step_parts = self._ge_loss(real, real_logits, fake_logits, z_real, labels)
            parts.update(step_parts)
            return d_loss, g_loss, None

        def g_loss_of(fake):  # the alternating order's G and E step, after D moved
            real_logits, fake_logits, z_real = self._pair_logits(real, fake, z)
            g_loss, step_parts = self._ge_loss(real, real_logits, fake_logits, z_real, labels)
            parts.update(step_parts)
            return g_loss

        z = self._noise(tf.shape(real)[0])
        d_loss, g_loss, _ = self._adversarial_update(real, z, losses_of, g_loss_of)
        return {"d_loss": d_loss, "g_loss": g_loss, **parts}
