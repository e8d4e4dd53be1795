"""DCGAN with the non-saturating generator loss; also the base of LSGAN.

The discriminator sees real and fake images as one concatenated batch (one pass of 2B
images is faster on oneDNN than two passes of B) and so has no batch norm: normalising
that mixed batch ties every score to the batch's real/fake mix, and on the demo cells
it kept the generator collapsed or noisy (lsgan 400 steps, resize-conv generator:
batch-norm D gave garbage frames, no-norm D diverse cells, diversity 0.12 as real cells).
The generator keeps batch norm.
"""

from __future__ import annotations

import tensorflow as tf

from .. import losses
from .base import BaseGAN
from .networks import build_discriminator_with_encoder, build_generator, head_blocks


class DCGAN(BaseGAN):
    d_loss_fn = staticmethod(losses.dcgan_discriminator_loss)
    g_loss_fn = staticmethod(losses.dcgan_generator_loss)

    @classmethod
    def from_config_values(cls, *, latent_dim, image_size, widths, encoder_dim, seed, update, arch,
                           readout="hidden", head_features="multiscale", views="single",
                           **representation):
        """`representation`: augment, ssl, ssl_weight, ssl_temperature, ssl_objective,
        weak_labels, weak_weight, n_classes where configured."""
        gen = build_generator(latent_dim, image_size, widths, norm="batch", act="relu")
        disc, enc, trunk = build_discriminator_with_encoder(image_size, widths, encoder_dim,
                                                            norm="none", readout=readout,
                                                            head_features=head_features, views=views)
        return cls(gen, disc, enc, latent_dim=latent_dim, image_size=image_size, arch=arch,
                   encoder_dim=encoder_dim, seed=seed, update=update, trunk=trunk,
                   head_blocks=head_blocks(widths, head_features),
                   **representation)

    def _train_step(self, real, labels=None):
        def losses_of(real, fake):
            real_logits, fake_logits, extra = self._discriminate(real, fake, labels)
            d_loss = self.d_loss_fn(real_logits, fake_logits) + self._representation_loss(extra)
            return d_loss, self.g_loss_fn(fake_logits), extra

        def g_loss_of(fake):
            return self.g_loss_fn(self.discriminator(self._augmented(fake), training=True))

        z = self._noise(tf.shape(real)[0])
        d_loss, g_loss, extra = self._adversarial_update(real, z, losses_of, g_loss_of)
        return {"d_loss": d_loss, "g_loss": g_loss, **extra}
