"""Discriminators for the optional adversarial terms of distillation."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["PatchDiscriminator", "lsgan_loss"]


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: ``[B, in_ch, H, W] -> [B, 1, H/8, W/8]`` patch scores.

    ``n_layers`` stride-2 convs (4×4, leaky ReLU, instance norm) then a stride-1 score
    conv; with ``in_ch = 2·C`` it scores (previous, current) frame pairs (temporal
    discriminator).
    """

    def __init__(self, in_ch: int, ndf: int = 32, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = ndf
        for _ in range(n_layers - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.InstanceNorm2d(ch * 2), nn.LeakyReLU(0.2)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def lsgan_loss(scores: Tensor, real: bool) -> Tensor:
    """Least-squares GAN loss: ``mean((D(x) − 1)²)`` for real targets, ``mean(D(x)²)`` for fake."""
    return ((scores - 1) ** 2).mean() if real else (scores**2).mean()
