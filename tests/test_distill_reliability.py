"""Specification of distill()'s failure modes: a non-finite step leaves the block as it was,
resume refuses a checkpoint of another run, bad clips and checkpoint directories fail at once."""

import os
import signal
import warnings

import pytest
import torch

from generators import moving_clips
from shortcutify import distill, shortcutify
from shortcutify.demo.models import ResnetGenerator
from shortcutify.errors import GradientError, IncompatibleCheckpointError
from shortcutify.train import CHECKPOINT_NAME


def _sv(seed=0, width=None):
    torch.manual_seed(seed)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    return shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), interval=3, width=width)


def _state(sv):
    return {k: v.clone() for k, v in sv.block.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ non-finite steps
def test_nan_inputs_are_reported_as_inputs_and_leave_the_block_as_it_was():
    sv = _sv()
    before = _state(sv)
    clips = moving_clips(2)
    for c in clips:
        c[2, 0, 5, 5] = float("nan")  # every pair touching frame 2 is non-finite
        c[:, :, 0, 0] = float("nan")  # ... and so is every other pair
    with pytest.raises(FloatingPointError, match="input") as err:
        distill(sv, clips, steps=3, batch_size=2, progress=False)
    assert "clip" in str(err.value) and "frame" in str(err.value)
    assert "lower lr" not in str(err.value)  # a lower learning rate would not help
    assert _same(_state(sv), before)


def test_a_nan_pair_drawn_later_names_its_clip_and_frame_and_keeps_the_last_good_block():
    sv = _sv()
    clips = moving_clips(4)
    clips[2][3, 1, 7, 7] = float("nan")
    good = {}

    def keep(step, logs):
        good["step"], good["block"] = step, _state(sv)

    with pytest.raises(FloatingPointError, match=r"clip 2\b.*frame.*\b3\b") as err:
        distill(sv, clips, steps=60, batch_size=1, progress=False, callback=keep)
    assert "step" in good, "the NaN pair should not be the very first one drawn"
    assert f"step {good['step'] + 1}" in str(err.value)
    assert _same(_state(sv), good["block"])  # exactly the block after the last good step


def _from_call(k, bad):
    """A perceptual loss that is ``bad`` from its ``k``-th call on (before: 0 with a gradient of 0)."""
    calls = []

    def loss(s, t):
        calls.append(1)
        return bad(s, t) if len(calls) >= k else (s - s.detach()).sum()

    return loss


@pytest.mark.parametrize(
    "what, bad",
    [
        ("loss", lambda s, t: (s - t).abs().mean() * float("nan")),
        # finite loss (0), NaN gradient: d sqrt(|x|)/dx at 0 is inf * 0
        ("gradient", lambda s, t: torch.sqrt((s - s.detach()).abs()).sum()),
    ],
)
@pytest.mark.parametrize("step", [1, 2])
def test_a_non_finite_loss_or_gradient_is_caught_before_the_optimiser_steps(what, bad, step):
    """At a run's first step nothing can have diverged: the message names the layers or loss that give non-finite
    values; later, a lower learning rate."""
    sv = _sv()
    good = {}
    with pytest.raises(FloatingPointError, match=what) as err:
        distill(sv, moving_clips(2), steps=3, progress=False, perceptual=_from_call(step, bad), callback=lambda i, logs: good.update(block=_state(sv)))
    assert f"step {step}" in str(err.value)
    if step == 1:
        assert "the run's first" in str(err.value) and "perceptual loss" in str(err.value) and "lower lr" not in str(err.value)
    else:
        assert "diverged" in str(err.value) and "lower lr" in str(err.value)
    assert _same(_state(sv), good.get("block", _state(_sv())))  # the block after the last good step (or as built)


class _NaNOnMarkedFrames(torch.nn.Module):
    """A generator whose output is NaN on frames holding a value above 5 (finite frames, non-finite teacher)."""

    def __init__(self):
        super().__init__()
        self.inner = ResnetGenerator(ngf=8, n_blocks=2)

    def forward(self, x):
        marked = x.flatten(1).amax(1).view(-1, 1, 1, 1) > 5
        return torch.where(marked, torch.full_like(x, float("nan")), self.inner(x))


def test_a_teacher_that_gives_nan_on_finite_frames_is_named_with_the_frames_not_the_learning_rate():
    torch.manual_seed(0)
    sv = shortcutify(_NaNOnMarkedFrames(), "inner.model.4", "inner.model.12", torch.zeros(1, 3, 16, 16))
    before = _state(sv)
    clips = moving_clips(2, frames=4)
    for c in clips:
        c[:, 0, 0, 0] = 9.0  # every frame marked
    with pytest.raises(FloatingPointError, match=r"generator's output or tap values are not finite \(NaN or Inf\) at step 1 on finite frames: clip \d frame \d") as err:
        distill(sv, clips, steps=2, batch_size=2, progress=False)
    assert "lower lr" not in str(err.value) and "did not diverge" in str(err.value)
    assert _same(_state(sv), before)


# ------------------------------------------------------------------ resume
RUN = dict(steps=4, batch_size=2, lr=1e-3, checkpoint_every=2, progress=False, seed=1)


def _checkpoint(tmp_path, sv=None, **overrides):
    distill(sv or _sv(), moving_clips(3), checkpoint_dir=tmp_path, **{**RUN, **overrides})
    return tmp_path / CHECKPOINT_NAME


@pytest.mark.parametrize(
    "change, names",
    [
        ({"lr": 2e-3}, ["lr", "0.001", "0.002"]),
        ({"batch_size": 1}, ["batch_size", "2", "1"]),
        ({"lr": 2e-3, "seed": 5, "crop": 12}, ["lr", "seed", "crop"]),
        ({"steps": 6}, ["steps", "4", "6"]),
        ({"weights": {"output": 1.0}}, ["weights", "output"]),
    ],
)
def test_resume_refuses_a_checkpoint_of_a_run_with_other_arguments(tmp_path, change, names):
    _checkpoint(tmp_path)
    sv = _sv()
    before = _state(sv)
    with pytest.raises(IncompatibleCheckpointError) as err:
        distill(sv, moving_clips(3), checkpoint_dir=tmp_path, resume=True, **{**RUN, **change})
    for name in names:
        assert name in str(err.value)
    assert _same(_state(sv), before)  # nothing was loaded


def test_resume_refuses_a_checkpoint_written_for_another_teacher(tmp_path):
    _checkpoint(tmp_path)
    sv = _sv(seed=1)  # the same architecture with other weights
    with pytest.raises(IncompatibleCheckpointError, match="teacher"):
        distill(sv, moving_clips(3), checkpoint_dir=tmp_path, resume=True, **RUN)


def test_resume_refuses_steps_below_the_checkpoint_step(tmp_path):
    _checkpoint(tmp_path)
    sv = _sv()
    before = _state(sv)
    with pytest.raises(ValueError, match=r"step 4.*steps=2"):
        distill(sv, moving_clips(3), checkpoint_dir=tmp_path, resume=True, **{**RUN, "steps": 2})
    assert _same(_state(sv), before)


def test_a_checkpoint_of_another_block_width_is_an_incompatible_checkpoint(tmp_path):
    _checkpoint(tmp_path, _sv(width=8))
    with pytest.raises(IncompatibleCheckpointError, match="width"):
        distill(_sv(width=4), moving_clips(3), checkpoint_dir=tmp_path, resume=True, **RUN)


def _strip_record(path):
    state = torch.load(path, weights_only=True)
    del state["run"]
    torch.save(state, path)


def test_a_checkpoint_without_a_run_record_resumes_with_a_warning_but_must_fit_the_block(tmp_path):
    path = _checkpoint(tmp_path, _sv(width=8), steps=2)
    _strip_record(path)
    with pytest.raises(IncompatibleCheckpointError, match="block"), pytest.warns(UserWarning, match="record"):
        distill(_sv(width=4), moving_clips(3), checkpoint_dir=tmp_path, resume=True, **RUN)
    sv = _sv(width=8)
    with pytest.warns(UserWarning, match="record"):
        hist = distill(sv, moving_clips(3), checkpoint_dir=tmp_path, resume=True, **RUN)
    assert hist.steps == 4
    assert "run" in torch.load(path, weights_only=True)  # rewritten with this run's record


def test_resume_with_the_same_arguments_is_accepted_silently(tmp_path):
    _checkpoint(tmp_path, steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = distill(_sv(), moving_clips(3), checkpoint_dir=tmp_path, resume=True, **RUN)
    assert hist.steps == 4


# ------------------------------------------------------------------ up-front checks
def test_clips_of_mixed_frame_sizes_fail_before_the_first_step_naming_the_clip():
    sv = _sv()
    clips = moving_clips(3) + moving_clips(1, size=24)
    seen = []
    with pytest.raises(ValueError, match=r"clip 3\b.*24x24.*crop"):
        distill(sv, clips, steps=5, batch_size=1, progress=False, callback=lambda s, l: seen.append(s))
    assert seen == []
    hist = distill(sv, clips, steps=2, batch_size=2, crop=16, progress=False)  # a crop makes them fit
    assert hist.steps == 2


def test_a_crop_larger_than_some_clip_fails_before_the_first_step():
    seen = []
    with pytest.raises(ValueError, match=r"crop.*clip 3\b"):
        distill(_sv(), moving_clips(3, size=24) + moving_clips(1), steps=5, batch_size=1, crop=20, progress=False,
                callback=lambda s, l: seen.append(s))
    assert seen == []


def _under_a_file(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    return tmp_path / "file" / "ckpt"


def _checkpoint_name_taken(tmp_path):
    (tmp_path / "ckpt" / CHECKPOINT_NAME).mkdir(parents=True)  # the checkpoint could never be written
    return tmp_path / "ckpt"


def _read_only(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return d


@pytest.mark.parametrize("make", [_under_a_file, _checkpoint_name_taken, _read_only])
def test_an_unusable_checkpoint_dir_fails_before_the_first_step_naming_it(tmp_path, make):
    directory = make(tmp_path)
    seen = []
    try:
        with pytest.raises(OSError, match="checkpoint_dir") as err:
            distill(_sv(), moving_clips(2), steps=2, checkpoint_dir=directory, progress=False,
                    callback=lambda s, l: seen.append(s))
    finally:
        if directory.exists():
            directory.chmod(0o700)
    assert str(directory) in str(err.value)
    assert seen == []


@pytest.mark.parametrize("damage", ["truncate", "empty", "not a checkpoint"])
def test_a_damaged_checkpoint_is_refused_by_name_on_resume(tmp_path, damage):
    from shortcutify import IncompatibleCheckpointError
    from shortcutify.train import CHECKPOINT_NAME

    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    sv = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), interval=3)
    clips = moving_clips(n=2, frames=4, size=16)
    distill(sv, clips, steps=2, batch_size=1, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / CHECKPOINT_NAME
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"" if damage == "empty" else b"")
    if damage == "not a checkpoint":
        torch.save({"hello": torch.zeros(1)}, path)
    with pytest.raises(IncompatibleCheckpointError, match=CHECKPOINT_NAME):
        distill(sv, clips, steps=2, batch_size=1, progress=False, checkpoint_dir=tmp_path, resume=True)


def test_weights_that_turn_every_loss_term_off_are_refused():
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    sv = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), interval=3)
    with pytest.raises(ValueError, match="weights"):
        distill(sv, moving_clips(n=2, frames=4, size=16), steps=1, progress=False, weights={"feature": 0, "alignment": 0, "output": 0})


class _InPlaceTail(torch.nn.Module):
    """A VAE-like tail: ``exp(h).add_(h)`` overwrites exp's output, which autograd needs (MONAI's
    VarAutoEncoder samples so)."""

    def __init__(self):
        super().__init__()
        self.inner = ResnetGenerator(ngf=8, n_blocks=2)

    def forward(self, x):
        h = self.inner.model[:13](x)
        return self.inner.model[13:](torch.exp(h * 0.1).add_(h))


def test_an_in_place_op_after_the_decoder_tap_is_named_with_the_fix_and_leaves_the_block_as_it_was():
    from shortcutify import GradientError

    torch.manual_seed(0)
    gen = _InPlaceTail()
    sv = shortcutify(gen, "inner.model.4", "inner.model.12", torch.zeros(1, 3, 16, 16))
    before = _state(sv)
    with pytest.raises(GradientError, match=r"(?s)in place.*dec_layer 'inner.model.12'.*pick a dec_layer after that op"):
        distill(sv, moving_clips(1, frames=4), steps=2, batch_size=2, progress=False)
    assert _same(_state(sv), before)


# ------------------------------------------------------------------ arguments, contexts, interrupts
@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -1e-3, True, "1e-3"])
def test_a_learning_rate_that_is_negative_or_not_finite_is_refused_before_anything_runs(lr):
    sv = _sv()
    before = _state(sv)
    with pytest.raises(ValueError, match=r"lr must be a finite number >= 0"):
        distill(sv, moving_clips(2), steps=2, lr=lr, progress=False)
    assert _same(_state(sv), before) and sv.distilled_interval is None


@pytest.mark.parametrize("callback, accepted", [
    (3, False), (lambda: None, False), (lambda step, logs, extra: None, False),
    (lambda *args: None, True), (lambda step, logs, extra=1: None, True), (print, True),
])
def test_a_callback_that_cannot_take_step_and_logs_is_refused_before_the_first_step(callback, accepted):
    sv = _sv()
    before = _state(sv)
    if accepted:
        distill(sv, moving_clips(2), steps=1, callback=callback, progress=False)
        return
    with pytest.raises(TypeError, match="callback"):
        distill(sv, moving_clips(2), steps=2, callback=callback, progress=False)
    assert _same(_state(sv), before) and sv.distilled_interval is None


@pytest.mark.parametrize("directory, error", [("", ValueError), (3, TypeError), (b"ckpt", TypeError)])
def test_a_checkpoint_dir_that_is_empty_or_not_a_path_is_refused(directory, error, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match="checkpoint_dir"):
        distill(_sv(), moving_clips(2), steps=1, checkpoint_dir=directory, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing written in the current directory


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_distill_trains_inside_a_callers_no_grad_or_inference_mode(context):
    sv = _sv()
    before = _state(sv)
    with context():
        clips = moving_clips(2)
        distill(sv, clips, steps=2, val_clips=clips[:1], val_every=1, progress=False)
    assert not _same(_state(sv), before)


def test_a_generator_set_to_require_grad_again_gets_no_gradient_and_keeps_its_setting():
    sv = _sv()
    sv.teacher.requires_grad_(True)
    with pytest.warns(UserWarning, match="require grad.*frozen for this run"):
        distill(sv, moving_clips(2), steps=2, progress=False)
    assert all(p.requires_grad and p.grad is None for p in sv.teacher.parameters())
    assert all(p.grad is None for p in sv.block.parameters())  # nor are the block's last gradients kept


def test_a_compiled_module_is_distilled_through_the_module_inside():
    sv = _sv()
    before = _state(sv)
    distill(torch.compile(sv), moving_clips(2), steps=1, progress=False)
    assert not _same(_state(sv), before)


def test_val_clips_of_one_frame_each_are_refused_before_the_first_step():
    sv = _sv()
    with pytest.raises(ValueError, match="val_clips: every clip has one frame"):
        distill(sv, moving_clips(2), steps=2, val_clips=[c[:1] for c in moving_clips(2)], progress=False)
    assert sv.distilled_interval is None


def test_a_shuffled_dataloader_with_checkpoints_warns_that_a_resume_would_draw_other_pairs(tmp_path):
    from torch.utils.data import DataLoader

    loader = DataLoader(moving_clips(3), batch_size=None, shuffle=True)
    with pytest.warns(UserWarning, match="shuffled DataLoader.*shuffle=False"):
        distill(_sv(), loader, steps=1, checkpoint_dir=tmp_path, progress=False)


def test_a_dataset_whose_len_promises_more_clips_than_it_has_is_named():
    class Short(torch.utils.data.Dataset):
        def __init__(self):
            self.clips = moving_clips(2)

        def __len__(self):
            return 50

        def __getitem__(self, i):
            return self.clips[i]

    with pytest.raises(IndexError, match=r"clip 2 could not be read.*len\(\) is 50.*__len__"):
        distill(_sv(), Short(), steps=1, progress=False)


@pytest.mark.parametrize("damage", [{"rng": []}, {"rng": [torch.zeros(5, dtype=torch.uint8)]}, {"rng": ["state"]}, {"history": {"losses": 3}}])
def test_a_checkpoint_with_damaged_random_state_or_history_is_refused_and_loads_nothing(tmp_path, damage):
    path = _checkpoint(tmp_path)
    torch.save({**torch.load(path, weights_only=True), **damage}, path)
    sv = _sv()
    before = _state(sv)  # (as built: the checkpoint's block is trained)
    with pytest.raises(IncompatibleCheckpointError, match=r"damaged.*block is left as it was"):
        distill(sv, moving_clips(3), checkpoint_dir=tmp_path, resume=True, **RUN)
    assert _same(_state(sv), before)


def _interrupt_at(step, times=1):
    def callback(i, logs):
        if i == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)

    return callback


def test_ctrl_c_is_taken_at_the_end_of_its_step_which_is_checkpointed_and_resumes_exactly(tmp_path):
    run = dict(steps=6, batch_size=2, checkpoint_every=100, progress=False)
    sv = _sv()
    with pytest.raises(KeyboardInterrupt, match=r"interrupted after step 3 of 6.*resume=True continues"):
        distill(sv, moving_clips(2), checkpoint_dir=tmp_path, callback=_interrupt_at(3), **run)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 3
    resumed, whole = _sv(), _sv()
    distill(resumed, moving_clips(2), checkpoint_dir=tmp_path, resume=True, **run)
    distill(whole, moving_clips(2), **run)
    assert _same(_state(resumed), _state(whole))


def test_a_second_ctrl_c_interrupts_at_once():
    sv = _sv()
    with pytest.raises(KeyboardInterrupt) as err:
        distill(sv, moving_clips(2), steps=6, progress=False, callback=_interrupt_at(2, times=2))
    assert "distill() interrupted" not in str(err.value)  # torch's own, raised inside the callback
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_teacher_check_reads_only_what_the_loss_compares():
    """A side output the loss never reads (a log-mask with -inf) does not stop training on output="image"."""

    class WithLogMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = ResnetGenerator(ngf=8, n_blocks=2)

        def forward(self, x):
            return {"image": self.inner(x), "log_mask": torch.log(torch.zeros_like(x[:, :1]))}

    torch.manual_seed(0)
    sv = shortcutify(WithLogMask(), "inner.model.4", "inner.model.12", torch.zeros(1, 3, 16, 16))
    distill(sv, moving_clips(2), steps=2, progress=False, output="image")
    with pytest.raises(FloatingPointError, match="not finite"):  # without output=, the loss compares it too
        distill(sv, moving_clips(2), steps=2, progress=False)


def test_a_decorated_callback_is_judged_by_the_call_it_takes():
    import functools

    def with_run_name(fn):
        @functools.wraps(fn)
        def wrapper(step, logs):
            return fn(step, logs, "run-1")

        return wrapper

    @with_run_name
    def log(step, logs, run):
        pass

    distill(_sv(), moving_clips(2), steps=1, callback=log, progress=False)


def test_a_tensor_learning_rate_is_taken_and_a_block_of_inference_tensors_is_refused():
    distill(_sv(), moving_clips(2), steps=1, lr=torch.tensor(1e-3), progress=False)
    with torch.inference_mode():
        sv = _sv()
    with pytest.raises(ValueError, match="inference tensors.*outside inference_mode"):
        distill(sv, moving_clips(2), steps=1, progress=False)


class _StraightThrough(torch.autograd.Function):
    """round() forward, identity backward: the backward is the generator's own, which capture does not keep."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x * 4) / 4

    @staticmethod
    def backward(ctx, grad):
        return grad


class _Quantised(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = ResnetGenerator(ngf=8, n_blocks=2)

    def forward(self, x):
        h = self.inner.model[:13](x)
        return self.inner.model[13:](_StraightThrough.apply(h))


def test_loss_terms_whose_gradient_reaches_the_block_as_zero_are_named_at_the_first_step():
    """A custom autograd.Function after the decoder tap is captured as its forward (round): the output loss
    gives the block no gradient. Named with a warning while the feature term trains; an error when no term does."""
    torch.manual_seed(0)
    sv = shortcutify(_Quantised(), "inner.model.4", "inner.model.12", torch.zeros(1, 3, 16, 16))
    with pytest.warns(RuntimeWarning, match=r"\['output'\] give the block exactly zero gradient.*autograd\.Function"):
        distill(sv, moving_clips(2), steps=2, progress=False)
    before = _state(sv)
    with pytest.raises(GradientError, match="no term trains the block"):
        distill(sv, moving_clips(2), steps=2, progress=False, weights={"feature": 0.0})
    assert _same(_state(sv), before)


def test_a_run_whose_last_validation_is_below_repeating_the_keyframe_says_so():
    sv = _sv()
    with torch.no_grad():  # a block that predicts noise, kept so (lr 0, no data-dependent start)
        for p in sv.block.parameters():
            p.copy_(torch.randn(p.shape))
    with pytest.warns(RuntimeWarning, match=r"after 1 steps the shortcut frames on val_clips are .* dB below repeating the keyframe"):
        hist = distill(sv, moving_clips(2), steps=1, val_clips=moving_clips(1, seed=3), progress=False, lr=0.0, data_init=False)
    assert hist.val[-1]["psnr"] < hist.val[-1]["psnr_repeat"]


def test_a_run_whose_steps_leave_the_block_worse_than_at_step_0_says_so():
    """A U-Net's skips carry the current frame past the taps: the block as built can beat repeat by far, and steps that
    make it worse went unnoticed (the only warning compared with repeat). Step 0 is validated and the end compared
    (with keep_best, the default, the block of step 0 would be returned instead: see the keep_best tests)."""
    sv = _sv()
    torch.manual_seed(5)

    def spoil(step, logs):  # stands in for steps that make the block worse on the held-out clips
        if step == 2:
            with torch.no_grad():
                for p in sv.block.parameters():
                    p.add_(0.5 * torch.randn(p.shape))

    with pytest.warns(RuntimeWarning, match=r"after 2 steps the shortcut frames on val_clips are .* dB below those of the block the run started from.*keep_best=True"):
        hist = distill(sv, moving_clips(2), steps=2, val_clips=moving_clips(1, seed=3), progress=False, callback=spoil, keep_best=False)
    assert hist.val[0]["step"] == 0 and hist.val[-1]["psnr"] < hist.val[0]["psnr"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        distill(_sv(), moving_clips(2), steps=2, val_clips=moving_clips(1, seed=3), progress=False, lr=0.0)  # unchanged: silent


def test_a_float16_block_is_refused_before_anything_runs_and_bfloat16_trains():
    """Adam on float16 weights divides by zero in its first steps (before: "the training diverged; lower lr" at step 2,
    with the block's weights left infinite)."""
    sv = _sv().half()
    before = _state(sv)
    clips = [c.half() for c in moving_clips(2)]
    with pytest.raises(ValueError, match=r"float16.*sv\.float\(\); distill\(sv, \.\.\.\); sv\.half\(\)"):
        distill(sv, clips, steps=2, batch_size=2, progress=False)
    assert _same(before, _state(sv))
    sv = _sv().to(torch.bfloat16)
    distill(sv, [c.to(torch.bfloat16) for c in moving_clips(2)], steps=2, batch_size=2, progress=False)
    assert all(torch.isfinite(p).all() for p in sv.block.parameters())


def test_still_footage_is_not_taken_for_a_layer_that_blocks_gradients():
    """Pairs of identical frames: the block as built reproduces them exactly, every loss term is 0 and its gradient
    too (before: GradientError naming a layer between the block and the loss)."""
    sv = _sv()
    still = [torch.rand(1, 3, 16, 16).expand(6, 3, 16, 16).clone() * 2 - 1]
    distill(sv, still, steps=2, batch_size=2, progress=False)


# ------------------------------------------------------------------ keep_best
def _scrambling_run(tmp_path=None, fail_at=None, **kwargs):
    """A validated run whose block is wrecked after step 2 (validations at 0..3 score worse from step 2 on): the
    block as the run started it, the block after step 1, and the run's callback."""
    torch.manual_seed(0)
    sv = shortcutify(ResnetGenerator(ngf=8, n_blocks=2), "model.4", "model.12", torch.randn(1, 3, 16, 16))
    start, after_one = _state(sv), {}

    def callback(step, logs):
        if step == 1:
            after_one.update(_state(sv))
        if step == 2:
            with torch.no_grad():
                for p in sv.block.parameters():
                    p.add_(3 * torch.randn_like(p))
        if step == fail_at:
            raise RuntimeError("the machine went away")

    args = dict(steps=3, val_every=1, batch_size=2, val_clips=moving_clips(1, frames=6), progress=False, data_init=False, callback=callback)
    if tmp_path is not None:
        args.update(checkpoint_dir=tmp_path, checkpoint_every=1)
    return sv, start, after_one, {**args, **kwargs}


def test_keep_best_returns_the_best_validated_block_and_says_which():
    sv, start, after_one, args = _scrambling_run()
    with pytest.warns(RuntimeWarning, match=r"last validation \(step 3: .* dB on val_clips\) scored below step [01]'s .*keep_best=False returns the last"):
        history = distill(sv, moving_clips(2), **args)
    scores = {int(v["step"]): v["psnr"] for v in history.val}
    assert history.kept == max((0, 1), key=lambda s: scores[s]) and scores[history.kept] > scores[3]
    assert _same(sv.block.state_dict(), start if history.kept == 0 else after_one)
    assert "returned the block of step" in history.summary()
    assert sv.distilled_interval == (None if history.kept == 0 else 3)  # the block as built was trained for nothing


def test_keep_best_never_returns_a_block_whose_last_validation_is_not_finite():
    sv = _sv()

    def poison(step, logs):  # after the last step: no step check sees it, only the validation
        if step == 2:
            with torch.no_grad():
                sv.block.reconstruct.weight.fill_(float("nan"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = distill(sv, moving_clips(2), steps=2, val_every=1, batch_size=2, val_clips=moving_clips(1, frames=6),
                          progress=False, callback=poison)
    assert history.kept in (0, 1) and all(bool(torch.isfinite(p).all()) for p in sv.block.parameters())


def test_keep_best_false_returns_the_last_block():
    sv, start, after_one, args = _scrambling_run(keep_best=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = distill(sv, moving_clips(2), **args)
    assert history.kept is None and not _same(sv.block.state_dict(), start) and not _same(sv.block.state_dict(), after_one)


def test_the_best_block_survives_an_interrupted_run_and_its_resume(tmp_path):
    sv, start, after_one, args = _scrambling_run(tmp_path, fail_at=3)
    with pytest.raises(RuntimeError, match="went away"):
        distill(sv, moving_clips(2), **args)  # checkpoint of step 2 written; the best (step 0 or 1) with it
    best = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["best"]
    args["callback"] = None
    with pytest.warns(RuntimeWarning, match=r"the block of step [01] is returned"):
        history = distill(sv, moving_clips(2), resume=True, **args)
    assert history.kept == best["step"] and _same(sv.block.state_dict(), start if history.kept == 0 else after_one)


@pytest.mark.parametrize("below, kept", [(0.5, None), (2.0, 1), (float("nan"), 1), (-3.0, None)])
def test_keep_best_takes_an_earlier_block_only_beyond_the_margin(below, kept):
    """Validations closer than KEEP_BEST_MARGIN_DB differ by noise: the last block, trained longest, stays. ``below``:
    how far the last validation scores below the best, in margins (NaN: not at all)."""
    from types import SimpleNamespace

    from shortcutify.train.distill import KEEP_BEST_MARGIN_DB, _keep_best
    from shortcutify.train.history import History

    last = 30.05 - below * KEEP_BEST_MARGIN_DB
    sv = _sv()
    best = {k: torch.full_like(v, 0.5) for k, v in sv.block.state_dict().items()}
    before = _state(sv)
    history = History(val=[{"step": 0.0, "psnr": 20.0}, {"step": 1.0, "psnr": 30.05}, {"step": 2.0, "psnr": last}])
    run = SimpleNamespace(best={"step": 1, "psnr": 30.05, "block": best}, history=history)
    _keep_best(sv, run, rank=0, world=1, keep_best=True)
    assert history.kept == kept and _same(_state(sv), best if kept is not None else before)
