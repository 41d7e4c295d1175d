"""Reference generators used by the examples, benchmarks and tests.

``ResnetGenerator`` has the layout of the CycleGAN/RecycleGAN ResNet generator
(reflection padding, instance norm, two stride-2 convs, residual blocks, two transposed
convs, tanh), so that its layer indices match the paper's taps: with ``n_down=2``
``model.4`` is the first down-sampling conv and ``model.{10 + n_blocks}`` the first
up-sampling transposed conv.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ResnetBlock", "ResnetGenerator", "resnet_taps"]


class ResnetBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with reflection padding and instance norm; ``[B, C, H, W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=True),
            nn.InstanceNorm2d(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=True),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN-style ResNet generator: ``[B, in_ch, H, W] -> [B, out_ch, H, W]`` in [-1, 1].

    ``H`` and ``W`` must be divisible by ``2**n_down``.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 6, n_down: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, 7, bias=True),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        ch = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=True), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=True),
                nn.InstanceNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.n_blocks, self.n_down = n_blocks, n_down

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def resnet_taps(gen: ResnetGenerator) -> tuple[str, str]:
    """The paper's RecycleGAN taps: first down-sampling conv and first transposed conv outputs."""
    return "model.4", f"model.{4 + 3 * gen.n_down + gen.n_blocks}"
