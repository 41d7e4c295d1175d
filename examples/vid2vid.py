"""vid2vid-style generator: (label map, previous frame) -> frame, made cheaper per frame.

The teacher (trained here, examples/train_teachers.py) takes a colour-cluster label map
and the previous frame; a shared trunk feeds an image head (hallucination) and a flow
head whose warped previous frame is blended by a predicted mask. The taps are the
trunk's first down-sampling conv (H/2) and the trunk's output (H/4): different
resolutions and widths, and both heads stay in the shortcut program's tail. Outputs are
dicts ({"frame", "hallucinated", "flow", "mask"}) and pass through unchanged.

usage: python examples/vid2vid.py [--quick] [--steps N] [--resolution auto|half|full] [--out DIR]
"""

import argparse

from shortcutify.demo.cli import run_demo

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="tiny teacher, small frames, few steps")
parser.add_argument("--steps", type=int, default=None, help="distillation steps (default: the demo's, fewer with --quick)")
parser.add_argument("--resolution", choices=("auto", "half", "full"), default="auto",
                    help="the block's layout (default: %(default)s, as shortcutify() chooses it)")
parser.add_argument("--out", default="out/vid2vid")
args = parser.parse_args()
run_demo(args.out, quick=args.quick, steps=args.steps, resolution=args.resolution, task="vid2vid")
