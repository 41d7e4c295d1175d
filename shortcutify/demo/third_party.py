"""Generators from third-party code (diffusers, MONAI), as frame-to-frame modules.

Randomly initialised, small, for the capture tests and ``benchmarks/capture.py``: real
architectures whose code defeats ``torch.fx`` (shape asserts, ``len(x.shape)``,
``torch.jit.isinstance``) next to ones it traces. Needs ``pip install diffusers monai`` (the
``dev`` extra); nothing here is imported by the library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["ThirdPartyModel", "MODELS", "UNetFrame", "VAEFrame"]


class UNetFrame(nn.Module):
    """A diffusers ``UNet2DModel`` as a frame generator: ``x [B, C, H, W] -> [B, C, H, W]`` at a fixed timestep."""

    def __init__(self, unet: nn.Module, timestep: int = 10) -> None:
        super().__init__()
        self.unet, self.timestep = unet, timestep

    def forward(self, x: Tensor) -> Tensor:
        return self.unet(x, self.timestep, return_dict=False)[0]


class VAEFrame(nn.Module):
    """A diffusers ``AutoencoderKL`` as a frame generator: encode, take the latent mode, decode."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: Tensor) -> Tensor:
        return self.vae.decode(self.vae.encode(x).latent_dist.mode()).sample


def _unet2d() -> nn.Module:
    from diffusers import UNet2DModel

    return UNetFrame(
        UNet2DModel(
            sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
            norm_num_groups=4, attention_head_dim=4,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        )
    )


def _vae() -> nn.Module:
    from diffusers import AutoencoderKL

    return VAEFrame(
        AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
            latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        )
    )


def _basic_unet() -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=3, out_channels=3, features=(4, 4, 8, 8, 16, 4))


def _monai_unet() -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=3, out_channels=3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def _segresnet() -> nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=2, in_channels=3, out_channels=3, init_filters=8)


@dataclass(frozen=True)
class ThirdPartyModel:
    """One model: how to build it, taps by module name, and the capture path ``"auto"`` ends on."""

    build: Callable[[], nn.Module]
    enc: str
    dec: str
    path: str


MODELS: dict[str, ThirdPartyModel] = {
    "diffusers UNet2DModel": ThirdPartyModel(_unet2d, "unet.conv_in", "unet.up_blocks.1", "export"),
    "diffusers AutoencoderKL": ThirdPartyModel(_vae, "vae.encoder.conv_in", "vae.decoder.mid_block", "export"),
    "MONAI BasicUNet": ThirdPartyModel(_basic_unet, "down_1", "upcat_3", "export"),
    "MONAI UNet": ThirdPartyModel(_monai_unet, "model.0", "model.1", "fx"),
    "MONAI SegResNet": ThirdPartyModel(_segresnet, "down_layers.1", "up_layers.1", "fx"),
}
