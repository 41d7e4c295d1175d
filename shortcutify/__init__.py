"""shortcutify: make a video-to-video generator several times cheaper per frame.

Implements Shortcut-V2V (Chung et al., ICCV 2023) for any ``torch.fx``-traceable
generator::

    sv = shortcutify(generator, enc_layer="model.4", dec_layer="model.16", example_inputs=frame)
    distill(sv, clips)   # learns the small shortcut block; the generator stays frozen
    out = sv(next_frame) # keyframes run the full model, the rest take the shortcut
"""

from __future__ import annotations

from .blocks import Reference, ShortcutBlock
from .cost import CostReport, PathCost
from .distill import History, LossWeights, distill
from .errors import (
    AmbiguousTapError,
    EmptyCutError,
    IncompatibleCheckpointError,
    ShortcutifyError,
    TapOrderError,
    TapShapeError,
    UnknownTapError,
    UntraceableModelError,
)
from .evaluate import EvalResult, evaluate
from .graph import TapInfo, TapList, list_taps
from .io import load
from .module import ShortcutV2V, shortcutify
from .policy import FixedInterval, KeyframePolicy

__version__ = "0.2.0"

__all__ = [
    "shortcutify",
    "list_taps",
    "distill",
    "load",
    "evaluate",
    "EvalResult",
    "History",
    "LossWeights",
    "ShortcutV2V",
    "ShortcutBlock",
    "Reference",
    "FixedInterval",
    "KeyframePolicy",
    "TapInfo",
    "TapList",
    "CostReport",
    "PathCost",
    "ShortcutifyError",
    "UnknownTapError",
    "AmbiguousTapError",
    "TapOrderError",
    "TapShapeError",
    "EmptyCutError",
    "UntraceableModelError",
    "IncompatibleCheckpointError",
    "__version__",
]
