"""Soak: a long stream with random frame-size changes and resets; memory and time must stay flat.

usage: python benchmarks/soak.py [--quick] [--frames 10000] [--capture fx|export] [--threads 2]

Streams frames through a small ResNet generator (ngf=8, 2 blocks) wrapped at the paper's taps,
keyframe interval 3. Every frame, with probability 1%, the stream resets; with probability 1%
the frame size (and batch) changes to another of a few signatures. Reports the process's
resident memory and the median time per frame over the first and the last windows of the
stream: per signature, the median time of a shortcut frame in the first quarter (after a
warm-up) and in the last quarter, and the median resident memory of both quarters. A leak or a
growing cache shows as a ratio above 1 that the control row (the plain teacher, timed every tenth
frame on a fixed input in the same process) does not show: the control tells drift of the
machine from drift of the module.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write  # noqa: E402

from shortcutify import shortcutify  # noqa: E402
from shortcutify.demo.models import ResnetGenerator, resnet_taps  # noqa: E402

SIGNATURES = [(1, 32, 32), (2, 32, 48), (1, 48, 32), (3, 16, 16)]


def rss_mib() -> float:
    """Resident memory of this process (MiB), from /proc (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1,000 frames")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--capture", choices=("fx", "export"), default="fx")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = 1000 if args.quick else args.frames
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    b, h, w = SIGNATURES[0]
    sv = shortcutify(gen, *resnet_taps(gen), torch.randn(b, 3, h, w), interval=3, capture=args.capture)
    base = {sig: torch.randn(sig[0], 3, sig[1], sig[2]) for sig in SIGNATURES}
    sig = SIGNATURES[0]
    records, memory, control = [], [], []  # (frame, signature, keyframe, seconds); (frame, seconds)
    keyframes = resets = changes = 0
    for i in range(frames):
        if rng.random() < 0.01:
            sv.reset()
            resets += 1
        if rng.random() < 0.01:
            sig = rng.choice(SIGNATURES)
            changes += 1
        x = base[sig] + 0.05 * torch.randn_like(base[sig])
        t = time.perf_counter()
        out = sv(x)
        records.append((i, sig, sv.last_was_keyframe, time.perf_counter() - t))
        if i % 10 == 0:  # control: the plain teacher on a fixed input, to tell drift of the machine from drift of ours
            t = time.perf_counter()
            sv.teacher(base[SIGNATURES[0]])
            control.append((i, time.perf_counter() - t))
        keyframes += sv.last_was_keyframe
        memory.append(rss_mib())
        if not torch.isfinite(out).all():
            raise SystemExit(f"frame {i}: non-finite output")
    quarter = frames // 4
    rows, ratios = [], []
    for s_ in SIGNATURES:  # shortcut frames of one signature, first vs last quarter of the stream
        first = [dt for i, g, k, dt in records if g == s_ and not k and quarter // 4 <= i < quarter]
        last = [dt for i, g, k, dt in records if g == s_ and not k and i >= frames - quarter]
        if len(first) >= 5 and len(last) >= 5:
            f, l_ = statistics.median(first), statistics.median(last)
            ratios.append(l_ / f)
            rows.append([f"shortcut frame {s_[0]}x3x{s_[1]}x{s_[2]}, median ms", f"{f * 1e3:.2f}", f"{l_ * 1e3:.2f}", f"{l_ / f:.2f}"])
    c_first = statistics.median([dt for i, dt in control if quarter // 4 <= i < quarter])
    c_last = statistics.median([dt for i, dt in control if i >= frames - quarter])
    rows.append(["control: the teacher alone 1x3x32x32, median ms", f"{c_first * 1e3:.2f}", f"{c_last * 1e3:.2f}", f"{c_last / c_first:.2f}"])
    first_m = statistics.median(memory[quarter // 4 : quarter])
    last_m = statistics.median(memory[-quarter:])
    rows.append(["resident memory, median MiB", f"{first_m:.1f}", f"{last_m:.1f}", f"{last_m / first_m:.3f}"])
    md = table(["", "first quarter (after warm-up)", "last quarter", "last / first"], rows)
    print(f"{frames} frames, capture={args.capture}, {resets} resets, {changes} signature changes, {keyframes} keyframes, "
          f"{args.threads} threads")
    print(md)
    path = write("soak" + ("_quick" if args.quick else "") + ("" if args.capture == "fx" else f"_{args.capture}"), {
        "machine": machine(), "frames": frames, "capture": args.capture, "resets": resets, "changes": changes,
        "keyframes": keyframes, "time_ratios": ratios, "control_ratio": c_last / c_first, "first_mib": first_m,
        "last_mib": last_m, "markdown": md,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
