"""How the block starts: the data-dependent start of ``distill(data_init=...)`` against the block as built.

usage: python benchmarks/data_init.py [--quick] [--teachers NAME ...] [--seeds 0 1 2 3] [--steps 250]
                                      [--starts as-built shift0 ...] [--threads 1] [--part NAME]

Teachers, frames, crop, held-out videos and evaluation of ``benchmarks/distill_teachers.py``
(``run_one``); every run distils a fresh block with the library's other defaults for ``--steps``
steps, after one of these starts (:data:`STARTS`):

* ``as-built``: the reductions as built (random; ``data_init=False``, the behaviour of 0.13 and earlier);
* ``shiftS``: :meth:`~shortcutify.core.blocks.ShortcutBlock.init_reductions` with ``shift=S`` on
  both reductions (the taps' principal components, each raised by ``S`` standard deviations) on
  the frames ``distill`` itself would use; ``shift2`` was ``distill``'s default start in 0.14;
* ``dec-shift2`` / ``enc-shift2``: ``shift2`` on the decoder tap's reduction alone (``distill``'s
  default start since 0.15) / on the encoder tap's alone. The start that is ``distill``'s default
  (:data:`~shortcutify.core.blocks.START_REDUCTIONS`, :data:`~shortcutify.core.blocks.REDUCTION_SHIFT`)
  is run through ``distill(data_init=True)`` itself, so its rows are the library's own start;
* ``random-shift2``: random orthogonal directions instead of principal components, at the same
  scale, centred and raised by 2 standard deviations as ``shift2`` (does the gain come from the
  components or from ReLU passing what the reduction keeps?);
* ``unit-shift2``: ``shift2`` (both reductions) with unit-norm rows (the plain orthogonal projection onto the
  components) instead of the scale of PyTorch's default initialisation on the taps.

Writes results/data_init[.part-NAME].json after every run; ``report.py`` tabulates the parts
together ("Data-dependent start"). Full sweep (the defaults): the cartoon and colour ResNet
teachers and the line-drawing and blur U-Nets, seeds 0 and 1, 250 steps, every start: about 15 minutes as
two single-threaded shards. ``--quick``: one tiny teacher, a few steps (CI).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import distill_teachers as dt  # noqa: E402
from common import RESULTS, machine, write  # noqa: E402

from shortcutify.core.blocks import REDUCTION_SHIFT, REDUCTIONS, START_REDUCTIONS  # noqa: E402
from shortcutify.core.blocks.principal import PatchMoments, scaled_rows, set_rows_  # noqa: E402
from shortcutify.train.clips import ClipSource  # noqa: E402
from shortcutify.train.start import frame_taps, start_from_frames  # noqa: E402

#: start name -> (shift in standard deviations, directions, the reductions set) (``None``: the reductions as built)
STARTS: dict[str, tuple[float, str, tuple[str, ...]] | None] = {
    "as-built": None,
    "shift0": (0.0, "principal", REDUCTIONS),
    "shift1": (1.0, "principal", REDUCTIONS),
    "shift2": (2.0, "principal", REDUCTIONS),
    "shift3": (3.0, "principal", REDUCTIONS),
    "random-shift2": (2.0, "random", REDUCTIONS),
    "unit-shift2": (2.0, "unit", REDUCTIONS),
    "enc-shift2": (2.0, "principal", ("encoder",)),
    "dec-shift2": (2.0, "principal", ("decoder",)),
}


def is_library_start(start: str) -> bool:
    """Whether ``start`` is what ``distill(data_init=True)`` does with this version's defaults."""
    return STARTS[start] == (REDUCTION_SHIFT, "principal", tuple(START_REDUCTIONS))


DEFAULT_SEEDS = {"resnet-cartoon": [0, 1], "resnet-colour": [0, 1], "unet-lines": [0, 1], "unet-blur": [0, 1]}


@torch.no_grad()
def unit_rows_(conv: torch.nn.Conv2d) -> None:
    """Divide ``conv`` (as ``principal_init_`` set it: rows of one norm) by that norm: unit-norm rows,
    biases in proportion (the same component, centred and shifted alike, at its own scale)."""
    norm = conv.weight.view(conv.out_channels, -1)[0].norm()
    conv.weight.div_(norm)
    conv.bias.div_(norm)


@torch.no_grad()
def random_directions_(conv: torch.nn.Conv2d, moments: PatchMoments, shift: float, generator: torch.Generator) -> None:
    """``conv`` set to random orthogonal directions (as many as it has outputs, at most its input's
    dimension) at ``principal_components``' scale, each output centred and raised by ``shift``
    standard deviations: ``principal_init_`` with random directions in place of the components."""
    mean, cov = moments.mean_and_covariance()
    h = min(conv.out_channels, mean.numel())
    q, _ = torch.linalg.qr(torch.randn(mean.numel(), h, generator=generator, dtype=torch.float64))
    set_rows_(conv, *scaled_rows(q.T, mean, cov, shift))  # [h, D] orthonormal rows, principal_components' scale


def start_fn(start: str, seed: int, crop: int) -> Any:
    """The ``start(sv, clips)`` hook of ``dt.run_one`` for a start other than ``as-built`` and ``distill``'s own
    (:func:`is_library_start`)."""
    shift, directions, reductions = STARTS[start]  # type: ignore[misc]

    def run(sv: Any, clips: list[Any]) -> None:
        source = ClipSource(clips)
        kw = {"seed": seed, "crop": (crop, crop), "device": torch.device("cpu")}
        gap = sv.policy.interval - 1
        if directions in ("principal", "unit"):
            start_from_frames(sv, source, gap, shift=shift, reductions=reductions, **kw)
            if directions == "unit":
                unit_rows_(sv.block.reduce_enc)
                unit_rows_(sv.block.reduce_dec)
            return
        block = sv.block
        enc, dec = PatchMoments(block.reduce_enc), PatchMoments(block.reduce_dec)
        for t in frame_taps(sv, source, gap, **kw):
            a_in, f_in = block.reduction_inputs(t.enc, t.dec)
            enc.update(a_in)
            dec.update(f_in)
        g = torch.Generator().manual_seed(seed)
        random_directions_(block.reduce_enc, enc, shift, g)
        random_directions_(block.reduce_dec, dec, shift, g)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--teachers", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: per teacher, DEFAULT_SEEDS")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--starts", nargs="+", default=list(STARTS), choices=list(STARTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--part", default=None, help="write results/data_init.part-PART.json (shards side by side)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teachers = dt.QUICK_TEACHERS if args.quick else dt.TEACHERS
    names = args.teachers or (["unet-colour-quick"] if args.quick else list(DEFAULT_SEEDS))
    unknown = sorted(set(names) - set(teachers))
    if unknown:
        parser.error(f"unknown teachers {unknown}; choose from {sorted(teachers)}")
    steps = args.steps or (10 if args.quick else 250)
    base = "data_init_quick" if args.quick else "data_init"
    tag = base if args.part is None else f"{base}.part-{args.part}"
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for name in names:
        spec = teachers[name]
        for seed in args.seeds or ([0] if args.quick else DEFAULT_SEEDS.get(name, [0, 1])):
            for start in args.starts:
                own = is_library_start(start)  # distill's own start: run through distill
                variant = "defaults" if own else "no-data-init"
                hook = None if own or start == "as-built" else start_fn(start, seed, min(dt.CROP, *spec.size))
                row = dt.run_one(name, spec, variant, seed, steps, args.quick, start=hook)
                row["start"] = start
                rows.append(row)
                g = {v: x["psnr"] - x["psnr_repeat"] for v, x in row["videos"].items()}
                print(f"{name:16s} seed {seed} {start:14s} {steps} steps: " + ", ".join(f"{v} {x:+.2f}" for v, x in g.items()), flush=True)
                write(tag, {"machine": machine(), "steps": steps, "starts": {k: v for k, v in STARTS.items()}, "runs": rows})
    print(f"{time.time() - t0:.0f} s; wrote {RESULTS / (tag + '.json')}")


def load_runs() -> list[dict[str, Any]]:
    """Every full (not quick) run, all parts."""
    out: list[dict[str, Any]] = []
    for p in [RESULTS / "data_init.json", *sorted(RESULTS.glob("data_init.part-*.json"))]:
        if p.is_file():
            out += json.loads(p.read_text())["runs"]
    return out


if __name__ == "__main__":
    main()
