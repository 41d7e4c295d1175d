"""RecycleGAN-style ResNet generator: frame -> stylised frame, made cheaper per frame.

Loads the cartoon teacher trained here (examples/train_teachers.py), wraps it at the
paper's taps (first down-sampling conv -> first transposed conv), distils the block on
the training frames of bikes.mp4, evaluates on held-out frames (the end of bikes.mp4 and
carphone), and writes a side-by-side video (input | teacher | shortcut), a per-frame plot
and a report with the cost table, PSNR/SSIM vs the teacher and wall-clock ratios.

usage: python examples/recyclegan.py [--quick] [--steps N] [--resolution auto|half|full] [--out DIR]
"""

import argparse

from shortcutify.demo.cli import run_demo

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="tiny teacher, small frames, few steps")
parser.add_argument("--steps", type=int, default=None, help="distillation steps (default: the demo's, fewer with --quick)")
parser.add_argument("--resolution", choices=("auto", "half", "full"), default="auto",
                    help="the block's layout (default: %(default)s, as shortcutify() chooses it)")
parser.add_argument("--out", default="out/recyclegan")
args = parser.parse_args()
run_demo(args.out, quick=args.quick, steps=args.steps, resolution=args.resolution, task="cartoon")
