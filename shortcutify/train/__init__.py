"""The training layer: distilling the block (:func:`distill`) and measuring it (:func:`evaluate`).

``distill`` is a short loop over named pieces: ``clips`` (training pairs), ``losses`` (the
terms and the optional discriminators), ``guard`` (finiteness checks before each update),
``checkpoint`` (resume state and run record), ``distributed`` (DDP set-up) and ``history``; ``evaluate`` and ``metrics`` measure fidelity to the teacher,
on the image :mod:`shortcutify.core.outputs` takes from the generator's output;
``calibrate`` chooses an adaptive keyframe policy's threshold on footage.
Imports :mod:`shortcutify.core` (and the shared :mod:`shortcutify.errors`), never the demo layer.
"""

from ..core.outputs import OutputSelector, output_image
from .calibrate import Calibration, calibrate
from .checkpoint import CHECKPOINT_NAME
from .distill import distill
from .evaluate import EvalResult, evaluate
from .history import History
from .losses import LossWeights

__all__ = ["distill", "calibrate", "Calibration", "evaluate", "EvalResult", "History", "LossWeights", "output_image", "OutputSelector", "CHECKPOINT_NAME"]
