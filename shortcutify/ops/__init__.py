"""The block's numerical ops in plain PyTorch, public as in ``torchvision.ops``.

Functional and module pairs with torchvision's semantics, without torchvision:

* :func:`deform_conv2d` / :class:`DeformConv2d`: modulated deformable convolution (DCNv2);
* :func:`deform_columns`, :func:`unfold_columns`, :func:`columns_matmul`: its two stages,
  exposed so that several applications of one weight can share one matrix product;
* :func:`warp`: backward warping by a flow ``(dy, dx)`` in pixels, zeros outside, plus an
  optional residual (its reference :func:`warp_reference`; on CUDA a Triton kernel);
* :func:`adabd_conv`: AdaBD's fused blend-and-deform convolution (its plain-PyTorch
  reference :func:`adabd_conv_reference`; on CUDA a Triton kernel, see
  :func:`use_fast_path` and :func:`fast_path_available`);
* :func:`correlation_flow` (with :func:`coarse_features`, :func:`coarse_grid`, :func:`coarse_pool`): a
  parameter-free motion estimate between two feature maps.

These are the reference implementations, run on every device and differentiable; a
device-specific fast path goes beside them with the same signature and is tested
against them (``shortcutify.ops.adabd_triton``, ``shortcutify.ops.warp_triton``, imported
only where triton is installed; ``shortcutify.ops.fast_path`` says where they apply).
``shortcutify.ops.layout`` holds CPU memory-layout helpers, ``shortcutify.ops.pointwise`` a 1×1 conv plus
residual summed into contiguous memory (the full block's last step on CPU).
"""

from .adabd import adabd_conv, adabd_conv_reference
from .deform import DeformConv2d, columns_matmul, conv_output_size, deform_columns, deform_conv2d, unfold_columns, warp_reference
from .fast_path import fast_path_available, use_fast_path
from .motion import MOTION_PRIORS, coarse_features, coarse_grid, coarse_pool, correlation_flow, local_similarities
from .warping import warp

__all__ = [
    "deform_conv2d",
    "DeformConv2d",
    "deform_columns",
    "unfold_columns",
    "columns_matmul",
    "conv_output_size",
    "warp",
    "warp_reference",
    "adabd_conv",
    "adabd_conv_reference",
    "use_fast_path",
    "fast_path_available",
    "correlation_flow",
    "coarse_features",
    "coarse_grid",
    "coarse_pool",
    "local_similarities",
    "MOTION_PRIORS",
]
