"""Quality benchmark on held-out real video: Shortcut-V2V against baselines of equal or lower cost.

usage: python benchmarks/quality.py [--quick] [--steps N] [--resolution auto|half|full] [--width W] [--no-student]

Teacher: the cartoon teacher trained here (RecycleGAN-style ResNet; --quick: the tiny one).
Held-out frames: the end of bikes.mp4 and carphone (never used to train anything).
Methods, all measured on the same frames against the teacher's output:

* Shortcut-V2V at α ∈ {2, 3, 5} (one block, distilled at α = 5 so that it has seen gaps 1..4);
* (i) repeat the keyframe's output on the frames in between;
* (ii) cache: reuse the keyframe's decoder-tap feature without alignment (runs the layers
  before the encoder tap and after the decoder tap; an untrained block is exactly this);
* (iii) a slim student: the same architecture with fewer channels, distilled frame by frame
  from the teacher (L1 on outputs, same frames, same number of steps), with the largest
  width whose MACs do not exceed the shortcut path's.

Reports mean PSNR/SSIM of the non-keyframes (all frames for the student, which has no
keyframes), the temporal error mean |Δ output − Δ teacher output| over all consecutive
frames, and the amortised MACs per frame; writes results/quality*.json and a
quality-vs-MACs plot.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, cartoon_preset, machine, table, write  # noqa: E402

from shortcutify import FixedInterval, __version__, distill, shortcutify  # noqa: E402
from shortcutify.core.blocks import START_REDUCTIONS  # noqa: E402
from shortcutify.core.cost import count_macs  # noqa: E402
from shortcutify.train.evaluate import output_image  # noqa: E402
from shortcutify.train.metrics import psnr, ssim, temporal_error  # noqa: E402
from shortcutify.demo.models import ResnetGenerator, resnet_taps  # noqa: E402
from shortcutify.demo.teachers import SPECS, load_teacher, read_split  # noqa: E402
from shortcutify.demo.video import read_video, sample_video  # noqa: E402

ALPHAS = (2, 3, 5)


@torch.no_grad()
def stream(fn, frames: torch.Tensor) -> torch.Tensor:
    return torch.cat([output_image(fn(x[None])) for x in frames])


def scores(out: torch.Tensor, ref: torch.Tensor, mask: list[bool]) -> dict[str, float]:
    p, s = psnr(out, ref), ssim(out, ref)
    sel = torch.tensor(mask)
    return {"psnr": float(p[sel].mean()), "ssim": float(s[sel].mean()), "temporal": temporal_error(out, ref)}


def train_student(ngf: int, teacher, clips, steps: int, crop: int, n_blocks: int) -> ResnetGenerator:
    torch.manual_seed(0)
    student = ResnetGenerator(ngf=ngf, n_blocks=n_blocks)
    opt = torch.optim.Adam(student.parameters(), lr=2e-3, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    g = torch.Generator().manual_seed(0)
    frames = torch.cat(clips)
    for _ in range(steps):
        idx = torch.randint(frames.shape[0], (4,), generator=g)
        h, w = frames.shape[-2:]
        top = int(torch.randint(0, h - crop + 1, (1,), generator=g))
        left = int(torch.randint(0, w - crop + 1, (1,), generator=g))
        x = frames[idx][..., top : top + crop, left : left + crop]
        with torch.no_grad():
            y = teacher(x)
        loss = F.l1_loss(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return student.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--resolution", choices=("auto", "half", "full"), default="auto", help="the block layout (default: the library's, auto)")
    parser.add_argument("--width", type=int, default=None, help="the block's width (default: automatic)")
    parser.add_argument("--no-student", action="store_true", help="leave out the slim student (to compare blocks only)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    name, size, car_size, crop = cartoon_preset(args.quick)
    steps = args.steps or (150 if args.quick else 1500)
    teacher, _ = load_teacher(name)
    train = read_split("bikes", "train", size)
    clips = [train[i : i + 12] for i in range(0, train.shape[0], 12)]
    n_held = 24 if args.quick else 60
    held = {
        "bikes (held-out frames)": read_split("bikes", "heldout", size, max_frames=n_held),
        "carphone (held-out video)": read_video(sample_video("carphone_pristine"), size=car_size, max_frames=n_held),
    }

    torch.manual_seed(0)
    sv = shortcutify(teacher, *resnet_taps(teacher), train[:1], interval=5, resolution=args.resolution, width=args.width)
    auto_width = sv.block.width  # the layout's automatic width (recorded: --width is compared as a fraction of it)
    if args.width is not None:
        with torch.random.fork_rng():  # built only to read its width: leaves the random stream as without --width
            auto_width = shortcutify(teacher, *resnet_taps(teacher), train[:1], resolution=args.resolution).block.width
    cache = shortcutify(teacher, *resnet_taps(teacher), train[:1], interval=5)  # untrained block = cache
    print(f"distilling the block ({steps} steps, α=5) ...", flush=True)
    distill(sv, clips, steps=steps, batch_size=4, lr=2e-3, crop=crop, flip=True, progress=False, weights={"feature": 1.0, "alignment": 0.0})

    results = []
    student_cache: dict[int, ResnetGenerator] = {}
    for vname, frames in held.items():
        x0 = frames[:1]
        ref = stream(teacher, frames)
        c = sv.cost(x0)
        t_macs, k_macs, s_macs, floor_macs = c.teacher.macs, c.keyframe.macs, c.shortcut.macs, c.floor.macs
        if not args.no_student:  # the slim student: widest ngf with MACs <= the shortcut path's
            spec = SPECS[name]
            ngf = max(n for n in range(4, spec.ngf + 1, 4) if count_macs(ResnetGenerator(ngf=n, n_blocks=spec.n_blocks), x0)[0] <= s_macs)
            if ngf not in student_cache:
                print(f"training the slim student ngf={ngf} ({steps} steps) ...", flush=True)
                student_cache[ngf] = train_student(ngf, teacher, clips, steps, crop, spec.n_blocks)
            student = student_cache[ngf]
            st_macs = count_macs(student, x0)[0]
            out_st = stream(student, frames)
            results.append({"video": vname, "method": f"slim student (ngf={ngf})", "alpha": None, "macs": st_macs,
                            **scores(out_st, ref, [True] * len(frames))})
        for a in ALPHAS:
            key = [i % a == 0 for i in range(len(frames))]
            non_key = [not k for k in key]
            for method, module in (("Shortcut-V2V", sv), ("(ii) cache decoder feature", cache)):
                module.policy = FixedInterval(a)
                module.reset()
                out = stream(module, frames)
                module.reset()
                macs = (k_macs + (a - 1) * (s_macs if module is sv else floor_macs)) / a
                results.append({"video": vname, "method": method, "alpha": a, "macs": macs, **scores(out, ref, non_key)})
            rep = torch.stack([ref[(i // a) * a] for i in range(len(frames))])
            results.append({"video": vname, "method": "(i) repeat keyframe output", "alpha": a, "macs": t_macs / a,
                            **scores(rep, ref, non_key)})
        results.append({"video": vname, "method": "teacher", "alpha": 1, "macs": t_macs, "psnr": float("inf"), "ssim": 1.0, "temporal": 0.0})

    rows = [[r["video"], r["method"], r["alpha"] or "-", f"{r['macs'] / 1e9:.3f}", f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['temporal']:.4f}"] for r in results]
    md = table(["video", "method", "α", "GMACs/frame (amortised)", "PSNR vs teacher (dB)", "SSIM", "temporal error"], rows)
    print(md)
    tag = ("quality" + ("" if args.resolution == "auto" else f"_{args.resolution}") + ("" if args.width is None else f"_w{args.width}")
           + ("_quick" if args.quick else ""))
    plot = _plot(results, RESULTS / f"{tag}.png")
    path = write(tag, {"machine": machine(), "teacher": name, "steps": steps, "sizes": {"bikes": size, "carphone": car_size},
                       "resolution": sv.block.resolution, "requested": args.resolution, "block_width": sv.block.width, "auto_width": auto_width,
                       "version": __version__, "start": "+".join(START_REDUCTIONS),  # (distill's default start of an untrained block)
                       "results": results, "markdown": md, "seconds": time.time() - t_start})
    print(f"wrote {path}" + (f" and {plot}" if plot else "") + f" in {time.time() - t_start:.0f} s")


def _plot(results, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    videos = sorted({r["video"] for r in results})
    fig, axes = plt.subplots(1, len(videos), figsize=(6 * len(videos), 4.2))
    for ax, v in zip(axes, videos):
        for method, marker in (("Shortcut-V2V", "o-"), ("(i) repeat keyframe output", "s--"), ("(ii) cache decoder feature", "^--")):
            pts = sorted((r["macs"] / 1e9, r["psnr"], r["alpha"]) for r in results if r["video"] == v and r["method"] == method)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker, label=method)
            for x, y, a in pts:
                ax.annotate(f"α={a}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for r in results:
            if r["video"] == v and r["method"].startswith("slim"):
                ax.plot([r["macs"] / 1e9], [r["psnr"]], "D", label=r["method"])
            if r["video"] == v and r["method"] == "teacher":
                ax.axvline(r["macs"] / 1e9, color="gray", lw=0.8, label="teacher (PSNR ∞)")
        ax.set_title(v)
        ax.set_xlabel("GMACs per frame (amortised)")
        ax.set_ylabel("PSNR vs teacher (dB)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
