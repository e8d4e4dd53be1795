"""BaseGAN: the keras.Model every architecture subclasses.

`fit()` drives the custom `train_step`, so steps_per_execution, callbacks and
tf.distribute come from Keras. A subclass implements `_train_step(real) -> dict` of
per-replica float32 scalars and declares `metric_names`.

Distribution: losses are means over the replica's batch; `_apply` divides them by the
number of replicas before differentiating because Keras' optimizer sums gradients across
replicas, which then yields the gradient of the global-batch mean.
Mixed float16: both optimizers are wrapped in LossScaleOptimizer (Keras only does that
for the single `optimizer` it compiles, and a GAN has two).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _num_replicas() -> int:
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context
        return tf.distribute.get_strategy().num_replicas_in_sync
    return ctx.num_replicas_in_sync


class BaseGAN(keras.Model):
    metric_names: tuple[str, ...] = ("d_loss", "g_loss")

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        encoder: keras.Model,
        *,
        latent_dim: int,
        image_size: int,
        arch: str,
        encoder_dim: int,
        seed: int = 0,
        update: str = "simultaneous",
        name: str | None = None,
        trunk: keras.Model | None = None,
        augment: str = "none",
        ssl: str = "none",
        ssl_weight: float = 1.0,
        ssl_temperature: float = 0.2,
    ):
        super().__init__(name=name or arch)
        self.generator = generator
        self.discriminator = discriminator
        self.encoder = encoder
        self.latent_dim = int(latent_dim)
        self.image_size = int(image_size)
        self.encoder_dim = int(encoder_dim)
        self.arch = arch
        # "simultaneous": one fake batch serves the D and G updates (both gradients taken
        # at the same weights, saving a G and a D forward pass per step);
        # "alternating": G's update sees the freshly updated D (the textbook order).
        self.update = update
        self.seed_generator = keras.random.SeedGenerator(seed, name="gan_seed_generator")
        # Representation options (see models/augment.py, models/ssl_head.py): `trunk` maps
        # images to [logits, pooled features] in one pass of D; `ssl_head` projects those
        # features for the contrastive loss and trains with the discriminator.
        self.trunk = trunk
        self.augment = augment
        self.ssl = ssl
        self.ssl_weight = float(ssl_weight)
        self.ssl_temperature = float(ssl_temperature)
        self.ssl_head = None
        if ssl == "contrastive":
            from .ssl_head import build_projection_head
            if trunk is None:
                raise ValueError(f"{arch}: the contrastive head needs a discriminator trunk")
            self.ssl_head = build_projection_head(int(trunk.outputs[1].shape[-1]))
        names = self.metric_names + (("ssl_loss",) if self.ssl_head is not None else ())
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.g_optimizer = None
        self.d_optimizer = None
        self.built = True  # the sub-models are functional and already built

    # -- Keras plumbing --------------------------------------------------------------
    @property
    def metrics(self):
        # listed here so fit() resets them at each epoch
        return list(self.trackers.values())

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        """Compile with one optimizer per network. Extra kwargs (steps_per_execution,
        jit_compile, run_eagerly) go to keras.Model.compile; XLA is off by default
        because it is slower on CPU. Call inside `strategy.scope()` when distributing."""
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=None, **kwargs)
        if keras.config.dtype_policy().name == "mixed_float16":
            g_optimizer = _loss_scaled(g_optimizer)
            d_optimizer = _loss_scaled(d_optimizer)
        # Create the optimizer slots now, eagerly (inside the caller's strategy scope):
        # created lazily inside fit()'s tf.function they break under MirroredStrategy.
        g_optimizer.build(self.g_variables)
        d_optimizer.build(self.d_variables)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    def call(self, z, training=False):
        return self.generator(z, training=training)

    # -- what each optimizer trains, what a checkpoint holds ---------------------------
    @property
    def g_variables(self):
        return list(self.generator.trainable_variables)

    @property
    def d_variables(self):
        extra = self.ssl_head.trainable_variables if self.ssl_head is not None else []
        return list(self.discriminator.trainable_variables) + list(extra)

    def extra_networks(self) -> dict:
        """Trained networks outside generator and discriminator (checkpointed too)."""
        return {"ssl_head": self.ssl_head} if self.ssl_head is not None else {}

    def warm_up(self, images, z):
        """One forward pass of every network, so all variables exist before a restore."""
        self.discriminator(images, training=False)

    # -- sampling --------------------------------------------------------------------
    def sample_z(self, n: int, seed: int | None = None):
        """Standard-normal latents; from the model's seed generator unless `seed` given."""
        return keras.random.normal(
            (n, self.latent_dim), seed=self.seed_generator if seed is None else int(seed)
        )

    def generate(self, z):
        return self.generator(z, training=False)

    def _noise(self, batch, shape_tail=None, kind="normal"):
        """Per-replica random draws from the seed generator. The replica id is folded
        into the seed so replicas of a MirroredStrategy do not draw identical noise."""
        seed = self._stateless_seed()
        shape = tf.concat([[batch], shape_tail or [self.latent_dim]], axis=0)
        if kind == "uniform":
            return tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)
        return tf.random.stateless_normal(shape, seed=seed, dtype=tf.float32)

    # -- training --------------------------------------------------------------------
    def train_step(self, data):
        if self.g_optimizer is None:
            raise RuntimeError("call gan.compile(g_optimizer, d_optimizer) before training")
        images = _images_of(data)
        values = self._train_step(tf.cast(images, tf.float32))
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    def _train_step(self, real):  # pragma: no cover - abstract
        raise NotImplementedError

    def _adversarial_update(self, real, z, losses_of, g_loss_of):
        """One discriminator and one generator update, in the order `self.update` names.

        `losses_of(real, fake) -> (d_loss, g_loss, extras)` scores both batches in one
        discriminator pass; `g_loss_of(fake)` scores fakes alone (the alternating order's
        generator step, taken after the discriminator moved). Returns (d_loss, g_loss,
        extras) with extras from the discriminator step.
        """
        if self.update == "simultaneous":
            with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
                fake = self.generator(z, training=True)
                d_loss, g_loss, extras = losses_of(real, fake)
                d_scaled = self._scaled(self.d_optimizer, d_loss)
                g_scaled = self._scaled(self.g_optimizer, g_loss)
            self._apply(self.d_optimizer, d_tape, d_scaled, self.d_variables)
            self._apply(self.g_optimizer, g_tape, g_scaled, self.g_variables)
            return d_loss, g_loss, extras
        with tf.GradientTape() as d_tape:
            fake = self.generator(z, training=True)
            d_loss, _, extras = losses_of(real, tf.stop_gradient(fake))
            d_scaled = self._scaled(self.d_optimizer, d_loss)
        self._apply(self.d_optimizer, d_tape, d_scaled, self.d_variables)
        with tf.GradientTape() as g_tape:
            fake = self.generator(z, training=True)
            g_loss = g_loss_of(fake)
            g_scaled = self._scaled(self.g_optimizer, g_loss)
        self._apply(self.g_optimizer, g_tape, g_scaled, self.g_variables)
        return d_loss, g_loss, extras

    @staticmethod
    def _scaled(optimizer, loss):
        """Loss to differentiate (call inside the tape): replica- and loss-scaled."""
        loss = loss / tf.cast(_num_replicas(), loss.dtype)
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            loss = optimizer.scale_loss(loss)
        return loss

    @staticmethod
    def _apply(optimizer, tape, scaled_loss, variables):
        """`variables`: a list, or a model whose trainable variables to update."""
        if isinstance(variables, keras.Model):
            variables = variables.trainable_variables
        grads = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(grads, variables))

    # -- augmentation and self-supervision of the discriminator --------------------------
    def _augmented(self, images):
        if self.augment == "none":
            return images
        from .augment import POLICIES
        return POLICIES[self.augment](images, self._stateless_seed())

    def _stateless_seed(self):
        """The next seed of the model's generator, with the replica id folded in."""
        seed = self.seed_generator.next()
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            seed = seed + tf.stack([tf.cast(ctx.replica_id_in_sync_group, seed.dtype) * 7919, 0])
        return seed

    def _discriminate(self, real, fake):
        """D's outputs on (augmented) real and fake batches in one pass, plus the
        self-supervised loss: (real_out, fake_out, ssl_loss or None). With a contrastive
        head a second augmented view of the real batch joins the pass."""
        real_a, fake_a = self._augmented(real), self._augmented(fake)
        if self.ssl_head is None:
            out = self.discriminator(tf.concat([real_a, fake_a], axis=0), training=True)
            real_out, fake_out = tf.split(out, 2, axis=0)
            return real_out, fake_out, None
        from .. import losses
        real_b = self._augmented(real)
        logits, pooled = self.trunk(tf.concat([real_a, fake_a, real_b], axis=0), training=True)
        real_out, fake_out, _ = tf.split(logits, 3, axis=0)
        feats_a, _, feats_b = tf.split(pooled, 3, axis=0)
        proj = self.ssl_head(tf.concat([feats_a, feats_b], axis=0), training=True)
        proj_a, proj_b = tf.split(proj, 2, axis=0)
        return real_out, fake_out, losses.contrastive_loss(proj_a, proj_b, self.ssl_temperature)

    def extra_state(self) -> dict:
        """State outside the networks' weights that a checkpoint must also hold
        (beyond generator, discriminator and both optimizers)."""
        return {"seed_generator_state": self.seed_generator.state}


def _loss_scaled(opt):
    if isinstance(opt, keras.optimizers.LossScaleOptimizer):
        return opt
    return keras.optimizers.LossScaleOptimizer(opt, name=f"{opt.name}_loss_scale")


def _images_of(data):
    """fit() hands over a batch, a 1-tuple (x,), or a pipeline dict with "image"."""
    if isinstance(data, dict):
        return data["image"]
    if isinstance(data, (tuple, list)):
        return data[0]
    return data
