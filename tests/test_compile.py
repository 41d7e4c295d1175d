"""Specification of ``ShortcutV2V.compile``: the per-frame programs compiled, the logic unchanged.

The tests compile with the ``aot_eager`` backend (the graph capture and the autograd-free
tracing that inductor also goes through, without its minutes of C++ compilation on two
cores); ``benchmarks/gpu.py`` compiles with inductor and CUDA graphs on a GPU.
"""

import pytest
import torch

from shortcutify import AdaptiveKeyframes, RecompileLimitError, shortcutify
from shortcutify.core.runner import CompileOptions
from shortcutify.demo.models import ResnetGenerator


def _live(sv):
    for p in sv.block.parameters():  # a trained-looking block: flows, offsets and corrections live
        torch.nn.init.normal_(p, std=0.05)
    return sv


def _frames(n, batch=2, size=16, seed=1, cut_at=None):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, 3, size, size, generator=g)
    out = []
    for i in range(n):
        if cut_at is not None and i == cut_at:  # a scene cut in stream 0 only
            base = base.clone()
            base[0] = torch.randn(3, size, size, generator=g)
        out.append(base + 0.05 * i * torch.randn(batch, 3, size, size, generator=g))
    return out


def _run(sv, frames):
    sv.reset()
    outs, keys = [], []
    for x in frames:
        outs.append(sv(x))
        keys.append(sv.last_keyframes.clone())
    return outs, keys


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_a_compiled_module_computes_what_the_eager_one_does(resolution):
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2).eval()
    frames = _frames(5)
    sv = _live(shortcutify(gen, "model.4", "model.12", frames[0], interval=3, resolution=resolution))
    want, want_keys = _run(sv, frames)
    assert sv.compile(backend="aot_eager") is sv and sv.compile_options == CompileOptions(backend="aot_eager")
    got, keys = _run(sv, frames)
    for w, g, k, kk in zip(want, got, want_keys, keys):
        assert torch.equal(k, kk)
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(got[0], gen(frames[0]), rtol=1e-5, atol=1e-5)  # a keyframe is the teacher's output


def test_per_stream_keyframes_of_an_adaptive_policy_compile_too():
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2).eval()
    frames = _frames(6, cut_at=3)
    sv = _live(shortcutify(gen, "model.4", "model.12", frames[0], policy=AdaptiveKeyframes(0.6, max_interval=5)))
    want, want_keys = _run(sv, frames)
    assert any(0 < int(k.sum()) < k.numel() for k in want_keys)  # the cut keyframes one stream of two
    sv.compile(backend="aot_eager")
    got, keys = _run(sv, frames)
    for w, g, k, kk in zip(want, got, want_keys, keys):
        assert torch.equal(k, kk)
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_moving_the_module_drops_compiled_programs_and_uncompile_restores_the_captured_ones():
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2).eval()
    frames = _frames(2)
    sv = _live(shortcutify(gen, "model.4", "model.12", frames[0], interval=3)).compile(backend="aot_eager")
    _run(sv, frames)
    assert sv._runners and all(r.compiled for _, r in sv._runners.values())
    sv.double()
    assert not sv._runners and sv.compile_options is not None  # compiled again, for float64, on the next call
    outs, _ = _run(sv, [x.double() for x in frames])
    assert outs[1].dtype == torch.float64
    sv.uncompile()
    assert sv.compile_options is None
    _run(sv, [x.double() for x in frames])
    assert not any(r.compiled for _, r in sv._runners.values())


def test_cuda_graphs_take_no_other_mode_and_need_a_cuda_module():
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2).eval()
    x = torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "model.4", "model.12", x)
    with pytest.raises(ValueError, match="reduce-overhead"):
        sv.compile(cuda_graphs=True, mode="max-autotune")
    sv.compile(cuda_graphs=True)  # allowed before moving the module; refused when a CPU frame would run
    with pytest.raises(ValueError, match=r"module is on cpu: move it with \.cuda\(\)"):
        sv(x)
    sv.compile(backend="aot_eager")
    assert sv(x).shape == x.shape


@pytest.mark.parametrize(
    "options, named",
    [(dict(mode="fastest"), "Unrecognized mode"), (dict(options={"no_such_option": 1}), "no_such_option"),
     (dict(mode="max-autotune", options={"max_autotune": True}), "Either mode or options")],
)
def test_a_mode_or_options_torch_compile_refuses_are_refused_by_compile_and_the_module_stays_as_it_was(options, named):
    gen, x = ResnetGenerator(ngf=8, n_blocks=1).eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "model.4", "model.11", x).compile(backend="aot_eager")
    with pytest.raises(ValueError, match=named):
        sv.compile(**options)
    assert sv.compile_options == CompileOptions(backend="aot_eager")
    assert sv(x).shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (benchmarks/gpu.py runs them)")
def test_cuda_graph_outputs_survive_the_next_replay():
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2).eval().cuda()
    frames = [x.cuda() for x in _frames(7)]
    sv = _live(shortcutify(gen, "model.4", "model.12", frames[0], interval=3))
    want, _ = _run(sv, frames)
    sv.compile(cuda_graphs=True)
    got, _ = _run(sv, frames)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


class _RandomSplits:
    """Keyframes for a random subset of the streams on every frame (sub-batches of every size)."""

    interval = 3
    uses_change = False

    def __init__(self, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def select(self, signal):
        return torch.rand(signal.since_keyframe.shape[0], generator=self.gen) < 0.4


def _counting_backend():
    """A backend that records the batch size of each program it is asked to compile ("symbolic": a size
    passed as a symbol), and the list it records into."""
    compiled_batches = []

    def counting(gm, example_inputs):
        symbolic = any(not isinstance(t, torch.Tensor) for t in example_inputs)
        compiled_batches.append("symbolic" if symbolic else next(t for t in example_inputs).shape[0])
        return gm.forward

    return counting, compiled_batches


def _compiled_runs_as_eager(sv, frames, **compile_options):
    """Run ``frames`` eager, then compiled with ``compile_options``, under the same random splits: the same
    keyframes and outputs. Returns the keyframes of each call."""
    sv.policy = _RandomSplits()
    want, want_keys = _run(sv, frames)
    sv.policy = _RandomSplits()
    sv.compile(**compile_options)
    got, keys = _run(sv, frames)
    for w, g, k, kk in zip(want, got, want_keys, keys):
        assert torch.equal(k, kk)
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    return want_keys


@pytest.mark.parametrize("dynamic_batch", [False, True, None])
def test_a_dynamic_batch_compiles_each_program_once_for_every_sub_batch_size(dynamic_batch):
    counting, compiled_batches = _counting_backend()
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=1).eval()
    x = torch.randn(5, 3, 16, 16)
    sv = _live(shortcutify(gen, "model.4", "model.11", x, interval=3))
    keys = _compiled_runs_as_eager(sv, [x + 0.01 * i for i in range(10)], backend=counting, dynamic_batch=dynamic_batch)
    sizes = {int(k.sum()) for k in keys} | {5 - int(k.sum()) for k in keys}
    assert len(sizes - {0, 5}) >= 3  # the stream splits into sub-batches of many sizes
    symbolic = [b for b in compiled_batches if b == "symbolic"]
    if dynamic_batch:  # three programs (keyframe, reference, shortcut): a batch of 1 and a symbolic batch each
        assert len(compiled_batches) <= 6 and len(symbolic) == 3
    elif dynamic_batch is None:  # each program: static for its first size, then symbolic (and a batch of 1 apart)
        assert symbolic and len(compiled_batches) <= 9
    else:  # one version per size and program
        assert not symbolic and len(set(compiled_batches)) >= 4 and len(compiled_batches) > 6


def test_an_export_capture_compiles_one_symbolic_program_for_the_sub_batches_of_many_sizes():
    counting, compiled_batches = _counting_backend()
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=1).eval()
    x = torch.randn(5, 3, 16, 16)
    sv = _live(shortcutify(gen, "model.4", "model.11", x, interval=3, capture="export"))
    _compiled_runs_as_eager(sv, [x + 0.01 * i for i in range(10)], backend=counting, dynamic_batch=True)
    # the example's capture and one with a symbolic batch for the sub-batches of 2 to 4 streams (a
    # capture per size would compile each of its three programs once per size)
    assert compiled_batches.count("symbolic") == 6


def test_the_recompile_limit_is_named_with_what_counts_and_the_ways_out():
    """Static shapes and frames of many sizes: past torch's recompile limit a fullgraph compile fails; the error says
    that every frame size and batch size counts, and how to go on (before: dynamo's bare FailOnRecompileLimitHit)."""
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=1).eval()
    sv = shortcutify(gen, "model.4", "model.11", torch.randn(1, 3, 16, 16)).compile(backend="aot_eager", dynamic_batch=False)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=2), torch.no_grad(), pytest.raises(
        RecompileLimitError, match=r"recompile limit.*frame size.*dynamic_batch=False.*fullgraph=False"
    ):
        for size in (16, 20, 24, 28):
            sv(torch.randn(1, 3, size, size))
    torch._dynamo.reset()
