"""LSGAN (least squares): the CytoGAN paper's main model. Same networks and step as
DCGAN, least-squares losses on the discriminator's linear output."""

from __future__ import annotations

from .. import losses
from .dcgan import DCGAN


class LSGAN(DCGAN):
    d_loss_fn = staticmethod(losses.lsgan_discriminator_loss)
    g_loss_fn = staticmethod(losses.lsgan_generator_loss)
