"""BEGAN: an autoencoder discriminator, equilibrium term k_t and convergence measure M.

k_t is a non-trainable tf.Variable (`gan.k_t`) that a checkpoint must hold (see
`extra_state`). Under tf.distribute its update uses the cross-replica mean losses, so
every replica writes the same value. The encoder is the autoencoder's bottleneck.

k_t starts at 0.3, not the paper's 0: at k_t = 0 the discriminator only learns to
reconstruct real crops, and the generator, whose only aim is to be reconstructed well,
collapses within ~200 steps to the near-constant image the untrained autoencoder
outputs. On masked crops (mostly black, so L(x) and the k_t update are small) k_t then
takes thousands of steps to push back, and never did in a 2,400-step demo run.
"""

from __future__ import annotations

import tensorflow as tf

from .. import losses
from .base import BaseGAN
from .networks import build_autoencoder, build_generator


class BEGAN(BaseGAN):
    metric_names = ("d_loss", "g_loss", "k", "M")

    def __init__(self, *args, gamma=0.5, lambda_k=1e-3, k_init=0.3, **kwargs):
        super().__init__(*args, **kwargs)
        self.gamma = float(gamma)
        self.lambda_k = float(lambda_k)
        self.k_t = tf.Variable(
            float(k_init), trainable=False, dtype=tf.float32, name="began_k",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    @classmethod
    def from_config_values(cls, *, latent_dim, image_size, widths, encoder_dim, seed, update,
                           arch, readout="hidden", views="single", **equilibrium):
        """`equilibrium`: gamma, lambda_k, k_init where the config sets them."""
        gen = build_generator(latent_dim, image_size, widths, norm="none", act="elu")
        disc, enc = build_autoencoder(image_size, widths, encoder_dim, readout=readout, views=views)
        return cls(gen, disc, enc, latent_dim=latent_dim, image_size=image_size, arch=arch,
                   encoder_dim=encoder_dim, seed=seed, update=update,
                   **equilibrium)

    def extra_state(self) -> dict:
        return {**super().extra_state(), "k_t": self.k_t}

    def _recon_losses(self, real, fake):
        recon = self.discriminator(tf.concat([real, fake], axis=0), training=True)
        real_recon, fake_recon = tf.split(recon, 2, axis=0)
        return (losses.began_reconstruction_loss(real, real_recon),
                losses.began_reconstruction_loss(fake, fake_recon))

    def _train_step(self, real, labels=None):  # no weak-label option
        z = self._noise(tf.shape(real)[0])
        k = tf.identity(self.k_t)

        def losses_of(real, fake):
            l_real, l_fake = self._recon_losses(real, fake)
            return (losses.began_discriminator_loss(l_real, l_fake, k),
                    losses.began_generator_loss(l_fake), (l_real, l_fake))

        def g_loss_of(fake):
            return losses.began_generator_loss(
                losses.began_reconstruction_loss(fake, self.discriminator(fake, training=True)))

        # "simultaneous" is the BEGAN paper's own update order
        d_loss, g_loss, (l_real, l_fake) = self._adversarial_update(real, z, losses_of, g_loss_of)
        ctx = tf.distribute.get_replica_context()
        mean_real, mean_fake = l_real, l_fake
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            mean_real, mean_fake = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, [l_real, l_fake])
        self.k_t.assign(losses.began_k_update(k, mean_real, mean_fake, self.gamma, self.lambda_k))
        m = losses.began_convergence(l_real, l_fake, self.gamma)
        return {"d_loss": d_loss, "g_loss": g_loss, "k": self.k_t.read_value(), "M": m}
