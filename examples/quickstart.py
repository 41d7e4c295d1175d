"""The three lines, on real video: a trained generator made cheaper per frame.

usage: python examples/quickstart.py [--steps N]
"""

import argparse

import torch

from shortcutify import distill, shortcutify
from shortcutify.demo.teachers import load_teacher
from shortcutify.demo.video import read_video, sample_video

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=300)
args = parser.parse_args()

# a trained generator (RecycleGAN-style ResNet, trained here) and real frames [T, 3, H, W] in [-1, 1]
generator, _ = load_teacher("cartoon-tiny")
video = read_video(sample_video("bikes"), size=(68, 160), max_frames=180)
clips = [video[i : i + 12] for i in range(0, 168, 12)]
frame = video[:1]

sv = shortcutify(generator, enc_layer="model.4", dec_layer="model.13", example_inputs=frame)
distill(sv, clips, steps=args.steps, crop=64)  # learns the small shortcut block; the generator stays frozen
with torch.no_grad():
    for next_frame in read_video(sample_video("bikes"), size=(68, 160), start=190, max_frames=6):
        out = sv(next_frame[None])  # stateful: keyframes run the full model, the rest take the shortcut
        print("keyframe" if sv.last_was_keyframe else "shortcut", tuple(out.shape))
print(sv.cost())
