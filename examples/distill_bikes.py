"""Distillation on real video, measured: PSNR/SSIM vs the teacher before and after, on held-out frames.

usage: python examples/distill_bikes.py [--steps 900]

The tiny cartoon teacher (trained here) on 68x160 frames of bikes.mp4: distils on frames
0-179 and evaluates on the held-out frames 190-249 (keyframe interval 3), next to
"repeat the keyframe's output". The same setting as the real-video test in tests/test_distill.py.
"""

import argparse
import time

import torch

from shortcutify import distill, evaluate, shortcutify
from shortcutify.demo.models import resnet_taps
from shortcutify.demo.teachers import load_teacher, read_split, split_range

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=900, help="distillation steps (default: %(default)s)")
args = parser.parse_args()
torch.set_num_threads(2)

train = read_split("bikes", "train", (68, 160))
held = read_split("bikes", "heldout", (68, 160))
h0, h1 = split_range("bikes", "heldout")
gen, _ = load_teacher("cartoon-tiny")
sv = shortcutify(gen, *resnet_taps(gen), train[:1], interval=3)
val = [held[i : i + 12] for i in range(0, held.shape[0], 12)]

before = evaluate(sv, val).summary()
torch.manual_seed(0)
t = time.time()
hist = distill(sv, [train[i : i + 12] for i in range(0, train.shape[0], 12)], steps=args.steps, crop=64, flip=True,
               progress=False, val_clips=val, val_every=max(1, args.steps // 3),
               keep_best=False)  # (these frames report the result below: a block chosen on them would flatter it)
seconds = time.time() - t
after = evaluate(sv, val).summary()
print(f"held-out bikes frames {h0}-{h1 - 1}, 68x160, interval 3, {int(after['shortcut_frames'])} shortcut frames")
print(f"untrained block : PSNR {before['psnr']:.2f} dB  SSIM {before['ssim']:.4f}")
print(f"repeat keyframe : PSNR {after['psnr_repeat']:.2f} dB  SSIM {after['ssim_repeat']:.4f}")
print(f"distilled block : PSNR {after['psnr']:.2f} dB  SSIM {after['ssim']:.4f}   ({args.steps} steps, {seconds:.0f} s)")
print(hist.summary())
