"""The core layer: what a user needs to wrap a generator and run it.

``capture`` (a graph enters) -> ``taps`` / ``cut`` (validated taps, what is skipped) ->
``blocks`` (the learned part) -> ``programs`` (keyframe, shortcut, inference) ->
``module`` (the stateful :class:`ShortcutV2V`) <- ``build`` (:func:`shortcutify`, :func:`load`);
``cost``, ``policy``, ``config``, ``outputs`` (the image in an output) and ``storage`` serve them. Imports go one way: nothing here
imports :mod:`shortcutify.train` or :mod:`shortcutify.demo`.
"""

from .blocks import (
    BlockOutput,
    FullReference,
    FullResolutionBlock,
    HalfReference,
    HalfResolutionBlock,
    KeyframeTaps,
    Reference,
    ShortcutBlock,
    make_block,
)
from .build import load, shortcutify
from .capture import CaptureOptions
from .config import ShortcutConfig
from .cost import CostReport, PathCost
from .module import KeyframeOutput, ShortcutOutput, ShortcutStep, ShortcutV2V
from .policy import AdaptiveKeyframes, FixedInterval, FrameSignal, KeyframePolicy
from .suggest import TapSuggestion, TapSuggestions, suggest_taps
from .taps import TapInfo, TapList, list_taps

__all__ = [
    "shortcutify",
    "load",
    "list_taps",
    "suggest_taps",
    "TapSuggestion",
    "TapSuggestions",
    "ShortcutV2V",
    "ShortcutStep",
    "KeyframeOutput",
    "ShortcutOutput",
    "ShortcutConfig",
    "CaptureOptions",
    "ShortcutBlock",
    "HalfResolutionBlock",
    "FullResolutionBlock",
    "HalfReference",
    "FullReference",
    "Reference",
    "BlockOutput",
    "KeyframeTaps",
    "make_block",
    "FixedInterval",
    "AdaptiveKeyframes",
    "FrameSignal",
    "KeyframePolicy",
    "TapInfo",
    "TapList",
    "CostReport",
    "PathCost",
]
