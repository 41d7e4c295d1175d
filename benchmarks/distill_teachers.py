"""Distillation over many teachers: does ``distill(sv, clips)`` give a good block on any of them?

usage: python benchmarks/distill_teachers.py [--quick] [--variant defaults] [--steps 0 250 500 1000 2000]
                                             [--seeds 0 1] [--teachers NAME ...] [--threads 2] [--base NAME] [--part P]
       python benchmarks/distill_teachers.py --time-blocks --variant defaults full-half-width-min8 [--threads 2]

The yardstick for distillation defaults. Teachers of three families and several tasks and
sizes: the two bundled ones (RecycleGAN-style ResNet "cartoon", vid2vid-style label+previous
frame), and ResNet and U-Net generators trained here, at run time, to mimic image operators
(colour twist, sharpening, blur, line drawing) at two frame sizes (cached in
``results/teachers/``; trained on the training frames, a few hundred steps). For every teacher,
seed and step count, a fresh block is distilled on the training frames with
``distill(sv, clips, steps=S, seed=seed, crop=64, progress=False)`` and the variant's settings
(``defaults``: nothing else; the named variants in :data:`VARIANTS` set what they say; in the
tables a run whose recorded settings equal this version's defaults counts as ``defaults``), then
evaluated on held-out video at keyframe interval 3: bikes frames 190-249 (fast pans) and
carphone (a calm talking head), PSNR/SSIM of shortcut frames vs the teacher, next to repeating
the keyframe. Step counts are separate runs (the learning rate decays over a run's length).
``steps`` 0 is the untrained block. ``crop=64`` is the one setting every variant shares (the
frames are 68x160 and 96x224).

Writes results/distill_teachers[_quick].json after every run (``--resume`` skips runs already
there); ``report.py`` tabulates it. Full run: all teachers, seeds 0 1, steps 0 250 500 1000 2000,
about 90 minutes on 2 cores. ``--quick``: two tiny teachers, a few steps (CI). ``--time-blocks``:
the CPU time of a shortcut frame of every teacher with each variant's block, side by side
(``results/distill_teachers_speed.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, table, write  # noqa: E402

from shortcutify import FixedInterval, distill, evaluate, shortcutify  # noqa: E402
from shortcutify import __version__ as shortcutify_version  # noqa: E402
from shortcutify.core.blocks import PRIOR_LEFT_OUT_EVERY, START_REDUCTIONS  # noqa: E402
from shortcutify.demo.cli import task_inputs  # noqa: E402
from shortcutify.demo.models import ResnetGenerator, resnet_taps, vid2vid_taps  # noqa: E402
from shortcutify.demo.teachers import cartoon, load_teacher, read_split  # noqa: E402

TEACHER_DIR = RESULTS / "teachers"
CROP = 64


# ----------------------------------------------------------------------------- operators
def _gauss(x: Tensor, sigma: float) -> Tensor:
    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).to(x)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


_TWIST = torch.tensor([[0.5, 0.8, -0.2], [-0.3, 0.6, 0.7], [0.9, -0.4, 0.5]])


def colour(x: Tensor) -> Tensor:
    """A colour twist: channel mixing, a contrast curve."""
    return torch.tanh(1.5 * torch.einsum("ij,bjhw->bihw", _TWIST.to(x), x) + 0.1)


def sharpen(x: Tensor) -> Tensor:
    """Unsharp masking (strong), clipped to [-1, 1]."""
    return (x + 2.0 * (x - _gauss(x, 1.5))).clamp(-1, 1)


def blur(x: Tensor) -> Tensor:
    """A wide Gaussian blur with a slight warm tint."""
    return (_gauss(x, 2.5) * torch.tensor([1.0, 0.9, 0.75]).view(1, 3, 1, 1).to(x)).clamp(-1, 1)


def lines(x: Tensor) -> Tensor:
    """A line drawing: dark Sobel edges of the smoothed luminance on paper white."""
    g = F.pad(_gauss(x, 1.0).mean(1, keepdim=True), (1, 1, 1, 1), mode="reflect")
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).to(x)
    e = (F.conv2d(g, k.view(1, 1, 3, 3)).square() + F.conv2d(g, k.t().reshape(1, 1, 3, 3)).square()).sqrt()
    return (1 - 2 * (3 * e).clamp(0, 1)).expand(-1, 3, -1, -1).contiguous()


OPERATORS: dict[str, Callable[[Tensor], Tensor]] = {"colour": colour, "sharpen": sharpen, "blur": blur, "lines": lines, "cartoon": cartoon}


# ----------------------------------------------------------------------------- a U-Net family
class SmallUNet(nn.Module):
    """A U-Net: two stride-2 levels with skip connections (concatenated), ``[B, 3, H, W] -> [B, 3, H, W]``, H, W % 4 == 0."""

    def __init__(self, ngf: int = 16) -> None:
        super().__init__()

        def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.InstanceNorm2d(cout), nn.ReLU(True))

        self.inc = conv(3, ngf)
        self.down1 = conv(ngf, 2 * ngf, 2)
        self.down2 = conv(2 * ngf, 4 * ngf, 2)
        self.mid = nn.Sequential(conv(4 * ngf, 4 * ngf), conv(4 * ngf, 4 * ngf))
        self.up2 = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="bilinear"), conv(4 * ngf, 2 * ngf))
        self.dec2 = conv(4 * ngf, 2 * ngf)
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="bilinear"), conv(2 * ngf, ngf))
        self.out = nn.Sequential(nn.Conv2d(2 * ngf, 3, 3, padding=1), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        x0 = self.inc(x)
        x1 = self.down1(x0)
        h = self.mid(self.down2(x1))
        h = self.dec2(torch.cat([self.up2(h), x1], 1))
        return self.out(torch.cat([self.up1(h), x0], 1))


# ----------------------------------------------------------------------------- teachers
@dataclass(frozen=True)
class Teacher:
    """One teacher of the benchmark: a bundled one, or a family trained here on an operator."""

    family: str  # "resnet", "unet", "vid2vid"
    operator: str  # a key of OPERATORS, or "vid2vid" (frame from labels + previous frame)
    size: tuple[int, int]
    bundled: str | None = None  # name of a bundled teacher (shortcutify.demo.teachers)
    ngf: int = 16
    n_blocks: int = 3
    train_steps: int = 400

    def build(self) -> nn.Module:
        return ResnetGenerator(ngf=self.ngf, n_blocks=self.n_blocks) if self.family == "resnet" else SmallUNet(self.ngf)

    def taps(self, gen: nn.Module) -> tuple[str, str]:
        if self.family == "vid2vid":
            return vid2vid_taps(gen)  # type: ignore[arg-type]
        if self.family == "unet":
            return "down1", "up1"
        return resnet_taps(gen)  # type: ignore[arg-type]


TEACHERS: dict[str, Teacher] = {
    "resnet-cartoon": Teacher("resnet", "cartoon", (68, 160), bundled="cartoon-tiny"),
    "vid2vid": Teacher("vid2vid", "vid2vid", (68, 160), bundled="vid2vid-tiny"),
    "resnet-colour": Teacher("resnet", "colour", (68, 160)),
    "resnet-sharpen": Teacher("resnet", "sharpen", (96, 224)),
    "unet-lines": Teacher("unet", "lines", (68, 160)),
    "unet-blur": Teacher("unet", "blur", (96, 224)),
}
QUICK_TEACHERS: dict[str, Teacher] = {
    "resnet-cartoon": TEACHERS["resnet-cartoon"],
    "unet-colour-quick": Teacher("unet", "colour", (32, 64), ngf=8, train_steps=30),
}


def train_teacher(name: str, spec: Teacher, seed: int = 0) -> nn.Module:
    """Train ``spec`` on the training frames (cached by name); eval mode, float32.

    Reproducible: the seed fixes the initial weights and the crops, and training runs on one
    thread (the same weights on every run of this torch build; runs made before 2026-11-27 did
    not seed the initial weights, so each fresh checkout trained other teachers: the tables
    keep them apart by weights).
    """
    path = TEACHER_DIR / f"{name}.pt"
    torch.manual_seed(seed)  # before building: the initial weights are part of what the seed fixes
    gen = spec.build()
    if path.is_file():
        gen.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return gen.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # sums in another order give other weights: one thread, whatever the run's threads
    try:
        _fit(gen, spec, seed)
    finally:
        torch.set_num_threads(threads)
    TEACHER_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(gen.state_dict(), path)
    return gen.eval()


def _fit(gen: nn.Module, spec: Teacher, seed: int) -> None:
    """Train ``gen`` in place to mimic ``spec``'s operator on random crops of the training frames."""
    frames = [read_split(v, "train", spec.size) for v in ("bikes", "bigbuckbunny")]
    op = OPERATORS[spec.operator]
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / spec.train_steps)
    g = torch.Generator().manual_seed(seed)
    crop = min(CROP, *spec.size)
    for _ in range(spec.train_steps):
        batch = []
        for _ in range(4):
            clip = frames[int(torch.randint(len(frames), (1,), generator=g))]
            t = int(torch.randint(clip.shape[0], (1,), generator=g))
            top = int(torch.randint(clip.shape[-2] - crop + 1, (1,), generator=g))
            left = int(torch.randint(clip.shape[-1] - crop + 1, (1,), generator=g))
            batch.append(clip[t, :, top : top + crop, left : left + crop])
        x = torch.stack(batch)
        loss = F.l1_loss(gen(x), op(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def weights_id(gen: nn.Module) -> str:
    """A short checksum of a teacher's weights (rows of different weights under one name stay apart)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(gen.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:10]


def teacher_and_inputs(name: str, spec: Teacher) -> tuple[nn.Module, Callable[[Tensor], Any]]:
    """The teacher and the function that turns real frames ``[T, 3, H, W]`` into its inputs."""
    if spec.bundled is not None:
        gen, labeller = load_teacher(spec.bundled)
        return gen, lambda frames: task_inputs(frames, labeller)
    return train_teacher(name, spec), lambda frames: frames


# ----------------------------------------------------------------------------- variants
#: named distillation settings compared on this benchmark (``defaults``: the library's own)
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "no-data-init": {"data_init": False},  # the defaults of 0.13 and earlier: the reductions as built (random)
    "half": {"resolution": "half"},  # the default layout of 0.10 and earlier
    "paper": {"lr": 2e-4, "weights": {"feature": 5.0, "alignment": 5.0, "output": 10.0}},
    "lr1e-3-feature1": {"lr": 1e-3, "weights": {"feature": 1.0, "alignment": 0.0, "output": 10.0}},
    "lr2e-3-feature1": {"lr": 2e-3, "weights": {"feature": 1.0, "alignment": 0.0, "output": 10.0}},
    "lr4e-3-feature1": {"lr": 4e-3, "weights": {"feature": 1.0, "alignment": 0.0, "output": 10.0}},
    "motion-prior": {"motion_prior": "regional"},  # (the estimator of 0.5 to 0.9, then motion_prior=True)
    "motion-prior-local": {"motion_prior": "local"},
    "motion-prior-reduced": {"motion_prior": "local-reduced"},  # "local" on the block's reduced encoder features
    # the paper's layout at half its automatic width (about the default layout's CPU time: "Block ablation")
    "full-half-width": {"resolution": "full", "width_scale": 0.5},
    # the same, but no narrower than 8 (where half the automatic width is less than 8, 8 or the automatic width)
    "full-half-width-min8": {"resolution": "full", "width_scale": 0.5, "width_floor": 8},
}
BUILD_KEYS = ("motion_prior", "resolution", "width_scale", "width_floor")


def effective(settings: dict[str, Any]) -> dict[str, Any]:
    """The distillation settings a run used: ``distill``'s defaults updated by the variant's."""
    import inspect
    from dataclasses import asdict

    from shortcutify.train.losses import LossWeights

    sig = inspect.signature(distill).parameters
    out = {k: sig[k].default for k in ("lr", "betas", "batch_size", "flip", "data_init")}
    out["data_init"] = True if out["data_init"] == "auto" else out["data_init"]  # (every run starts from an untrained block)
    out["weights"] = asdict(LossWeights.coerce(settings.get("weights")))
    out.update({k: v for k, v in settings.items() if k != "weights"})
    return out


def clips_of(frames: Tensor, to_inputs: Callable[[Tensor], Any], length: int = 12) -> list[Any]:
    return [to_inputs(frames[i : i + length]) for i in range(0, frames.shape[0] - length + 1, length)]


def wrap(gen: nn.Module, spec: Teacher, variant: str, example: Any) -> Any:
    """``shortcutify`` on the teacher with the variant's build settings (interval 3)."""
    build = {k: v for k, v in VARIANTS[variant].items() if k in BUILD_KEYS}
    scale, floor = build.pop("width_scale", None), build.pop("width_floor", 1)
    if scale is not None:  # a fraction of the automatic width of that layout, at least min(floor, automatic)
        auto = shortcutify(gen, *spec.taps(gen), example, policy=FixedInterval(3), **build).block.width
        build["width"] = max(1, round(auto * scale), min(floor, auto))
    return shortcutify(gen, *spec.taps(gen), example, policy=FixedInterval(3), **build)


def time_blocks(names: list[str], variants: list[str], repeats: int = 15) -> dict[str, Any]:
    """CPU time of a shortcut frame per teacher and variant (block untrained: the time does not depend
    on the weights), the teacher alongside, all of one teacher's paths interleaved in one process, on
    one held-out bikes frame at the teacher's size; medians in ms."""
    from shortcutify.demo.timing import path_calls, time_calls

    out: dict[str, Any] = {}
    for name in names:
        spec = TEACHERS[name]
        gen, to_inputs = teacher_and_inputs(name, spec)
        frames = read_split("bikes", "heldout", spec.size, max_frames=2)
        x = to_inputs(frames[:1])
        calls: dict[str, Any] = {}
        blocks: dict[str, Any] = {}
        for variant in variants:
            with torch.no_grad():
                sv = wrap(gen, spec, variant, x)
            paths = path_calls(sv, x)
            calls["teacher"] = paths["teacher"]
            calls[variant] = paths["shortcut"]
            blocks[variant] = {"resolution": sv.block.resolution, "width": sv.block.width, "block_macs": sv.cost().block.macs}
        with torch.no_grad():
            t = time_calls(calls, repeats=repeats, warmup=3)
        out[name] = {"size": list(spec.size), "teacher_ms": t["teacher"] * 1e3,
                     "variants": {v: {**blocks[v], "shortcut_ms": t[v] * 1e3} for v in variants}}
        print(name, f"teacher {t['teacher'] * 1e3:.2f} ms", *(f"{v} {t[v] * 1e3:.2f} ms (w{blocks[v]['width']})" for v in variants), flush=True)
    return out


def run_one(name: str, spec: Teacher, variant: str, seed: int, steps: int, quick: bool,
            start: Callable[[Any, list[Any]], None] | None = None) -> dict[str, Any]:
    """One distillation and its evaluation (a row of the results). ``start(sv, clips)``: run before
    ``distill`` (counted in its time) on a run of more than 0 steps (``benchmarks/data_init.py``'s starts)."""
    gen, to_inputs = teacher_and_inputs(name, spec)
    size = spec.size
    n_val = 24 if quick else 60
    train = [read_split(v, "train", size) for v in ("bikes", "bigbuckbunny")]
    clips = [c for frames in train for c in clips_of(frames, to_inputs)]
    heldout = {
        "bikes": read_split("bikes", "heldout", size, max_frames=n_val),
        "carphone": read_split("carphone_pristine", "heldout", size, max_frames=n_val),
    }
    settings = {k: v for k, v in VARIANTS[variant].items() if k not in BUILD_KEYS}
    torch.manual_seed(seed)
    example = clips[0]
    example = tuple(x[:1] for x in example) if isinstance(example, tuple) else example[:1]
    sv = wrap(gen, spec, variant, example)
    wall, cpu = time.perf_counter(), time.process_time()
    if steps and start is not None:
        start(sv, clips)
    if steps:
        distill(sv, clips, steps=steps, seed=seed, crop=min(CROP, *size), progress=False, **settings)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row: dict[str, Any] = {"teacher": name, "family": spec.family, "operator": spec.operator, "size": list(size),
                           "variant": variant, "settings": effective(VARIANTS[variant]), "seed": seed, "steps": steps,
                           "version": shortcutify_version, "start": library_start(effective(VARIANTS[variant])),
                           **({"prior_left_out_every": PRIOR_LEFT_OUT_EVERY} if sv.block.motion_prior else {}),
                           "weights": weights_id(gen), "block": {"resolution": sv.block.resolution, "width": sv.block.width}, "seconds": wall, "cpu_seconds": cpu, "threads": torch.get_num_threads(), "videos": {}}
    for video, frames in heldout.items():
        s = evaluate(sv, clips_of(frames, to_inputs)).summary()
        row["videos"][video] = {k: s[k] for k in ("psnr", "psnr_repeat", "ssim", "ssim_repeat")}
    return row


def all_runs(base: str = "distill_teachers") -> list[dict[str, Any]]:
    """Every run of ``results/<base>.json`` and of its parts (``<base>.part-*.json``), later files last,
    replaced runs included."""
    return [r for p in [RESULTS / f"{base}.json", *sorted(RESULTS.glob(f"{base}.part-*.json"))] if p.is_file()
            for r in json.loads(p.read_text())["runs"]]


def load_runs(base: str = "distill_teachers") -> list[dict[str, Any]]:
    """:func:`all_runs`, where a run of the same :func:`key` in a later file replaces the earlier one (a
    rerun with a newer version of the library: its rows record the version)."""
    return last_per(all_runs(base), key)


def last_per(rows: list[dict[str, Any]], by: Callable[[dict[str, Any]], tuple]) -> list[dict[str, Any]]:
    """``rows`` with only the last row of each ``by(row)``, in the order of those last rows."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        out.pop(by(r), None)
        out[by(r)] = r
    return list(out.values())


def key(r: dict[str, Any]) -> tuple:
    """What makes runs the same experiment: teacher, weights, variant, seed, steps and the start
    (:func:`start_of`): a rerun of the variant ``defaults`` with 0.15 does not replace the runs of
    0.13's or 0.14's defaults, other experiments."""
    return (r["teacher"], r.get("weights"), r["variant"], r["seed"], r["steps"], start_of(r))


def library_start(settings: dict[str, Any]) -> str:
    """The start this version of ``distill`` makes with ``settings`` (:func:`effective`'s): ``"as-built"``
    without ``data_init``, else the reductions it sets, joined by ``+`` (``"decoder"`` since 0.15)."""
    return "+".join(START_REDUCTIONS) if settings.get("data_init", False) else "as-built"


def start_of(r: dict[str, Any]) -> str:
    """The start a run made, as :func:`library_start` names it: recorded since 0.15; runs of 0.14 with
    ``data_init`` set both reductions (``"encoder+decoder"``), runs before 0.14 none (``"as-built"``)."""
    if not r["settings"].get("data_init", False):
        return "as-built"
    return r.get("start", "encoder+decoder")


def default_settings(r: dict[str, Any], variant: str = "defaults") -> bool:
    """Whether a run used this library's default distillation settings (or those of the named ``variant``),
    apart from the block it was given (compared as recorded, so runs of older distillation defaults do not
    count; runs recorded before ``data_init`` existed, 0.13 and earlier, started from the block as built)."""
    settings = {"data_init": False, **{k: v for k, v in r["settings"].items() if k not in BUILD_KEYS}}
    want = effective({k: v for k, v in VARIANTS[variant].items() if k not in BUILD_KEYS})
    return json.loads(json.dumps(settings)) == json.loads(json.dumps(want)) and not r["settings"].get("motion_prior")


def run_block(r: dict[str, Any]) -> tuple[str, int | None]:
    """``(layout, width)`` of the block a run distilled, as recorded. Runs from before blocks were recorded
    that have no layout settings used the only default layout then, ``half`` at its automatic width (not
    recorded: ``None``)."""
    if "block" in r:
        return r["block"]["resolution"], r["block"]["width"]
    scaled = "width_scale" in r["settings"]  # a fraction of the automatic width, not recorded: matches no width
    return r["settings"].get("resolution", "half"), -1 if scaled else None


def default_blocks() -> dict[str, tuple[str, int]]:
    """Per teacher, ``(layout, width)`` of the block the library's defaults build for it, as the last
    ``--time-blocks`` run recorded it (variant ``defaults``; rerun it when the defaults change)."""
    p = RESULTS / "distill_teachers_speed.json"
    if not p.is_file():
        return {}
    teachers = json.loads(p.read_text())["teachers"]
    return {n: (t["variants"]["defaults"]["resolution"], t["variants"]["defaults"]["width"])
            for n, t in teachers.items() if "defaults" in t["variants"]}


def is_default(r: dict[str, Any], blocks: dict[str, tuple[str, int]] | None = None, variant: str = "defaults") -> bool:
    """Whether a run is what the library's defaults do: its distillation settings are the defaults
    (:func:`default_settings`) and its block is the one the defaults build for that teacher
    (:func:`default_blocks`; a run of a named variant that gives both counts). Teachers without a
    recorded default block (the quick ones): runs without layout settings count. ``variant``: the same
    question for a named variant of distillation settings on the default block (``no-data-init``)."""
    if not default_settings(r, variant):
        return False
    want = (default_blocks() if blocks is None else blocks).get(r["teacher"])
    layout, width = run_block(r)
    if want is None:
        return not any(k in r["settings"] for k in BUILD_KEYS)
    return layout == want[0] and width in (want[1], None)


def label(r: dict[str, Any], blocks: dict[str, tuple[str, int]] | None = None) -> str:
    """The name a run is shown under: ``defaults`` (:func:`is_default`, with this version's start),
    ``start-encoder+decoder`` for runs of 0.14's defaults (the start set both reductions), ``no-data-init`` for
    runs of the defaults of 0.11 to 0.13 (the block as built, no data-dependent start), ``half`` for runs of the
    defaults of 0.10 and earlier (the half layout) where the defaults now build another block, else its variant."""
    if is_default(r, blocks):
        start = start_of(r)
        return "defaults" if start == library_start({"data_init": True}) else f"start-{start}"
    if is_default(r, blocks, "no-data-init"):  # the defaults of 0.11 to 0.13, or the variant
        return "no-data-init"
    return "half" if r["variant"] == "defaults" else r["variant"]


def latest_per_label(rows: list[dict[str, Any]], blocks: dict[str, tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """``rows`` with one run per teacher, weights, :func:`label`, seed and step count: the last one (runs of
    different variants can be the same experiment, e.g. a variant whose settings became the defaults and a
    later rerun of ``defaults``: the rerun replaces it instead of counting as one more seed)."""
    blocks = default_blocks() if blocks is None else blocks
    return last_per(rows, lambda r: (r["teacher"], r.get("weights"), label(r, blocks), r["seed"], r["steps"]))


def summarise(rows: list[dict[str, Any]]) -> str:
    """Per teacher, variant and step count: mean gain over repeat (dB; min..max over seeds) per video."""
    rows = latest_per_label(rows)
    ids: dict[str, set[str]] = {}
    for r in rows:
        ids.setdefault(r["teacher"], set()).add(r.get("weights", "?"))
    groups: dict[tuple, list[dict[str, Any]]] = {}
    blocks = default_blocks()
    for r in rows:  # a teacher retrained under its name is shown as name@weights; runs that are the defaults as "defaults"
        name = r["teacher"] if len(ids[r["teacher"]]) == 1 else f"{r['teacher']}@{r.get('weights', 'earlier')}"
        groups.setdefault((name, label(r, blocks), r["steps"]), []).append(r)
    out = []
    for (teacher, variant, steps), rs in sorted(groups.items()):
        cells = []
        for video in ("bikes", "carphone"):
            gains = [r["videos"][video]["psnr"] - r["videos"][video]["psnr_repeat"] for r in rs]
            cells.append(f"{sum(gains) / len(gains):+.2f} ({min(gains):+.2f}..{max(gains):+.2f})")
        repeat = [f"{rs[0]['videos'][v]['psnr_repeat']:.2f}" for v in ("bikes", "carphone")]
        out.append([teacher, variant, steps, len(rs), *cells, " / ".join(repeat), sum(r["cpu_seconds"] for r in rs) / len(rs)])
    return table(["teacher", "variant", "steps", "seeds", "bikes gain dB", "carphone gain dB", "repeat dB (b / c)", "CPU s"], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variant", nargs="+", default=["defaults"], choices=sorted(VARIANTS))
    parser.add_argument("--steps", nargs="+", type=int, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--teachers", nargs="+", default=None)
    parser.add_argument("--resume", action="store_true", help="keep (and skip) the runs already in the results files")
    parser.add_argument("--part", default=None,
                        help="write results/distill_teachers.part-PART.json instead (to run shards side by side, e.g. one "
                             "single-threaded process per core); report.py merges the parts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--base", default=None,
                        help="write results/BASE.json (BASE.part-PART.json) instead of distill_teachers: runs kept out of the "
                             "main tables, e.g. on a machine whose run-time teachers train to other weights (report.py shows "
                             "reduced_prior's in \"Motion prior\")")
    parser.add_argument("--time-blocks", action="store_true",
                        help="only time a shortcut frame of each teacher with each --variant's block (and the teacher), "
                             "side by side; writes results/distill_teachers_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teachers = QUICK_TEACHERS if args.quick else TEACHERS
    names = args.teachers or list(teachers)
    unknown = sorted(set(names) - set(teachers))
    if unknown:
        parser.error(f"unknown teachers {unknown}; choose from {sorted(teachers)}")
    if args.time_blocks:
        if args.quick:
            parser.error("--time-blocks times the full benchmark's teachers; leave out --quick")
        from shortcutify import __version__

        timed = time_blocks(names, args.variant, repeats=15)
        payload = {'machine': machine(), 'version': __version__, 'repeats': 15, 'teachers': timed}
        print(f"wrote {write('distill_teachers_speed', payload)}")
        return
    steps = args.steps or ([0, 20] if args.quick else [0, 250, 500, 1000, 2000])
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    base = args.base or ("distill_teachers_quick" if args.quick else "distill_teachers")
    tag = base if args.part is None else f"{base}.part-{args.part}"
    path = RESULTS / f"{tag}.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text())["runs"] if args.resume and path.is_file() else []
    done = {key(r) for r in rows}
    if args.resume:
        done |= {key(r) for r in load_runs(base)}
    t0 = time.time()
    for name in names:
        wid = weights_id(teacher_and_inputs(name, teachers[name])[0])  # trains it first if needed
        for variant in args.variant:
            for seed in seeds:
                for s in steps:
                    if (name, wid, variant, seed, s, bool(effective(VARIANTS[variant])["data_init"])) in done:
                        continue
                    row = run_one(name, teachers[name], variant, seed, s, args.quick)
                    rows.append(row)
                    b, c = row["videos"]["bikes"], row["videos"]["carphone"]
                    print(f"{name:16s} {variant:22s} seed {seed} steps {s:5d}: bikes {b['psnr']:.2f} (repeat {b['psnr_repeat']:.2f}) "
                          f"carphone {c['psnr']:.2f} (repeat {c['psnr_repeat']:.2f})  {row['cpu_seconds']:.0f} CPU s", flush=True)
                    write(tag, {"machine": machine(), "crop": CROP, "interval": 3, "runs": rows})
    print(f"\n{summarise(load_runs(base) if args.part else rows)}\n\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
