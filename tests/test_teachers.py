"""Specification of the demo teachers' helpers that the benchmarks and the example report."""

from __future__ import annotations

import math

import torch
from torch import nn

from shortcutify.demo.teachers import ColourLabels, previous_frame_dependence


class _Copy(nn.Module):
    """Outputs its previous-frame input: the output depends on nothing else."""

    def forward(self, label, prev):
        return {"frame": prev}


class _Labels(nn.Module):
    """Outputs a function of the labels alone."""

    def forward(self, label, prev):
        return {"frame": label[:, :3] * 2 - 1}


def test_previous_frame_dependence_of_a_copier_is_the_psnr_between_consecutive_frames():
    frames = torch.rand(5, 3, 8, 8) * 2 - 1
    labeller = ColourLabels(torch.rand(4, 3) * 2 - 1)
    mse = (frames[:-1] - frames[1:]).square().mean(dim=(1, 2, 3))
    expected = float((10 * torch.log10(4.0 / mse)).mean())
    assert math.isclose(previous_frame_dependence(_Copy(), labeller, frames), expected, rel_tol=1e-5)


def test_a_generator_that_ignores_the_previous_frame_scores_very_high():
    frames = torch.rand(4, 3, 8, 8) * 2 - 1
    labeller = ColourLabels(torch.rand(4, 3) * 2 - 1)
    assert previous_frame_dependence(_Labels(), labeller, frames) > 100
