"""WGAN-GP: a critic without batch norm (layer norm or none), `n_critic` critic updates
per generator update, gradient penalty weighted by `gp_weight`.

One train_step = `n_critic` critic updates on the step's real batch (fresh noise for
each) and one generator update. The generator update reuses the last critic
iteration's fake batch and critic scores ("simultaneous" update) unless
update="alternating".
"""

from __future__ import annotations

import tensorflow as tf

from .. import losses
from .base import BaseGAN
from .networks import build_discriminator_with_encoder, build_generator, head_blocks


class WGANGP(BaseGAN):
    metric_names = ("d_loss", "g_loss", "gp", "w_distance")

    def __init__(self, *args, n_critic=5, gp_weight=10.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_critic = int(n_critic)
        self.gp_weight = float(gp_weight)

    @classmethod
    def from_config_values(cls, *, latent_dim, image_size, widths, encoder_dim, seed, update,
                           arch, critic_norm="layer", readout="hidden",
                           head_features="multiscale", views="single", **options):
        """`options`: n_critic, gp_weight and the representation options (augment, ssl,
        ssl_weight, ssl_temperature, ssl_objective, weak_labels, weak_weight, n_classes)
        where set."""
        gen = build_generator(latent_dim, image_size, widths, norm="batch", act="relu")
        disc, enc, trunk = build_discriminator_with_encoder(image_size, widths, encoder_dim,
                                                            norm=critic_norm, readout=readout,
                                                            head_features=head_features, views=views)
        return cls(gen, disc, enc, latent_dim=latent_dim, image_size=image_size, arch=arch,
                   encoder_dim=encoder_dim, seed=seed, update=update, trunk=trunk,
                   head_blocks=head_blocks(widths, head_features), **options)

    def _critic_losses(self, real, fake, labels):
        real_scores, fake_scores, extra = self._discriminate(real, fake, labels)
        alpha = self._noise(tf.shape(real)[0], [1, 1, 1], kind="uniform")
        # The penalty holds D 1-Lipschitz on the (unaugmented) image space.
        gp = losses.gradient_penalty(self.discriminator, real, tf.stop_gradient(fake), alpha,
                                     inner_scale=self._penalty_scale())
        wd = losses.wasserstein_discriminator_loss(real_scores, fake_scores)
        d_loss = wd + self.gp_weight * gp + self._representation_loss(extra)
        return d_loss, gp, -wd, fake_scores, extra

    def _penalty_scale(self):
        """Static scale for the penalty's float16 input gradient, or None outside fp16.

        The penalty holds ||grad_x D|| near 1, so a pixel's gradient is about
        1/sqrt(H*W*C) (0.009 at 64x64x3); scaling by sqrt(H*W*C) puts it near 1, far
        from float16's underflow (6e-8) and overflow (65504). Measured on a 64 px critic
        whose input gradient norm was 2.4e-5: unscaled, 14% of the float16 pixel
        gradients underflowed to 0 (max error 37%); scaled, 0.1% (max error 9%, float16's
        floor at any magnitude). Not the optimizer's dynamic loss scale: an overflow of
        this inner pass would make the penalty itself inf, read as divergence.
        """
        if self.discriminator.compute_dtype != "float16":
            return None
        return float(self.image_size * self.image_size * 3) ** 0.5

    def _train_step(self, real, labels=None):
        batch = tf.shape(real)[0]
        simultaneous = self.update == "simultaneous"
        for i in range(self.n_critic):  # unrolled in the graph; n_critic is small
            last = i == self.n_critic - 1
            z = self._noise(batch)
            with tf.GradientTape() as g_tape, \
                    tf.GradientTape(persistent=self.head_optimizer is not None) as d_tape:
                fake = self.generator(z, training=True)
                d_loss, gp, w_dist, fake_scores, extra = self._critic_losses(real, fake, labels)
                d_scaled = self._scaled(self.d_optimizer, d_loss)
                h_scaled = self._scaled_heads_loss(extra)
                if last and simultaneous:
                    g_loss = losses.wasserstein_generator_loss(fake_scores)
                    g_scaled = self._scaled(self.g_optimizer, g_loss)
            self._discriminator_update(d_tape, d_scaled, h_scaled)
        if not simultaneous:
            with tf.GradientTape() as g_tape:
                fake = self.generator(z, training=True)
                scores = self.discriminator(self._augmented(fake), training=True)
                g_loss = losses.wasserstein_generator_loss(scores)
                g_scaled = self._scaled(self.g_optimizer, g_loss)
        self._apply(self.g_optimizer, g_tape, g_scaled, self.g_variables)
        return {"d_loss": d_loss, "g_loss": g_loss, "gp": gp, "w_distance": w_dist, **extra}
