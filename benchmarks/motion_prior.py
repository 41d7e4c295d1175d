"""The motion prior: how good is the untrained block with each estimator? (issue 12, item 3)

usage: python benchmarks/motion_prior.py [--teachers NAME ...] [--threads 2] [--quick]

For every teacher of ``distill_teachers.py`` and every estimator below, an untrained block
(heads at zero: it predicts the reference feature warped by the prior) is evaluated at
keyframe interval 3, PSNR of the shortcut frames vs the teacher minus that of repeating the
keyframe, on two frame sets:

* **train**: the frames the blocks are distilled on (bikes' training frames and
  bigbuckbunny's, 120 each): where :data:`shortcutify.ops.MOTION_PRIORS` was chosen;
* **held-out**: bikes 190-249 and carphone, as in ``distill_teachers.py`` (reported only).

Estimators: ``none`` (no prior: exactly repeat), the library's named ones
(:data:`~shortcutify.ops.MOTION_PRIORS`: ``local``, ``regional``; and
:data:`~shortcutify.core.blocks.REDUCED_PRIORS`: ``local-reduced``, ``local`` on the block's own
reduced encoder features, as built: random reductions) and variations of
``local`` that each change one setting (registered in ``MOTION_PRIORS`` by this script only,
as ``block_variants.py`` registers layouts): they show what each setting does.

Writes results/motion_prior[_quick].json; ``report.py`` tabulates it. ``--quick``: the
quick teachers of ``distill_teachers.py``, the held-out frames only, three estimators (CI).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write  # noqa: E402
from distill_teachers import QUICK_TEACHERS, TEACHERS, clips_of, teacher_and_inputs, weights_id  # noqa: E402

from shortcutify import FixedInterval, evaluate, shortcutify  # noqa: E402
from shortcutify.core.blocks import REDUCED_PRIORS  # noqa: E402
from shortcutify.core.blocks.sizing import block_macs  # noqa: E402
from shortcutify.demo.teachers import read_split  # noqa: E402
from shortcutify.ops import MOTION_PRIORS  # noqa: E402

#: variations of the "local" estimator, one setting changed each
VARIATIONS: dict[str, dict[str, Any]] = {
    "local, radius 8": {"radius": 8},
    "local, temperature 0.02": {"temperature": 0.02},
    "local, window 2": {"window": 2},
    "local, no window": {"window": 0},
    "local, no margin": {"margin": 0.0},
}
QUICK_ESTIMATORS = ["none", "local", "regional"]


def frame_sets(size: tuple[int, int], quick: bool) -> dict[str, dict[str, torch.Tensor]]:
    held = {"bikes": read_split("bikes", "heldout", size, max_frames=24 if quick else 60),
            "carphone": read_split("carphone_pristine", "heldout", size, max_frames=24 if quick else 60)}
    if quick:
        return {"held-out": held}
    train = {"bikes": read_split("bikes", "train", size, max_frames=120),
             "bigbuckbunny": read_split("bigbuckbunny", "train", size, max_frames=120)}
    return {"train": train, "held-out": held}


def gain(sv: Any, frames: torch.Tensor, to_inputs: Any) -> dict[str, float]:
    s = evaluate(sv, clips_of(frames, to_inputs)).summary()
    return {"gain": s["psnr"] - s["psnr_repeat"], "psnr": s["psnr"], "psnr_repeat": s["psnr_repeat"]}


def settings_of(prior: str) -> dict[str, Any]:
    """The estimator's settings (``correlation_flow``'s), with ``"input": "reduced"`` for a prior on the
    block's reduced encoder features."""
    if prior in REDUCED_PRIORS:
        return {**MOTION_PRIORS[REDUCED_PRIORS[prior]], "input": "reduced"}
    return dict(MOTION_PRIORS[prior])


def prior_macs(sv: Any) -> int:
    """The prior's MACs per shortcut frame: the block's with it less the same block's without it."""
    b, c = sv.block, sv.config

    def macs(prior: str | None) -> int:
        return block_macs(b.resolution, b.width, (1, *c.enc_shape), (1, *c.dec_shape), motion_prior=prior)

    return macs(b.motion_prior) - macs(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teachers", nargs="+", default=None, choices=sorted({**TEACHERS, **QUICK_TEACHERS}))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, change in VARIATIONS.items():
        MOTION_PRIORS[name] = {**MOTION_PRIORS["local"], **change}
    estimators = QUICK_ESTIMATORS if args.quick else ["none", *MOTION_PRIORS, *REDUCED_PRIORS]
    teachers = QUICK_TEACHERS if args.quick else TEACHERS
    names = args.teachers or list(teachers)
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for name in names:
        spec = teachers[name]
        gen, to_inputs = teacher_and_inputs(name, spec)
        sets = frame_sets(spec.size, args.quick)
        example = to_inputs(sets["held-out"]["bikes"][:1])
        for estimator in estimators:
            prior = None if estimator == "none" else estimator
            torch.manual_seed(0)
            sv = shortcutify(gen, *spec.taps(gen), example, policy=FixedInterval(3), motion_prior=prior)
            row = {"teacher": name, "weights": weights_id(gen), "estimator": estimator,
                   "block": {"resolution": sv.block.resolution, "width": sv.block.width},
                   "settings": None if prior is None else settings_of(prior),
                   "prior_macs": prior_macs(sv),
                   "sets": {}}
            for split, videos in sets.items():
                row["sets"][split] = {video: gain(sv, frames, to_inputs) for video, frames in videos.items()}
            rows.append(row)
            print(f"{name:16s} {estimator:26s}", "  ".join(
                f"{split}/{video} {r['gain']:+.2f}" for split, vids in row["sets"].items() for video, r in vids.items()), flush=True)
    out = write("motion_prior_quick" if args.quick else "motion_prior",
                {"machine": machine(), "interval": 3, "estimators": {k: None if k == "none" else settings_of(k) for k in estimators}, "runs": rows})
    print(f"wrote {out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
