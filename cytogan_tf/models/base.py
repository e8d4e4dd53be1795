"""BaseGAN: the keras.Model every architecture subclasses.

`fit()` drives the custom `train_step`, so steps_per_execution, callbacks and
tf.distribute come from Keras. A subclass implements `_train_step(real, labels) -> dict`
of per-replica float32 scalars and declares `metric_names`; `labels` is None unless the
model trains with weak treatment labels.

Distribution: losses are means over the replica's batch; `_apply` divides them by the
number of replicas before differentiating because Keras' optimizer sums gradients across
replicas, which then yields the gradient of the global-batch mean.
Mixed float16: both optimizers are wrapped in LossScaleOptimizer (Keras only does that
for the single `optimizer` it compiles, and a GAN has two).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ..losses import RUN_GROUP, SET_TEMPERATURE


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
        ssl_objective: str = "nt-xent",
        weak_labels: str = "none",
        weak_weight: float = 1.0,
        n_classes: int = 0,
        weak_objective: str = "class",
        weak_group: int = RUN_GROUP,
        weak_cancel: int = 0,
        weak_temperature: float = SET_TEMPERATURE,
        head_blocks=None,
        morphology_weight: float = 0.0,
        morphology_statistics: str = "shape",
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
        self.ssl_objective = ssl_objective  # losses.SSL_OBJECTIVES: the heads' loss
        self.ssl_head = None
        if ssl == "contrastive":
            from .ssl_head import build_projection_head
            if trunk is None:
                raise ValueError(f"{arch}: the contrastive head needs a discriminator trunk")
            # `head_blocks` (networks.head_blocks): a head and a loss per feature block.
            if head_blocks:
                from .ssl_head import build_block_projection_heads
                self.ssl_head = build_block_projection_heads(head_blocks)
            else:
                self.ssl_head = build_projection_head(int(trunk.outputs[1].shape[-1]))
        # Weak supervision (models/class_head.py): a linear treatment classifier on the
        # same pooled features, or (weak_objective "set") the projection the set-level
        # loss compares, trained with the discriminator on real cells.
        self.weak_labels = weak_labels
        self.weak_weight = float(weak_weight)
        self.n_classes = int(n_classes)
        self.weak_objective = weak_objective
        self.weak_group = int(weak_group)
        self.weak_cancel = int(weak_cancel)
        self.weak_temperature = float(weak_temperature)
        self.class_head = None
        if weak_labels != "none":
            from .class_head import build_weak_head
            if trunk is None:
                raise ValueError(f"{arch}: weak labels need a discriminator trunk")
            self.class_head = build_weak_head(int(trunk.outputs[1].shape[-1]), weak_objective,
                                              self.n_classes, owner=arch)
        # A morphology head (models/morphology.py): the same pooled features of each real
        # cell under a random flip, rotation and shift predict the cell's statistics.
        self.morphology_weight = float(morphology_weight)
        self.morphology_statistics = morphology_statistics
        self.morphology_head = None
        if self.morphology_weight > 0:
            from .class_head import build_class_head
            from .morphology import n_statistics
            if trunk is None:
                raise ValueError(f"{arch}: a morphology head needs a discriminator trunk")
            self.morphology_head = build_class_head(int(trunk.outputs[1].shape[-1]),
                                                    n_statistics(morphology_statistics),
                                                    name="morphology_head")
        names = (self.metric_names + (("ssl_loss",) if self.ssl_head is not None else ())
                 + (("class_loss",) if self.class_head is not None else ())
                 + (("morphology_loss",) if self.morphology_head is not None else ()))
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.g_optimizer = None
        self.d_optimizer = None
        self.head_optimizer = None
        self.weight_average = None  # average_weights()
        self.built = True  # the sub-models are functional and already built

    # -- Keras plumbing --------------------------------------------------------------
    @property
    def metrics(self):
        # listed here so fit() resets them at each epoch
        return list(self.trackers.values())

    def compile(self, g_optimizer, d_optimizer, head_optimizer=None, **kwargs):
        """Compile with one optimizer per network. Extra kwargs (steps_per_execution,
        jit_compile, run_eagerly) go to keras.Model.compile; XLA is off by default
        because it is slower on CPU. Call inside `strategy.scope()` when distributing.

        `head_optimizer` (with D heads only): the heads' losses then train the heads and
        the D layers under them at this optimizer's own rate, apart from the adversarial
        update (see `_discriminator_update`); without it they join D's loss."""
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=None, **kwargs)
        if head_optimizer is not None and not self._d_heads():
            raise ValueError(f"{self.arch}: a head optimizer needs a D head (ssl or weak_labels)")
        if keras.config.dtype_policy().name == "mixed_float16":
            g_optimizer = _loss_scaled(g_optimizer)
            d_optimizer = _loss_scaled(d_optimizer)
            head_optimizer = head_optimizer and _loss_scaled(head_optimizer)
        self.head_optimizer = head_optimizer  # before d_variables, which depends on it
        # Create the optimizer slots now, eagerly (inside the caller's strategy scope):
        # created lazily inside fit()'s tf.function they break under MirroredStrategy.
        g_optimizer.build(self.g_variables)
        d_optimizer.build(self.d_variables)
        if head_optimizer is not None:
            head_optimizer.build(self.head_variables)
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
        if self.head_optimizer is not None:  # the heads train under their own optimizer
            return list(self.discriminator.trainable_variables)
        return list(self.discriminator.trainable_variables) + self._head_only_variables()

    @property
    def head_variables(self):
        """What the head optimizer trains: the heads and the D layers beneath the pooled
        features they read (layers the heads' loss does not reach get no update)."""
        return self._head_only_variables() + list(self.discriminator.trainable_variables)

    def _head_only_variables(self):
        return [v for head in self._d_heads().values() for v in head.trainable_variables]

    def _d_heads(self) -> dict:
        heads = {"ssl_head": self.ssl_head, "class_head": self.class_head,
                 "morphology_head": self.morphology_head}
        return {k: h for k, h in heads.items() if h is not None}

    def extra_networks(self) -> dict:
        """Trained networks outside generator and discriminator (checkpointed too)."""
        return self._d_heads()

    def averaged_networks(self) -> list:
        """What `average_weights` averages: the generator and the encoder export writes
        out, the encoder by way of the network that owns its layers (D here) listed first.
        Why: the encoder's own weights depend on its readout (the hidden readout has a
        dense layer the others lack), and the checkpoint stores the averages by position,
        so a run must average the same list whichever readout `load_run` rebuilds it with."""
        return [self.generator, self.discriminator, self.encoder]

    def average_weights(self, decay: float):
        """Keep a moving average of the exported networks' weights from now on (call
        after every variable exists, inside the strategy's scope; models.weight_average)."""
        from .weight_average import WeightAverage

        variables = [v for net in self.averaged_networks() for v in net.weights]
        self.weight_average = WeightAverage(variables, decay)
        return self.weight_average

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
    @property
    def needs_labels(self) -> bool:
        """Whether a step needs (images, labels) batches: a weak-label head is trained."""
        return self.class_head is not None

    def train_step(self, data):
        if self.g_optimizer is None:
            raise RuntimeError("call gan.compile(g_optimizer, d_optimizer) before training")
        images, labels = _images_and_labels(data)
        if self.needs_labels and labels is None:
            raise ValueError(f"{self.arch}: its weak-label head needs (images, labels) "
                             "batches (make_dataset(labels=...))")
        values = self._train_step(tf.cast(images, tf.float32), labels)
        if self.weight_average is not None:
            self.weight_average.update()
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    def _train_step(self, real, labels=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def _adversarial_update(self, real, z, losses_of, g_loss_of):
        """One discriminator and one generator update, in the order `self.update` names.

        `losses_of(real, fake) -> (d_loss, g_loss, extras)` scores both batches in one
        discriminator pass; `g_loss_of(fake)` scores fakes alone (the alternating order's
        generator step, taken after the discriminator moved). Returns (d_loss, g_loss,
        extras) with extras from the discriminator step.
        """
        own_heads = self.head_optimizer is not None
        if self.update == "simultaneous":
            with tf.GradientTape() as g_tape, tf.GradientTape(persistent=own_heads) as d_tape:
                fake = self.generator(z, training=True)
                d_loss, g_loss, extras = losses_of(real, fake)
                d_scaled = self._scaled(self.d_optimizer, d_loss)
                h_scaled = self._scaled_heads_loss(extras)
                g_scaled = self._scaled(self.g_optimizer, g_loss)
            self._discriminator_update(d_tape, d_scaled, h_scaled)
            self._apply(self.g_optimizer, g_tape, g_scaled, self.g_variables)
            return d_loss, g_loss, extras
        with tf.GradientTape(persistent=own_heads) as d_tape:
            fake = self.generator(z, training=True)
            d_loss, _, extras = losses_of(real, tf.stop_gradient(fake))
            d_scaled = self._scaled(self.d_optimizer, d_loss)
            h_scaled = self._scaled_heads_loss(extras)
        self._discriminator_update(d_tape, d_scaled, h_scaled)
        with tf.GradientTape() as g_tape:
            fake = self.generator(z, training=True)
            g_loss = g_loss_of(fake)
            g_scaled = self._scaled(self.g_optimizer, g_loss)
        self._apply(self.g_optimizer, g_tape, g_scaled, self.g_variables)
        return d_loss, g_loss, extras

    def _discriminator_update(self, d_tape, d_scaled, h_scaled=None):
        """D's step on its scaled loss, then, given the heads' scaled loss
        (`_scaled_heads_loss`, taken inside the same tape), the heads' own step. Both
        gradients are taken before either update, at the same weights. Why a separate
        optimizer: D's learning rate suits the adversarial game (7e-5 in the configs),
        at which 800 steps barely move the first stage, while the texture readout learns
        from treatment labels at ~1e-3 (docs/learned-encoders.md)."""
        d_grads = d_tape.gradient(d_scaled, self.d_variables)
        head_pairs = []
        if h_scaled is not None:
            variables = self.head_variables
            grads = d_tape.gradient(h_scaled, variables)
            head_pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.d_optimizer.apply_gradients(zip(d_grads, self.d_variables))
        if head_pairs:
            self.head_optimizer.apply_gradients(head_pairs)

    def _scaled_heads_loss(self, extras):
        """The heads' weighted loss scaled for the head optimizer (call inside the
        tape), or None when the heads have no optimizer of their own."""
        if self.head_optimizer is None:
            return None
        return self._scaled(self.head_optimizer, self._heads_loss(extras))

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

    def _discriminate(self, real, fake, labels=None):
        """D's outputs on (augmented) real and fake batches in one pass, plus the
        representation losses: (real_out, fake_out, {name: loss}), the dict holding
        "ssl_loss" with a contrastive head (a second augmented view of the real batch
        then joins the pass) and "class_loss" with weak labels. Add them to D's loss
        with `_representation_loss`."""
        from .augment import BLOCK_VIEWS, PAIRED, contrastive_views

        if self.ssl_head is not None and self.augment in BLOCK_VIEWS:
            return self._discriminate_block_views(real, fake, labels)
        if self.ssl_head is not None and self.augment in PAIRED:
            # The policy draws the real batch's two views together (same window side).
            real_a, real_b = contrastive_views(self.augment, real, self._stateless_seed)
            fake_a = self._augmented(fake)
        else:
            # D's adversarial views first, then the head's second real view: the order
            # every seeded figure was measured with (contrastive_views would draw the
            # real views back to back).
            real_a, fake_a = self._augmented(real), self._augmented(fake)
            real_b = self._augmented(real) if self.ssl_head is not None else None
        if not self._d_heads():
            out = self.discriminator(tf.concat([real_a, fake_a], axis=0), training=True)
            real_out, fake_out = tf.split(out, 2, axis=0)
            return real_out, fake_out, {}
        views = [real_a, fake_a] + ([real_b] if real_b is not None else [])
        logits, pooled = self._trunk_views(views)
        real_feats = [pooled[0]] + pooled[2:]  # every real view, fakes left out
        extra = {}
        if self.ssl_head is not None:
            proj = self.ssl_head(tf.concat(real_feats, axis=0), training=True)
            proj_a, proj_b = tf.split(proj, 2, axis=0)
            if len(proj.shape) == 3:  # one projection per feature block
                extra["ssl_loss"] = self._mean_contrastive(
                    [(proj_a[:, k], proj_b[:, k]) for k in range(proj.shape[1])])
            else:
                extra["ssl_loss"] = self._mean_contrastive([(proj_a, proj_b)])
        if self.class_head is not None:
            extra["class_loss"] = self._weak_loss(real, real_feats, labels)
        self._add_morphology_loss(real, extra)
        return logits[0], logits[1], extra

    def _discriminate_block_views(self, real, fake, labels=None):
        """`_discriminate` where each feature block's head has its own view policy
        (augment.BLOCK_VIEWS): one pass of D over every block's two views of the real
        batch and the fakes; the last block's first view is D's adversarial real view."""
        from .augment import BLOCK_VIEWS

        pairs = [views(real, self._stateless_seed()) for views in BLOCK_VIEWS[self.augment]]
        real_views = [v for pair in pairs for v in pair]  # block k's pair at 2k, 2k + 1
        logits, pooled = self._trunk_views(real_views + [self._augmented(fake)])
        real_feats = pooled[:-1]
        proj = tf.split(self.ssl_head(tf.concat(real_feats, axis=0), training=True),
                        len(real_feats), axis=0)
        extra = {"ssl_loss": self._mean_contrastive(
            [(proj[2 * k][:, k], proj[2 * k + 1][:, k]) for k in range(len(pairs))])}
        if self.class_head is not None:
            extra["class_loss"] = self._weak_loss(real, real_feats, labels)
        self._add_morphology_loss(real, extra)
        return logits[2 * len(pairs) - 2], logits[-1], extra

    def _trunk_views(self, views):
        """One pass of D's trunk over `views` stacked: per view, (logits, pooled features)."""
        logits, pooled = self.trunk(tf.concat(views, axis=0), training=True)
        return tf.split(logits, len(views), axis=0), tf.split(pooled, len(views), axis=0)

    def _mean_contrastive(self, projection_pairs):
        """The mean self-supervised loss (`ssl_objective`) of (view a, view b) projection pairs."""
        from .. import losses

        terms = [losses.view_agreement_loss(self.ssl_objective, a, b, self.ssl_temperature)
                 for a, b in projection_pairs]
        return terms[0] if len(terms) == 1 else tf.add_n(terms) / len(terms)

    def _weak_loss(self, real, real_feats, labels):
        """The weak-label loss: the class head on every real view's features (the labels
        repeat per view), or the set loss on D's features of each whole real cell under a
        random flip, rotation and shift (its own trunk pass, as the morphology head's: a
        profile is the mean over whole cells, and D's windows hide their size)."""
        from .. import losses
        from .class_head import GROUPED_OBJECTIVES

        if self.weak_objective in GROUPED_OBJECTIVES:
            from .augment import diff_augment

            _, pooled = self.trunk(diff_augment(real, self._stateless_seed()), training=True)
            out = self.class_head(tf.cast(pooled, tf.float32), training=True)
            return losses.grouped_weak_loss(self.weak_objective, out, labels, self.weak_group,
                                            cancel=self.weak_cancel,
                                            temperature=self.weak_temperature)
        class_logits = self.class_head(tf.concat(real_feats, axis=0), training=True)
        return losses.classification_loss(class_logits, tf.tile(labels, [len(real_feats)]))

    def _add_morphology_loss(self, real, extra: dict):
        """With a morphology head, extra["morphology_loss"]: D's pooled features of each
        whole real cell under a random flip, rotation and shift (its own trunk pass: D's
        views are windows, which hide the cell's size) against the cell's statistics."""
        if self.morphology_head is None:
            return
        from .augment import diff_augment
        from .morphology import head_loss

        _, pooled = self.trunk(diff_augment(real, self._stateless_seed()), training=True)
        extra["morphology_loss"] = head_loss(self.morphology_head, tf.cast(pooled, tf.float32),
                                             real, self.morphology_statistics)

    def _representation_loss(self, extra: dict):
        """What `_discriminate`'s representation losses add to D's loss: their weighted
        sum, or 0 when the heads train under their own optimizer (`_discriminator_update`)."""
        if self.head_optimizer is not None:
            return tf.constant(0.0, tf.float32)
        return self._heads_loss(extra)

    def _heads_loss(self, extra: dict):
        """The weighted sum of the representation losses (0 without any)."""
        total = tf.constant(0.0, tf.float32)
        if "ssl_loss" in extra:
            total += self.ssl_weight * extra["ssl_loss"]
        if "class_loss" in extra:
            total += self.weak_weight * extra["class_loss"]
        if "morphology_loss" in extra:
            total += self.morphology_weight * extra["morphology_loss"]
        return total

    def extra_state(self) -> dict:
        """State outside the networks' weights that a checkpoint must also hold
        (beyond generator, discriminator and both optimizers)."""
        return {"seed_generator_state": self.seed_generator.state}


def _loss_scaled(opt):
    if isinstance(opt, keras.optimizers.LossScaleOptimizer):
        return opt
    return keras.optimizers.LossScaleOptimizer(opt, name=f"{opt.name}_loss_scale")


def _images_and_labels(data):
    """fit() hands over a batch, a 1-tuple (x,), an (x, labels) pair, or a pipeline dict
    with "image" (and "label")."""
    if isinstance(data, dict):
        return data["image"], data.get("label")
    if isinstance(data, (tuple, list)):
        return data[0], (data[1] if len(data) > 1 else None)
    return data, None
