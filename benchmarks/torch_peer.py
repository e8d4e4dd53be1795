"""PyTorch peers of the LSGAN and WGAN-GP networks, for the speed comparison in
train_speed.py. Layer for layer the same as cytogan_tf.models.networks (generator:
x2 nearest resize + 3x3 conv per stage, BN momentum 0.1 == Keras 0.9, eps 1e-5;
discriminator: 4x4 stride-2 convs with padding 1, no norm for LSGAN, layer norm for the
WGAN-GP critic, LeakyReLU 0.2, linear encoder layer before the output) and the same training step (one fake batch
serves D and G; WGAN-GP: n_critic critic updates, G update on the last one's fakes).
bf16 runs use torch.autocast on CPU; losses are computed in float32 as in TF.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def _norm(kind, channels, size):
    if kind == "batch":
        return nn.BatchNorm2d(channels, momentum=0.1, eps=1e-5)
    if kind == "layer":
        return nn.LayerNorm([channels, size, size], eps=1e-5)
    return nn.Identity()


class Generator(nn.Module):
    def __init__(self, latent_dim=100, image_size=64, widths=(256, 128, 64, 32)):
        super().__init__()
        s = image_size // 16
        self.s, self.w0 = s, widths[0]
        self.project = nn.Linear(latent_dim, s * s * widths[0], bias=False)
        layers, size = [], s
        chans = list(widths)
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.BatchNorm2d(c_in, momentum=0.1, eps=1e-5), nn.ReLU(),
                       nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)]
            size *= 2
        layers += [nn.BatchNorm2d(chans[-1], momentum=0.1, eps=1e-5), nn.ReLU(),
                   nn.Upsample(scale_factor=2, mode="nearest"),
                   nn.Conv2d(chans[-1], 3, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        x = self.project(z).view(-1, self.w0, self.s, self.s)
        return self.body(x)


class Discriminator(nn.Module):
    def __init__(self, image_size=64, widths=(256, 128, 64, 32), encoder_dim=100, norm="batch"):
        super().__init__()
        layers, c_in, size = [], 3, image_size
        for i, w in enumerate(reversed(widths)):
            size //= 2
            layers.append(nn.Conv2d(c_in, w, 4, 2, 1, bias=(i == 0 or norm == "none")))
            if i > 0:
                layers.append(_norm(norm, w, size))
            layers.append(nn.LeakyReLU(0.2))
            c_in = w
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.hidden = nn.Linear(c_in * size * size, encoder_dim)
        self.out = nn.Linear(encoder_dim, 1)

    def forward(self, x):
        return self.out(self.hidden(self.features(x)))


class PeerGAN:
    """One training step of LSGAN or WGAN-GP, as in cytogan_tf.models."""

    def __init__(self, arch="lsgan", image_size=64, latent_dim=100, widths=(256, 128, 64, 32),
                 encoder_dim=100, bf16=False, n_critic=5, gp_weight=10.0, channels_last=False,
                 seed=0):
        torch.manual_seed(seed)
        self.arch, self.latent_dim, self.bf16 = arch, latent_dim, bf16
        self.n_critic, self.gp_weight = n_critic, gp_weight
        self.G = Generator(latent_dim, image_size, widths)
        self.D = Discriminator(image_size, widths, encoder_dim,
                               norm="layer" if arch == "wgan" else "none")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        betas = (0.5, 0.9) if arch == "wgan" else (0.5, 0.999)
        self.g_opt = torch.optim.Adam(self.G.parameters(), lr=1e-4, betas=betas)
        self.d_opt = torch.optim.Adam(self.D.parameters(), lr=1e-4, betas=betas)

    def _autocast(self):
        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @staticmethod
    def _grads(loss, module, retain):
        """Gradients into .grad without stepping: both networks' gradients are taken
        at the same weights before either optimizer steps (TF's simultaneous update)."""
        params = list(module.parameters())
        for p, g in zip(params, torch.autograd.grad(loss, params, retain_graph=retain)):
            p.grad = g

    def step(self, real):
        real = real.contiguous(memory_format=self.memory_format)
        if self.arch == "wgan":
            return self._wgan_step(real)
        z = torch.randn(real.shape[0], self.latent_dim)
        with self._autocast():
            fake = self.G(z)
            logits = self.D(torch.cat([real, fake.to(real.dtype)], 0)).float()
        real_l, fake_l = logits.chunk(2)
        d_loss = 0.5 * ((real_l - 1) ** 2).mean() + 0.5 * (fake_l ** 2).mean()
        g_loss = 0.5 * ((fake_l - 1) ** 2).mean()
        self._grads(d_loss, self.D, retain=True)
        self._grads(g_loss, self.G, retain=False)
        self.d_opt.step()
        self.g_opt.step()
        return float(d_loss.detach()), float(g_loss.detach())

    def _gp(self, real, fake):
        alpha = torch.rand(real.shape[0], 1, 1, 1)
        x_hat = (real + alpha * (fake - real)).requires_grad_(True)
        with self._autocast():
            scores = self.D(x_hat).float()
        (grads,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        norms = torch.sqrt(grads.float().pow(2).sum(dim=(1, 2, 3)) + 1e-10)
        return ((norms - 1) ** 2).mean()

    def _wgan_step(self, real):
        for i in range(self.n_critic):
            last = i == self.n_critic - 1
            z = torch.randn(real.shape[0], self.latent_dim)
            with self._autocast():
                fake = self.G(z)
                scores = self.D(torch.cat([real, fake.to(real.dtype)], 0)).float()
            real_s, fake_s = scores.chunk(2)
            gp = self._gp(real, fake.detach().float())
            d_loss = fake_s.mean() - real_s.mean() + self.gp_weight * gp
            self._grads(d_loss, self.D, retain=last)
            if last:
                g_loss = -fake_s.mean()
                self._grads(g_loss, self.G, retain=False)
                self.g_opt.step()
            self.d_opt.step()
        return float(d_loss.detach()), float(g_loss.detach())
