"""shortcutify: make a video-to-video generator several times cheaper per frame.

Implements Shortcut-V2V (Chung et al., ICCV 2023) for any generator that ``torch.fx`` or
``torch.export`` can capture::

    sv = shortcutify(generator, enc_layer="model.4", dec_layer="model.16", example_inputs=frame)
    distill(sv, clips)   # learns the small shortcut block; the generator stays frozen
    out = sv(next_frame) # keyframes run the full model, the rest take the shortcut

Layers: :mod:`shortcutify.ops` (the block's numerical ops) <- :mod:`shortcutify.core`
(capture, cut, blocks, programs, the module, costs, saving) <- :mod:`shortcutify.train`
(distillation, evaluation) <- :mod:`shortcutify.demo` (teachers, video, the demo).
"""

from __future__ import annotations

from .core import (
    AdaptiveKeyframes,
    BlockOutput,
    CaptureOptions,
    CostReport,
    FixedInterval,
    FrameSignal,
    FullReference,
    FullResolutionBlock,
    HalfReference,
    HalfResolutionBlock,
    KeyframeOutput,
    KeyframePolicy,
    KeyframeTaps,
    PathCost,
    Reference,
    ShortcutBlock,
    ShortcutConfig,
    ShortcutOutput,
    ShortcutV2V,
    TapInfo,
    TapList,
    TapSuggestion,
    TapSuggestions,
    list_taps,
    load,
    suggest_taps,
    make_block,
    shortcutify,
)
from .errors import (
    AmbiguousTapError,
    CaptureMismatchError,
    EmptyCutError,
    FixedArgumentError,
    GeneratorStateError,
    GradientError,
    IncompatibleCheckpointError,
    InputMismatchError,
    InputTypeError,
    NonFiniteKeyframeWarning,
    OutputSelectionError,
    PlacementError,
    PolicyError,
    RecompileLimitError,
    ShortcutifyError,
    StreamSplitError,
    TapOrderError,
    TapShapeError,
    UnknownTapError,
    UntraceableModelError,
)
from .train import Calibration, EvalResult, History, LossWeights, calibrate, distill, evaluate
from .version import __version__

__all__ = [
    "shortcutify",
    "list_taps",
    "suggest_taps",
    "TapSuggestion",
    "TapSuggestions",
    "distill",
    "calibrate",
    "Calibration",
    "load",
    "evaluate",
    "EvalResult",
    "History",
    "LossWeights",
    "ShortcutV2V",
    "ShortcutConfig",
    "CaptureOptions",
    "KeyframeOutput",
    "ShortcutOutput",
    "ShortcutBlock",
    "HalfResolutionBlock",
    "FullResolutionBlock",
    "make_block",
    "Reference",
    "HalfReference",
    "FullReference",
    "KeyframeTaps",
    "BlockOutput",
    "FixedInterval",
    "AdaptiveKeyframes",
    "FrameSignal",
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
    "CaptureMismatchError",
    "FixedArgumentError",
    "IncompatibleCheckpointError",
    "StreamSplitError",
    "InputMismatchError",
    "InputTypeError",
    "PolicyError",
    "RecompileLimitError",
    "PlacementError",
    "GradientError",
    "GeneratorStateError",
    "OutputSelectionError",
    "NonFiniteKeyframeWarning",
    "__version__",
]
