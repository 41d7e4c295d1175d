"""GPU benchmark: teacher, keyframe, shortcut, block and floor, eager and compiled, fp32 and bf16.

usage: python benchmarks/gpu.py [--quick] [--device cuda|cpu] [--budget-s 330] [--configs NAME,...] [--profile]
                               [--resolutions half,full] [--taps paper,suggested]
       python benchmarks/gpu.py --resources   (no GPU needed: the kernel's registers and shared memory per tiling)

ResNet generator (ngf=64, 6 residual blocks), both block layouts, at the paper's taps or at others
of :data:`TAPS` (``--taps``). One run measures, per config (frame size, batch, precision, eager or
compiled):

* ``teacher``: the generator (compiled in the same mode as the shortcut for compiled configs);
* ``keyframe``: a keyframe as ``sv(x)`` runs it (teacher with taps + the block's reference);
* ``shortcut``: a shortcut frame as ``sv(x)`` runs it (the stateful module's Python included);
* ``stream3``: ``FixedInterval(3)``, the mean of a keyframe and two shortcut frames, measured;
* ``block``: the block alone; ``floor``: the shortcut program with the block replaced by a
  pass-through of the reference feature (head + tail alone: the most a shortcut frame can gain);
* eager configs also time the shortcut frame with the block's plain-PyTorch reference
  (``use_fast_path(False)``: no Triton kernel), so the kernels' share is visible.

Timings are medians of CUDA-event-timed calls, all paths of a config interleaved round by
round in one process. Peak memory above what was live before each path runs. Checks run
first: the Triton kernel against the reference on the device, compiled keyframes against the
compiled teacher, bf16 shortcut frames against fp32 (PSNR; block with random non-zero
weights), CUDA-graph outputs against plain compiled ones. TF32 is left as PyTorch's defaults
set it (recorded). Compiled configs run in priority order until ``--budget-s`` would be
exceeded (cold compiles dominate); skipped configs are listed. Results go to
``results/gpu.json`` (``gpu_quick.json`` with ``--quick``) after every config. ``--quick`` runs the same code on the CPU with tiny
frames and the ``aot_eager`` backend (CI: it cannot rot); its timings mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).parent))
from common import TAPS, machine, table, write  # noqa: E402

from shortcutify import FixedInterval, shortcutify  # noqa: E402
from shortcutify.core.blocks.base import BlockOutput  # noqa: E402
from shortcutify.core.cut import BLOCK_NAME, REFERENCE_INPUT  # noqa: E402
from shortcutify.demo.models import ResnetGenerator  # noqa: E402
from shortcutify.demo.timing import time_calls  # noqa: E402
from shortcutify.ops import adabd_conv_reference, fast_path_available, use_fast_path, warp_reference  # noqa: E402

# name: (height, width, batch, precision, compiled, cuda graphs); compiled ones in priority order
CONFIGS = {
    "fp32-256-b1-eager": (256, 256, 1, "fp32", False, False),
    "fp32-1024x2048-b1-eager": (1024, 2048, 1, "fp32", False, False),
    "fp32-256-b8-eager": (256, 256, 8, "fp32", False, False),  # bf16's fp32 counterpart
    "bf16-256-b8-eager": (256, 256, 8, "bf16", False, False),
    "bf16-1024x2048-b1-eager": (1024, 2048, 1, "bf16", False, False),
    "fp32-256-b1-compiled": (256, 256, 1, "fp32", True, True),
    "fp32-1024x2048-b1-compiled": (1024, 2048, 1, "fp32", True, False),
    "bf16-256-b8-compiled": (256, 256, 8, "bf16", True, True),
    "bf16-1024x2048-b1-compiled": (1024, 2048, 1, "bf16", True, False),
    # the same with CUDA graphs (teacher too): at this size a compiled shortcut frame's CPU work
    # (launches, the stateful module's Python) is about its GPU time
    "bf16-1024x2048-b1-graphs": (1024, 2048, 1, "bf16", True, True),
}
QUICK_SIZES = {256: 32, 1024: 32, 2048: 64}
QUICK_CONFIGS = ("fp32-256-b1-eager", "bf16-256-b8-compiled")
COMPILE_ESTIMATE_S = 90.0  # what one compiled config and layout may cost, cold (teacher, programs, block, floor)
PATHS = ("teacher", "keyframe", "shortcut", "stream3", "block", "floor")


class PassThrough(nn.Module):
    """The floor's block: the reference's decoder feature, plus zero times the encoder tap's
    mean, so that compiled code keeps the head (a program that ignored the tap would lose it to
    dead-code elimination: the runs before 2026-11-27's third measured the tail alone there)."""

    def forward(self, a: torch.Tensor, reference: Any, return_aligned: bool = False) -> BlockOutput:
        return BlockOutput(reference + 0.0 * a.float().mean().to(reference.dtype), None)


def floor_program(sv) -> fx.GraphModule:
    """``(x, shortcut_reference=f) -> output``: the inference program with the block replaced by
    :class:`PassThrough`, so that it runs the head and the tail alone."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(sv.inference_program.graph, {}))
    floor = fx.GraphModule(sv.inference_program, graph, "FloorProgram")
    setattr(floor, BLOCK_NAME, PassThrough())
    return floor


def randomise(block: nn.Module, seed: int = 0) -> None:
    """Random non-zero weights (an untrained block's zero reconstruction would hide errors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            fan_in = max(1, p[0].numel()) if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
        k2 = block.kernel_size**2
        block.adabd_head[-1].bias[: 2 * k2].copy_(torch.randn(2 * k2, generator=gen) * 3.0)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    mse = float(((x - ref) ** 2).mean())
    span = float(ref.max() - ref.min())
    return float("inf") if mse == 0 else 10 * math.log10(span**2 / mse)


def autocast(device: str, precision: str):
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def layout(resolution: str) -> tuple[str, bool, bool, bool]:
    """``"full-w2-cl-mp"`` -> the block layout, whether at half its automatic width (``-w2``), whether
    its weights are channels-last (``-cl``), whether it has the default motion prior (``-mp``)."""
    base, *flags = resolution.split("-")
    unknown = sorted(set(flags) - {"w2", "cl", "mp"})
    if unknown:
        raise ValueError(f"unknown layout suffix {unknown} in {resolution!r}: use -w2 (half width), -cl (channels-last) "
                         "and/or -mp (motion prior)")
    return base, "w2" in flags, "cl" in flags, "mp" in flags


def build(h: int, w: int, batch: int, device: str, resolution: str, ngf: int, n_blocks: int, taps: str = "paper"):
    """The teacher, its shortcut module and a frame, at the tap pair ``TAPS[taps]``. ``resolution`` is a block layout (or ``auto``), with
    ``-w2``: at half its automatic width (e.g. ``full-w2``, the full layout at about the half
    layout's CPU time), ``-cl``: the block's weights in channels-last memory (its convs
    then run in NHWC), ``-mp``: with ``motion_prior=True`` (since 0.17 its similarities as one matrix product per row)."""
    base, half_width, channels_last, prior = layout(resolution)
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=ngf, n_blocks=n_blocks).to(device).eval()
    x = torch.randn(batch, 3, h, w, device=device)
    pair = TAPS[taps](gen)
    sv = shortcutify(gen, *pair, x, resolution=base, motion_prior=prior)
    if half_width:
        sv = shortcutify(gen, *pair, x, resolution=base, motion_prior=prior, width=max(1, sv.block.width // 2))
    randomise(sv.block)
    if channels_last:
        sv.block.to(memory_format=torch.channels_last)
    return gen, sv, x


def peak_mib(fn, device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


@torch.no_grad()
def measure(name: str, spec: tuple, resolution: str, args: argparse.Namespace, taps: str = "paper") -> dict[str, Any]:
    h, w, batch, precision, compiled, graphs = spec
    if args.quick:
        h, w = QUICK_SIZES.get(h, 32), QUICK_SIZES.get(w, 32)
    device = args.device
    gen, sv, x = build(h, w, batch, device, resolution, args.ngf, args.n_blocks, taps)
    floor = floor_program(sv)
    with autocast(device, precision):
        key = sv.run_keyframe(x)
        ref = sv.prepare_reference(key)
    teacher: Any = gen
    floor_fn: Any = floor
    block_fn: Any = sv.block
    backend = "aot_eager" if args.quick else "inductor"
    if compiled:
        mode = "reduce-overhead" if graphs and device.startswith("cuda") else None
        teacher = torch.compile(gen, backend=backend, mode=mode, dynamic=False)
        floor_fn = torch.compile(floor, backend=backend, mode=mode, dynamic=False)
        block_fn = torch.compile(sv.block, backend=backend, mode=mode, dynamic=False)
        sv.compile(backend=backend, cuda_graphs=graphs and device.startswith("cuda"))
    policies = {"key": FixedInterval(1), "short": FixedInterval(10**9), "three": FixedInterval(3)}

    def frame(policy: str):
        def call():
            sv.policy = policies[policy]
            return sv(x)

        return call

    def stream3():
        sv.policy = policies["three"]
        sv.reset()
        for _ in range(3):
            sv(x)

    def reference_block_frame():
        with use_fast_path(False):
            sv.policy = policies["short"]
            return sv(x)

    calls = {
        "teacher": lambda: teacher(x),
        "keyframe": frame("key"),
        "shortcut": frame("short"),
        "stream3": stream3,
        "block": lambda: block_fn(key.enc, ref),
        "floor": lambda: floor_fn(x, **{REFERENCE_INPUT: key.dec}),
    }
    if not compiled and device.startswith("cuda"):
        calls["shortcut_reference_block"] = reference_block_frame
    if graphs and device.startswith("cuda"):  # every call a new step: graph outputs are read before the next replay
        calls = {k: (lambda fn=fn: (torch.compiler.cudagraph_mark_step_begin(), fn())) for k, fn in calls.items()}
    t0 = time.perf_counter()
    with autocast(device, precision):
        frame("key")()  # compiles and warms every path once (timed apart: the cold cost)
        for fn in calls.values():
            fn()
        warm_s = time.perf_counter() - t0
        repeats = 3 if args.quick else (10 if h * w > 10**6 else 40)
        secs = time_calls(calls, repeats=repeats, warmup=2 if args.quick else 5, cuda=device.startswith("cuda"))
        secs["stream3"] /= 3
        memory = {k: peak_mib(fn, device) for k, fn in calls.items()}
        # keyframes are the teacher's output (compiled: the compiled teacher's) within float tolerance
        sv.policy = policies["key"]
        key_gap = float((sv(x).float() - teacher(x).float()).abs().max())
    profile = None
    if args.profile and not (graphs and compiled and device.startswith("cuda")):  # a CUDA graph hides its kernels
        try:
            profile = kernel_profile(calls, precision, device)
        except Exception as err:
            profile = {"failed": f"{type(err).__name__}: {str(err)[:300]}"}
    row = dict(
        profile=profile,
        config=name, resolution=resolution, size=[h, w], batch=batch, precision=precision, compiled=compiled,
        taps=taps, tap_pair=[sv.config.enc_layer, sv.config.dec_layer], block_built=[sv.block.resolution, sv.block.width],
        cuda_graphs=graphs and device.startswith("cuda"), backend=backend if compiled else "eager",
        fast_path=fast_path_available(device) and device.startswith("cuda"),
        ms={k: v * 1e3 for k, v in secs.items()}, peak_mib=memory, warm_s=warm_s, keyframe_vs_teacher_max_abs=key_gap,
    )
    row["ratio_to_teacher"] = {k: secs["teacher"] / v for k, v in secs.items() if k not in ("teacher", "block")}
    row["shortcut_to_floor"] = secs["shortcut"] / secs["floor"]
    return row


def kernel_profile(calls: dict[str, Any], precision: str, device: str, runs: int = 3, top: int = 12) -> dict[str, Any]:
    """CUDA kernels of the ``block``, ``shortcut`` and ``floor`` calls (torch.profiler): kernels per call and
    the ``top`` kernels by GPU time, in ms per call (on the CPU, ops by CPU time: checks the code)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    out: dict[str, Any] = {}
    for key in ("block", "shortcut", "floor"):
        with autocast(device, precision), profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                calls[key]()
            if cuda:
                torch.cuda.synchronize()
        kind = DeviceType.CUDA if cuda else DeviceType.CPU
        kernels = [e for e in prof.key_averages() if e.device_type == kind]
        if not cuda:  # CPU ops: self time (device_time_total is zero there)
            for e in kernels:
                e.device_time_total = e.self_cpu_time_total
        total = sum(e.device_time_total for e in kernels) / 1e3 / runs
        rows = sorted(kernels, key=lambda e: e.device_time_total, reverse=True)[:top]
        out[key] = {
            "kernels_per_call": sum(e.count for e in kernels) / runs,
            "gpu_ms_per_call": total,
            "top": [[e.key[:90], e.count / runs, e.device_time_total / 1e3 / runs] for e in rows],
        }
    return out


def compile_for_hopper() -> dict[str, Any]:
    """Without a GPU: compile the kernels ahead of time for sm_90 (H100/H200): AdaBD's in fp32 (TF32,
    bf16x3) and bf16 with reference_only on, the warp kernel's with a residual in fp32 and bf16, so
    that the Triton compiler (not only its interpreter) has accepted them."""
    import os

    if importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") == "1":
        return {"kernel_compiles_for_sm90": "not checked (triton missing, or its interpreter is on)"}
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from shortcutify.ops.adabd_triton import _adabd_kernel

    names = list(_adabd_kernel.arg_names)
    ptrs = {n for n in names if n.endswith("_ptr")}
    const = {"KS": 3, "HAS_BIAS": True, "REF_ONLY": True, "DOT_F32": False, "BLOCK_P": 64, "BLOCK_C": 32, "BLOCK_O": 64}
    out: dict[str, Any] = {}
    for dtype, precision, split in FP32_MODES[1:] + (("bf16", "ieee", False),):
        consts = dict(const, PRECISION=precision, SPLIT=split)
        sig = {n: f"*{dtype}" if n in ptrs else "constexpr" if n in consts else "i32" for n in names}
        t0 = time.perf_counter()
        try:
            compiled = triton.compile(ASTSource(fn=_adabd_kernel, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32))
            ptx = compiled.asm["ptx"]
            out[f"kernel_compiles_for_sm90_{mode_name(dtype, precision, split)}"] = (
                f"yes ({time.perf_counter() - t0:.0f} s; tensor-core MMA {'wgmma' in ptx or 'mma' in ptx})"
            )
        except Exception as err:
            out[f"kernel_compiles_for_sm90_{mode_name(dtype, precision, split)}"] = f"FAILED: {type(err).__name__}: {str(err)[:300]}"
    from shortcutify.ops.warp_triton import _warp_kernel

    names = list(_warp_kernel.arg_names)
    consts = {"HAS_RES": True, "BLOCK_P": 512, "BLOCK_C": 4}
    for dtype in ("fp32", "bf16"):
        sig = {n: f"*{dtype}" if n.endswith("_ptr") else "constexpr" if n in consts else "i32" for n in names}
        try:
            triton.compile(ASTSource(fn=_warp_kernel, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32))
            out[f"warp_kernel_compiles_for_sm90_{dtype}"] = "yes"
        except Exception as err:
            out[f"warp_kernel_compiles_for_sm90_{dtype}"] = f"FAILED: {type(err).__name__}: {str(err)[:300]}"
    return out


def kernel_resources() -> list[dict[str, Any]]:
    """Without a GPU: each tiling of :data:`TILES` (and the rule's) compiled for sm_90a, float32
    (TF32) and bfloat16, and assembled with ``ptxas -v`` (Triton's own, the newest it carries):
    registers per thread, bytes spilled, shared memory, and how many programs fit on one
    multiprocessor by those two. A static picture, not a timing."""
    import os
    import re
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from shortcutify.ops.adabd_triton import _adabd_kernel

    bins = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    ptxas = next((p for p in (bins / "ptxas-blackwell", bins / "ptxas") if p.exists()), None)
    names = list(_adabd_kernel.arg_names)
    ptrs = {n for n in names if n.endswith("_ptr")}
    rows = []
    for dtype, precision, split in FP32_MODES[1:] + (("bf16", "ieee", False),):
        for (bp, bc, bo, warps), stages in TILES:
            consts = {"KS": 3, "HAS_BIAS": True, "REF_ONLY": False, "DOT_F32": False, "BLOCK_P": bp, "BLOCK_C": bc, "BLOCK_O": bo,
                      "PRECISION": precision, "SPLIT": split}
            sig = {n: f"*{dtype}" if n in ptrs else "constexpr" if n in consts else "i32" for n in names}
            row: dict[str, Any] = dict(dtype=mode_name(dtype, precision, split), tiles=[bp, bc, bo, warps], stages=stages)
            try:
                compiled = triton.compile(ASTSource(fn=_adabd_kernel, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                                          options={"num_warps": warps, **({"num_stages": stages} if stages else {})})
                row["shared_kib"] = compiled.metadata.shared / 1024
                if ptxas is not None:
                    with tempfile.TemporaryDirectory() as tmp:
                        src = os.path.join(tmp, "k.ptx")
                        Path(src).write_text(compiled.asm["ptx"])
                        log = subprocess.run([str(ptxas), "-arch=sm_90a", "-v", src, "-o", os.path.join(tmp, "k.cubin")],
                                             capture_output=True, text=True, timeout=120).stderr
                    regs, spill = re.search(r"Used (\d+) registers", log), re.search(r"(\d+) bytes spill stores", log)
                    if regs and spill:
                        row.update(registers=int(regs.group(1)), spill_bytes=int(spill.group(1)))
                        threads = 32 * warps  # H100: 64K registers and 228 KB of shared memory per multiprocessor
                        row["programs_per_sm"] = min(65536 // (row["registers"] * threads), int(228 * 1024 // max(1, compiled.metadata.shared)))
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
            rows.append(row)
    return rows


@torch.no_grad()
def checks(args: argparse.Namespace) -> dict[str, Any]:
    """Correctness on the device, before any timing."""
    device = args.device
    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    c, hw = (16, (24, 40)) if args.quick else (64, (128, 128))
    t = dict(
        f_ref=torch.randn(2, c, *hw, generator=gen), a=torch.randn(2, c, *hw, generator=gen),
        offset=torch.randn(2, 18, *hw, generator=gen) * 4, mask=torch.rand(2, 9, *hw, generator=gen),
        weight=torch.randn(c, c, 3, 3, generator=gen) / math.sqrt(9 * c), bias=torch.randn(c, generator=gen),
    )
    exact = adabd_conv_reference(**{k: v.double() for k, v in t.items()})[0].float()
    if fast_path_available(device) and device.startswith("cuda"):
        from shortcutify.ops.adabd_triton import adabd_conv_triton

        dev = {k: v.to(device) for k, v in t.items()}
        for dtype in (torch.float32, torch.bfloat16):
            try:
                low = {k: v.to(dtype) for k, v in dev.items()}
                got = adabd_conv_triton(**low)[0].float().cpu()
                ref = adabd_conv_reference(**low)[0].float().cpu()
                out[f"kernel_vs_reference_max_abs_{dtype}"] = float((got - ref).abs().max())
                out[f"kernel_vs_exact_max_abs_{dtype}"] = float((got - exact).abs().max())
                out[f"reference_vs_exact_max_abs_{dtype}"] = float((ref - exact).abs().max())
            except Exception as err:  # recorded; the timings still run (on the reference if the kernel is off)
                out[f"kernel_{dtype}"] = f"FAILED: {type(err).__name__}: {str(err)[:500]}"
        try:  # float32 products: each mode against float64
            dev32 = {k: v.to(device) for k, v in t.items()}
            for mode in ("ieee", "tf32", "bf16x3"):
                got = adabd_conv_triton(**dev32, fp32_products=mode)[0].float().cpu()
                out[f"kernel_fp32_{mode}_vs_exact_max_abs"] = float((got - exact).abs().max())
        except Exception as err:
            out["kernel_fp32_modes"] = f"FAILED: {type(err).__name__}: {str(err)[:500]}"
        try:  # the warp kernel (plus residual) against the reference and float64
            from shortcutify.ops.warp_triton import warp_triton

            x, r = torch.randn(2, c, *hw, generator=gen), torch.randn(2, c, *hw, generator=gen)
            flow = torch.randn(2, 2, *hw, generator=gen) * 4
            exact_w = (warp_reference(x.double(), flow.double()) + r.double()).float()
            for dtype in (torch.float32, torch.bfloat16):
                xd, rd, fd = x.to(device, dtype), r.to(device, dtype), flow.to(device)
                got = warp_triton(xd, fd, rd).float().cpu()
                ref = (warp_reference(xd, fd) + rd).float().cpu()
                out[f"warp_kernel_vs_reference_max_abs_{dtype}"] = float((got - ref).abs().max())
                out[f"warp_kernel_vs_exact_max_abs_{dtype}"] = float((got - exact_w).abs().max())
                out[f"warp_reference_vs_exact_max_abs_{dtype}"] = float((ref - exact_w).abs().max())
        except Exception as err:
            out["warp_kernel"] = f"FAILED: {type(err).__name__}: {str(err)[:500]}"
    else:
        out["kernel"] = "not run on a device: no CUDA device with triton (the tests check it through Triton's interpreter)"
        out.update(compile_for_hopper())
    # bf16 shortcut frames vs fp32, both layouts, random non-zero block, frames that move
    size = 32 if args.quick else 256
    for resolution in ("half", "full"):
        try:
            _, sv, x = build(size, size, 2, device, resolution, args.ngf, args.n_blocks)
            frames = [torch.roll(x, shifts=(i, 2 * i), dims=(2, 3)) for i in range(4)]
            sv.policy = FixedInterval(4)
            want = [sv(f) for f in frames]
            sv.reset()
            with torch.autocast(device, dtype=torch.bfloat16):
                got = [sv(f) for f in frames]
            out[f"bf16_autocast_psnr_{resolution}"] = min(psnr(g.float(), w.float()) for g, w in zip(got[1:], want[1:]))
            sv.reset()
            with use_fast_path(False):  # the whole frame with the kernels against it in plain PyTorch
                plain = [sv(f) for f in frames]
            out[f"fp32_fast_path_vs_plain_max_abs_{resolution}"] = max(float((g - p).abs().max()) for g, p in zip(want, plain))
        except Exception as err:
            out[f"bf16_autocast_psnr_{resolution}"] = f"FAILED: {type(err).__name__}: {str(err)[:500]}"
    return out


# float32 products: (dtype, tl.dot precision, SPLIT) -> the kernel's fp32_products name
FP32_MODES = (("fp32", "ieee", False), ("fp32", "tf32", False), ("fp32", "ieee", True))


def mode_name(dtype: str, precision: str, split: bool) -> str:
    """``fp32 (bf16x3)``, ``fp32 (tf32)``, ``fp32 (ieee)``, ``bf16``."""
    return dtype if dtype != "fp32" else f"fp32 ({'bf16x3' if split else precision})"


# (BLOCK_P, BLOCK_C, BLOCK_O, num_warps), num_stages (3: Triton's default). Compiled for sm_90a here
# (ptxas -v), every 4-warp tiling with 32 channels per step uses all 255 registers and spills, and
# float32's 3-stage pipeline takes 184 KB of shared memory at 128 pixels (one program per
# multiprocessor; the kernel now runs float32 in one stage by default); 16 channels per step or one
# stage spill less: measured next to the rest
TILES = (((64, 32, 64, 4), 3), ((32, 32, 64, 4), 3), ((128, 32, 64, 4), 3), ((128, 32, 64, 8), 3),
         ((64, 64, 64, 4), 3), ((128, 32, 128, 8), 3), ((128, 32, 64, 4), 1), ((128, 16, 64, 4), 1),
         ((128, 16, 64, 8), 1), ((64, 16, 64, 4), 1), ((32, 16, 64, 4), 1), ((128, 16, 64, 4), 3))


class _OpShapes(TorchDispatchMode):
    """Records the operand shapes of every ``shortcutify::adabd_conv`` call it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int, int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.name().startswith("shortcutify::adabd_conv"):
            b, c, hh, ww = args[1].shape
            self.seen.append((int(b), int(c), int(args[4].shape[0]), int(hh), int(ww)))
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def tile_sweep(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    """The kernel alone at the shapes the block gives it (both layouts, 256x256 and 1024x2048,
    captured from real calls), fp32 and bf16, for the tiling :func:`default_tiles` chooses and
    each one in :data:`TILES`; median ms by CUDA events."""
    from shortcutify.ops.adabd_triton import adabd_conv_triton, default_tiles, multiprocessors

    device = args.device
    if not fast_path_available(device):
        return {"skipped": f"no Triton kernel on {device} (a CUDA device, or TRITON_INTERPRET=1 on the CPU)"}
    shapes: dict[str, tuple[int, int, int, int, int]] = {}
    for resolution in ("half", "full"):
        for h, w in ((1024, 2048), (256, 256)):
            if args.quick:
                h, w = QUICK_SIZES[h], QUICK_SIZES[w]
            _, sv, x = build(h, w, 1, device, resolution, args.ngf, args.n_blocks)
            sv.policy = FixedInterval(2)
            sv(x)
            spy = _OpShapes()
            with spy:
                sv(x)
            if spy.seen:
                shapes[f"{resolution} {h}x{w}"] = spy.seen[0]
            elif device.startswith("cuda"):
                return {"skipped": f"no adabd_conv op seen in a {resolution} shortcut frame (fast path off?)"}
            else:  # the CPU dispatches to the reference: the block's shape from its width
                shapes[f"{resolution} {h}x{w}"] = (1, sv.block.width, sv.block.width, 8, 12)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name, (b, c, o, hh, ww) in shapes.items():
        gen = torch.Generator(device=device).manual_seed(0)
        t = dict(
            f_ref=torch.randn(b, c, hh, ww, generator=gen, device=device), a=torch.randn(b, c, hh, ww, generator=gen, device=device),
            offset=torch.randn(b, 18, hh, ww, generator=gen, device=device) * 2,
            mask=torch.rand(b, 9, hh, ww, generator=gen, device=device),
            weight=torch.randn(o, c, 3, 3, generator=gen, device=device) / math.sqrt(9 * c),
            bias=torch.randn(o, generator=gen, device=device),
        )
        chosen = default_tiles(b, c, o, hh * ww, multiprocessors(torch.device(device)))  # bf16's
        chosen32 = default_tiles(b, c, o, hh * ww, multiprocessors(torch.device(device)), 4)
        variants = [(torch.bfloat16, None, tiles, stages) for tiles, stages in dict.fromkeys(((chosen, None), *TILES))]
        variants += [(torch.float32, mode, chosen32, None) for mode in ("bf16x3", "tf32", "ieee")]
        variants += [(torch.float32, "tf32", chosen, 3)]  # the float32 kernel of the runs before
        variants += [(torch.float32, "bf16x3", tiles, stages) for tiles, stages in TILES]
        for dtype in (torch.float32, torch.bfloat16):
            low = {k: v.to(dtype) for k, v in t.items()}
            want = adabd_conv_triton(**low)[0].float()
            calls = {}
            for vdtype, mode, tiles, stages in variants:
                if vdtype != dtype:
                    continue
                if time.perf_counter() - started > budget_s:
                    break
                run = dict(low, tiles=tiles, num_stages=stages, **({"fp32_products": mode} if mode else {}))
                what = dict(shape=name, op=[b, c, o, hh, ww], dtype=str(dtype), tiles=list(tiles), stages=stages, fp32_products=mode)
                try:
                    err = float((adabd_conv_triton(**run)[0].float() - want).abs().max())
                except Exception as e:
                    rows.append(dict(what, error=f"{type(e).__name__}: {e}"[:300]))
                    continue
                calls[(mode, tiles, stages)] = (lambda run=run: adabd_conv_triton(**run)), err, what
            if not calls:
                continue
            secs = time_calls({str(k): fn for k, (fn, _, _) in calls.items()}, repeats=3 if args.quick else 20, warmup=1 if args.quick else 3,
                              cuda=device.startswith("cuda"))
            default_mode = "bf16x3" if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 else ("ieee" if dtype == torch.float32 else None)
            for key, (_, err, what) in calls.items():
                ruled = chosen32 if dtype == torch.float32 else chosen
                rows.append(dict(what, default=key == (default_mode, ruled, None), ms=secs[str(key)] * 1e3, max_abs_vs_default=err))
    return {"rows": rows, "wall_s": time.perf_counter() - started}


# the first run's default was 256×32×4 (its sweep: narrow channel tiles fastest, on a random flow)
WARP_TILES = ((256, 32, 4), (128, 32, 4), (256, 16, 4), (512, 8, 4), (512, 4, 4), (1024, 4, 4), (1024, 8, 8), (2048, 2, 8))


@torch.no_grad()
def warp_sweep(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    """The warp kernel alone at the half block's shapes (the reduced reference at half the decoder
    tap's resolution; the decoder tap at full resolution, plus the residual), at 256x256 and
    1024x2048 frames, fp32 and bf16: the default tiling, each of :data:`WARP_TILES`, and the
    plain-PyTorch reference (``warp_reference`` + add, eager); median ms by CUDA events. The flow
    is smooth (random on a 16-pixel grid, up-sampled; a few pixels), as a block's flow is."""
    from shortcutify.ops.warp_triton import default_warp_tiles, warp_triton
    from shortcutify.ops.adabd_triton import multiprocessors

    device = args.device
    if not fast_path_available(device):
        return {"skipped": f"no Triton kernel on {device} (a CUDA device, or TRITON_INTERPRET=1 on the CPU)"}
    width, dec = (8, 16) if args.quick else (64, 128)  # the half block's 2h and the decoder tap's channels at ngf=64
    shapes = []
    for h, w in ((1024, 2048), (256, 256)):
        if args.quick:
            h, w = QUICK_SIZES[h], QUICK_SIZES[w]
        shapes += [(f"full-res + residual {h}x{w}", (1, dec, h // 2, w // 2), True), (f"half-res {h}x{w}", (1, 2 * width, h // 4, w // 4), False)]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name, (b, c, hh, ww), residual in shapes:
        gen = torch.Generator(device=device).manual_seed(0)
        x, r = (torch.randn(b, c, hh, ww, generator=gen, device=device) for _ in range(2))
        coarse = torch.randn(b, 2, hh // 16 + 2, ww // 16 + 2, generator=gen, device=device) * 3
        flow = torch.nn.functional.interpolate(coarse, size=(hh, ww), mode="bilinear", align_corners=False)
        chosen = default_warp_tiles(b, c, hh * ww, multiprocessors(torch.device(device)))
        for dtype in (torch.float32, torch.bfloat16):
            xd, rd = x.to(dtype), (r.to(dtype) if residual else None)
            want = (warp_reference(xd, flow) + (rd if residual else 0)).float()
            calls: dict[str, Any] = {"reference": ((lambda xd=xd, rd=rd: warp_reference(xd, flow) + (rd if rd is not None else 0)), 0.0, None)}
            for tiles in dict.fromkeys((chosen, *WARP_TILES)):
                if time.perf_counter() - started > budget_s:
                    break
                try:
                    err = float((warp_triton(xd, flow, rd, tiles=tiles).float() - want).abs().max())
                except Exception as e:
                    rows.append(dict(shape=name, dtype=str(dtype), tiles=list(tiles), error=f"{type(e).__name__}: {e}"[:300]))
                    continue
                calls[str(tiles)] = (lambda xd=xd, rd=rd, tiles=tiles: warp_triton(xd, flow, rd, tiles=tiles)), err, list(tiles)
            secs = time_calls({k: fn for k, (fn, _, _) in calls.items()}, repeats=3 if args.quick else 20, warmup=1 if args.quick else 3,
                              cuda=device.startswith("cuda"))
            for key, (_, err, tiles) in calls.items():
                rows.append(dict(shape=name, op=[b, c, hh, ww], dtype=str(dtype), tiles=tiles, default=tiles == list(chosen),
                                 ms=secs[key] * 1e3, max_abs_vs_reference=err))
    return {"rows": rows, "wall_s": time.perf_counter() - started}


def run_sweeps(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Both kernels' sweeps into ``payload`` (a failure is recorded, not raised), then saved."""
    sweeps = args.sweeps.split(",")
    for key, name, sweep, budget in (("tiles", "adabd", tile_sweep, args.tile_budget_s), ("warp_tiles", "warp", warp_sweep, args.tile_budget_s / 2)):
        if name not in sweeps:
            continue
        try:
            payload[key] = sweep(args, budget_s=budget)
        except Exception as err:
            payload[key] = {"failed": f"{type(err).__name__}: {str(err)[:500]}"}
        print(f"{key}:", payload[key], flush=True)
    write(args.tag, payload)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny frames on the CPU, aot_eager: checks the script, times nothing")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--budget-s", type=float, default=330.0, help="stop starting compiled configs past this (seconds)")
    ap.add_argument("--configs", default=None, help="comma-separated config names (default: all, in priority order)")
    ap.add_argument("--resolutions", default="half,full", help="block layouts to measure ('-w2' after one: at half its automatic width; '-cl': its weights channels-last; '-mp': with the motion prior)")
    ap.add_argument("--compiled-resolutions", default=None, help="block layouts for the compiled configs (default: --resolutions)")
    ap.add_argument("--taps", default="paper", help=f"comma-separated tap pairs to measure, of {sorted(TAPS)} (default: paper)")
    ap.add_argument("--resources", action="store_true", help="no timing: each tiling's registers, spills and shared memory on sm_90a (ptxas -v; runs without a GPU)")
    ap.add_argument("--profile", action="store_true", help="record the block's and the shortcut frame's CUDA kernels (torch.profiler)")
    ap.add_argument("--tag", default=None, help="results file name (default gpu, or gpu_quick)")
    ap.add_argument("--no-tiles", dest="tiles", action="store_false", help="skip the kernels' tiling sweeps")
    ap.add_argument("--sweeps", default="adabd,warp", help="which kernels' tiling sweeps to run (adabd, warp)")
    ap.add_argument("--tile-budget-s", type=float, default=60.0, help="stop the tiling sweep past this (seconds)")
    args = ap.parse_args()
    if args.resources:
        rows = kernel_resources()
        import triton

        path = write("kernel_resources", {"machine": dict(machine("cpu"), triton=triton.__version__), "rows": rows})
        print(table(["dtype", "tiles", "stages", "registers", "spill bytes", "shared KiB", "programs / SM"],
                    [[r["dtype"], "×".join(map(str, r["tiles"])), r["stages"] or "default", r.get("registers", "-"), r.get("spill_bytes", "-"),
                      r.get("shared_kib", "-"), r.get("programs_per_sm", r.get("error", "-"))] for r in rows]))
        print(f"wrote {path}")
        return
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.ngf, args.n_blocks = (8, 2) if args.quick else (64, 6)
    args.tag = args.tag or ("gpu_quick" if args.quick else "gpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    started = time.perf_counter()
    names = args.configs.split(",") if args.configs else (list(QUICK_CONFIGS) if args.quick else list(CONFIGS))
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; known: {list(CONFIGS)}")
    tap_sets = args.taps.split(",")
    if not tap_sets or any(t not in TAPS for t in tap_sets):
        raise SystemExit(f"--taps {args.taps!r}: name tap pairs of {sorted(TAPS)}, comma-separated")
    payload: dict[str, Any] = {
        "machine": machine(args.device),
        "quick": args.quick,
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "rows": [],
        "skipped": [],
        "failed": [],
    }
    try:
        import triton

        payload["machine"]["triton"] = triton.__version__
    except ImportError:
        payload["machine"]["triton"] = None
    payload["checks"] = checks(args)
    payload["failed"] += [f"check {k}: {v}" for k, v in payload["checks"].items() if isinstance(v, str) and v.startswith("FAILED")]
    print("checks:", payload["checks"], flush=True)
    write(args.tag, payload)
    layouts = args.resolutions.split(",")
    compiled_layouts = (args.compiled_resolutions or args.resolutions).split(",")
    # eager configs in both layouts first (cheap), then the kernel's tilings, then the compiled
    # configs in priority order, both layouts of each side by side (the budget cuts the least wanted last)
    order = [(n, r, t) for n in names if not CONFIGS[n][4] for t in tap_sets for r in layouts]
    order += [(n, r, t) for n in names if CONFIGS[n][4] for t in tap_sets for r in compiled_layouts]
    swept = not args.tiles
    for name, resolution, taps in order:
        what = f"{name} ({label(resolution, taps)})"
        if not swept and CONFIGS[name][4]:
            swept = True
            run_sweeps(args, payload)
        spec = CONFIGS[name]
        elapsed = time.perf_counter() - started
        if spec[4] and elapsed + COMPILE_ESTIMATE_S > args.budget_s and not args.quick:
            payload["skipped"].append(f"{what}: {elapsed:.0f} s spent of a {args.budget_s:.0f} s budget")
            continue
        if not swept and (name, resolution, taps) == order[-1]:
            swept = True  # eager configs only: the sweeps after them
            run_sweeps(args, payload)
        try:
            row = measure(name, spec, resolution, args, taps)
        except Exception as err:  # record and go on: one failing config must not lose the others
            payload["failed"].append(f"{what}: {type(err).__name__}: {str(err)[:300]}")
            print("FAILED", what, type(err).__name__, err, flush=True)
            continue
        payload["rows"].append(row)
        print(what, {k: round(v, 3) for k, v in row["ms"].items()}, f"warm {row['warm_s']:.1f} s", flush=True)
        write(args.tag, payload)
        torch._dynamo.reset()
    payload["wall_s"] = time.perf_counter() - started
    path = write(args.tag, payload)
    print(render(payload))
    print(f"wrote {path}")
    if payload["failed"]:
        raise SystemExit(f"{len(payload['failed'])} configs failed: {payload['failed']}")


def label(resolution: str, taps: str = "paper") -> str:
    """A row's block column: the layout as asked for, and the tap pair where it is not the paper's."""
    return resolution if taps == "paper" else f"{resolution}, {taps} taps"


def render(payload: dict[str, Any], show_tiles: bool = True) -> str:
    rows = []
    for r in payload["rows"]:
        ms, ratio = r["ms"], r["ratio_to_teacher"]
        rows.append([
            r["config"], label(r["resolution"], r.get("taps", "paper")), ms["teacher"], ms["shortcut"], ratio["shortcut"], ratio["stream3"],
            ms["block"], ms["floor"], r["shortcut_to_floor"], ms.get("shortcut_reference_block", "-"),
            r["peak_mib"].get("shortcut") if r["peak_mib"].get("shortcut") is not None else "-",
        ])
    head = ["config", "block", "teacher ms", "shortcut ms", "shortcut ×", "α=3 ×", "block ms", "floor ms",
            "shortcut / floor", "shortcut ms (reference block)", "shortcut peak MiB"]
    lines = [table(head, rows)]
    pairs = {r.get("taps", "paper"): r["tap_pair"] for r in payload["rows"] if "tap_pair" in r}
    built = {label(r["resolution"], r.get("taps", "paper")): r["block_built"] for r in payload["rows"] if "block_built" in r}
    if pairs:
        lines.append("Tap pairs: " + "; ".join(f"{k} = {a} → {b}" for k, (a, b) in pairs.items()) + ". Blocks built: "
                     + "; ".join(f"{k}: {res} at width {w}" for k, (res, w) in built.items()) + ".")
    tiles = payload.get("tiles", {})
    if tiles.get("rows") and show_tiles:
        default = {(r["shape"], r["dtype"]): r["ms"] for r in tiles["rows"] if r.get("default")}
        trows = [[r["shape"], r["dtype"].replace("torch.", "") + (f" ({r['fp32_products']})" if r.get("fp32_products") else ""),
                  "×".join(map(str, r["tiles"])) + (f" s{r['stages']}" if r.get("stages") else ""), r.get("ms", "-"),
                  default[(r["shape"], r["dtype"])] / r["ms"] if "ms" in r and (r["shape"], r["dtype"]) in default else "-",
                  r.get("error", "")] for r in tiles["rows"]]
        lines.append("Kernel alone by launch tiling (BLOCK_P×BLOCK_C×BLOCK_O×warps):\n\n"
                     + table(["shape", "dtype", "tiles", "ms", "speed vs default", "error"], trows))
    elif tiles and show_tiles:
        lines.append(f"Kernel tilings: {tiles}")
    warps = payload.get("warp_tiles", {})
    if warps.get("rows") and show_tiles:
        ref = {(r["shape"], r["dtype"]): r["ms"] for r in warps["rows"] if r.get("tiles") is None and "ms" in r}
        wrows = [[r["shape"], r["dtype"].replace("torch.", ""), "×".join(map(str, r["tiles"])) if r.get("tiles") else "reference (eager)",
                  "yes" if r.get("default") else "", r.get("ms", "-"),
                  ref[(r["shape"], r["dtype"])] / r["ms"] if "ms" in r and (r["shape"], r["dtype"]) in ref else "-", r.get("error", "")]
                 for r in warps["rows"]]
        lines.append("Warp kernel alone (BLOCK_P×BLOCK_C×warps) against the plain-PyTorch reference:\n\n"
                     + table(["shape", "dtype", "tiles", "default", "ms", "× reference", "error"], wrows))
    elif warps and show_tiles:
        lines.append(f"Warp tilings: {warps}")
    if payload.get("skipped"):
        lines.append("Not measured (budget): " + "; ".join(payload["skipped"]))
    if payload.get("failed"):
        lines.append("Failed: " + "; ".join(payload["failed"]))
    return "\n\n".join(lines)


if __name__ == "__main__":
    main()
