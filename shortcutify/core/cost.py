"""Cost accounting with fvcore: multiply-adds (MACs, one multiply-add = one) and parameters.

fvcore counts convolutions, norms, bilinear up-sampling and ``grid_sample`` (4 MACs per output
element, the bilinear weights); we add rules (:data:`MAC_RULES`) for matrix products of every form
(one multiply-add per output element and term of its sum: matmul, mm, bmm, mv, dot and their add- forms), ``einsum`` (:func:`einsum_macs`),
convolutions with string padding, vector norms (one MAC per element), scaled dot-product
attention, the fused inference paths of ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``,
resampling in the modes fvcore lacks (the taps blended per output element: linear, trilinear, bicubic,
nearest-exact, and antialiased shrinking in two separable passes),
and the fused AdaBD and warp ops of the fast paths (counted as their references). Like every MAC
counter it leaves out cheap element-wise ops (ReLU, sigmoid, additions). Those are
listed, per path, in :attr:`PathCost.uncounted_ops` so that nothing is left out silently;
the printed report names any other uncounted op apart (an op without a rule, or one whose rule
could not read its shapes), as missing from the figures.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..errors import UntraceableModelError
from .checks import is_interval

__all__ = ["PathCost", "CostReport", "count_macs", "call_macs", "amortised", "ELEMENTWISE_OPS"]


def amortised(keyframe: float, shortcut: float, interval: float) -> float:
    """Mean cost per frame with a keyframe every ``interval`` frames: ``(K + (α−1)·S) / α``
    (``K``, ``S``: a keyframe's and a shortcut frame's cost, in MACs or seconds)."""
    return (keyframe + (interval - 1) * shortcut) / interval

# Ops fvcore does not count and that cost at most a few operations per element: the
# usual convention of MAC counters. Anything uncounted outside this set is a bug in
# our accounting and is reported as such.
ELEMENTWISE_OPS = frozenset(
    "aten::" + op
    for op in (
        "add add_ sub sub_ rsub mul mul_ div div_ neg relu relu_ leaky_relu leaky_relu_ sigmoid tanh "
        "tanh_ hardtanh hardtanh_ clamp clamp_ clamp_min elu gelu silu silu_ exp log sqrt rsqrt pow abs "
        "ones_like zeros_like zeros ones full full_like expand expand_as view reshape flatten unflatten "
        "permute transpose t contiguous select slice index narrow cat stack chunk split split_with_sizes "
        "unsqueeze squeeze repeat size to type_as detach clone copy_ reflection_pad2d replication_pad2d "
        "constant_pad_nd pad pixel_shuffle pixel_unshuffle unbind max_pool2d avg_pool2d dropout "
        "feature_dropout alpha_dropout arange linspace meshgrid unfold im2col col2im col2im_ "
        "softmax log_softmax where masked_fill lt gt eq ne ge le Int ScalarImplicit floor_divide "
        "lerp reciprocal repeat_interleave remainder mean sum max min flip upsample_nearest1d upsample_nearest3d _unsafe_view as_strided "
        "new_zeros new_ones new_full new_empty empty empty_like scalar_tensor "
        "sin cos tan atan sinh cosh erf erfc sign square hardswish hardswish_ hardsigmoid hardsigmoid_ relu6 mish "
        "prelu softplus softsign logsigmoid gelu_ sigmoid_ exp_ neg_ clamp_max clamp_max_ clamp_min_ fill_ masked_fill_ "
        "zero_ floor ceil round trunc frac log1p expm1 log2 log10 exp2 minimum maximum logical_not logical_and logical_or "
        "amax amin argmax argmin any all max_pool2d_with_indices max_pool3d_with_indices max_unpool2d max_unpool3d "
        "max_pool1d max_pool3d avg_pool1d avg_pool3d alias lift_fresh lift_fresh_copy "
        "real imag complex view_as_real view_as_complex movedim moveaxis _weight_norm _weight_norm_interface"
    ).split()
)


def _einsum_tokens(term: str, shape: list[int], dots: int) -> list[str]:
    """The indices of one einsum operand, ``...`` expanded into ``dots`` indices named from the right
    (broadcast dimensions line up from the right across operands)."""
    if "..." not in term:
        return list(term)
    head, tail = term.split("...")
    extra = len(shape) - len(head) - len(tail)
    return list(head) + [f"...{dots - extra + i}" for i in range(extra)] + list(tail)


def einsum_macs(equation: str, shapes: list[list[int]]) -> int:
    """MACs of ``torch.einsum(equation, *operands)`` with operands of ``shapes``: contracted left to right,
    as torch does without ``opt_einsum``; each pairwise step costs the product of the sizes of every index
    of the two operands (exact for two operands). One operand (a permutation, a diagonal, a sum) counts 0,
    as element-wise work does here."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum {equation!r} names {len(terms)} operands, got {len(shapes)}")
    dots = max((len(shape) - len(term.replace("...", "")) for term, shape in zip(terms, shapes) if "..." in term), default=0)
    tokens = [_einsum_tokens(term, shape, dots) for term, shape in zip(terms, shapes)]
    sizes: dict[str, int] = {}
    for names, shape in zip(tokens, shapes):
        for name, size in zip(names, shape):
            sizes[name] = max(sizes.get(name, 1), size)  # (a broadcast dimension of size 1 takes the other's size)
    if arrow:
        out = set(_einsum_tokens(rhs, [0] * (len(rhs.replace("...", "")) + dots), dots))
    else:
        counts: dict[str, int] = {}
        for names in tokens:
            for name in names:
                counts[name] = counts.get(name, 0) + 1
        out = {name for name, n in counts.items() if n == 1 or name.startswith("...")}
    total = 0
    current = set(tokens[0])
    for j in range(1, len(tokens)):
        both = current | set(tokens[j])
        step = 1
        for name in both:
            step *= sizes[name]
        total += step
        later = out.union(*map(set, tokens[j + 1 :]))
        current = both & later
    return total


def _einsum_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::einsum``: :func:`einsum_macs` (fvcore's own handle estimates general equations through
    numpy's path optimiser, which is off by a few MACs, and fails on ``...``)."""
    from fvcore.nn.jit_handles import get_shape

    return einsum_macs(inputs[0].toIValue(), [get_shape(v) for v in inputs[1].node().inputs()])




def _product_macs(first: int, batched_sum: bool = False) -> Callable[[list[Any], list[Any]], int]:
    """A matrix product's MACs, one multiply-add per output element and term of its sum: the output's
    elements times the inner size (the last dimension of input ``first``), for every broadcast, batched
    or 1-D operand (``matmul``, ``mm``, ``bmm``, ``baddbmm``); ``batched_sum``: the batch is summed
    into the output as well (``addbmm``)."""

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        from fvcore.nn.jit_handles import get_shape

        a = get_shape(inputs[first])
        macs = math.prod(get_shape(outputs[0])) * a[-1]
        return macs * a[0] if batched_sum else macs

    return handle


def _convolution_mode_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::_convolution_mode`` (a convolution with ``padding="same"`` or ``"valid"``): as every
    convolution, each output element costs ``Cin / groups · kernel`` MACs (the weight's size but its
    first dimension)."""
    from fvcore.nn.jit_handles import get_shape

    return math.prod(get_shape(outputs[0])) * math.prod(get_shape(inputs[1])[1:])


def _vector_norm_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """A vector norm: one multiply-add per input element."""
    from fvcore.nn.jit_handles import get_shape

    total = 1
    for v in get_shape(inputs[0]):
        total *= v
    return total


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """Scaled dot-product attention: ``Q·Kᵀ`` and ``softmax(.)·V``, ``N·L·S·(E + Ev)`` for
    ``q [N..., L, E]``, ``k [N..., S, E]``, ``v [N..., S, Ev]`` (the softmax is element-wise)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(inputs[i]) for i in range(3))
    batch = 1
    for d in q[:-2]:
        batch *= d
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _attention_macs(rows: int, queries: int, keys: int, embed: int) -> int:
    """Multi-head attention with its projections, per ``rows`` (batch) of ``queries`` queries and
    ``keys`` keys of width ``embed``: the q, k, v projections, ``Q·Kᵀ`` and ``softmax(.)·V`` (over
    all heads together: ``L·S·E`` each), and the output projection."""
    return rows * (queries * embed * embed + 2 * keys * embed * embed + 2 * queries * keys * embed + queries * embed * embed)


def _native_mha_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::_native_multi_head_attention`` (``nn.MultiheadAttention``'s inference fast path):
    :func:`_attention_macs` for ``query [B, L, E]``, ``key [B, S, E]``."""
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    rows = 1
    for d in q[:-2]:
        rows *= d
    return _attention_macs(rows, q[-2], k[-2], q[-1])


def _encoder_layer_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::_transformer_encoder_layer_fwd`` (``nn.TransformerEncoderLayer``'s inference fast
    path) for ``src [B, L, E]``: self-attention (:func:`_attention_macs`), the two feed-forward
    products (``2·L·E·F``) and the two layer norms (5 per element, fvcore's count of ``layer_norm``)."""
    from fvcore.nn.jit_handles import get_shape

    src = get_shape(inputs[0])
    ffn = get_shape(inputs[14])[0]  # ffn_weight_1 [F, E]
    rows = 1
    for d in src[:-2]:
        rows *= d
    length, embed = src[-2], src[-1]
    return _attention_macs(rows, length, length, embed) + rows * (2 * length * embed * ffn + 2 * 5 * length * embed)


def _adabd_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``shortcutify::adabd_conv`` (the fast path's one op), counted as its reference is: the
    bilinear samples (4 MACs per sampled element, ``grid_sample``'s count) and one matrix
    product per output (two with ``reference_only``); the blend is element-wise."""
    from fvcore.nn.jit_handles import get_shape

    b, c, hh, ww = get_shape(inputs[1])
    cout, _, kh, kw = get_shape(inputs[4])
    columns = b * c * kh * kw * hh * ww
    products = 2 if inputs[6].toIValue() else 1
    return 4 * columns + products * cout * columns


def _warp_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``shortcutify::warp`` (the fast path's warp), counted as its reference ``grid_sample`` is:
    4 MACs per output element (the residual's addition is element-wise)."""
    from fvcore.nn.jit_handles import get_shape

    total = 4
    for d in get_shape(inputs[0]):
        total *= d
    return total


def _pointwise_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``shortcutify::pointwise_conv_add`` (the full block's reconstruction on CPU), counted as its
    reference ``conv2d`` with a 1×1 kernel is: ``Cin·Cout`` MACs per output pixel (the residual's
    addition is element-wise)."""
    from fvcore.nn.jit_handles import get_shape

    b, cin, hh, ww = get_shape(inputs[0])
    return b * hh * ww * cin * get_shape(inputs[1])[0]


def _per_output(macs: int) -> Callable[[list[Any], list[Any]], int]:
    """A resampling op's rule: ``macs`` per output element (the taps it blends: fvcore's convention for
    nearest (1) and bilinear (4) up-sampling, so linear 2, trilinear 8, bicubic 16)."""

    def rule(inputs: list[Any], outputs: list[Any]) -> int:
        from fvcore.nn.jit_handles import get_shape

        return macs * math.prod(get_shape(outputs[0]))

    return rule


def _antialiased_macs(half_taps: int) -> Callable[[list[Any], list[Any]], int]:
    """``interpolate(..., antialias=True)`` (``_upsample_{bilinear,bicubic}2d_aa``): two separable passes, width
    then height, each blending per output element the taps its filter covers, ``2 * ceil(support) + 1``
    with ``support = half_taps * scale`` when shrinking by ``scale`` (else ``half_taps``)."""

    def taps(size_in: int, size_out: int) -> int:
        support = half_taps * max(size_in / max(size_out, 1), 1.0)
        return 2 * math.ceil(support) + 1

    def rule(inputs: list[Any], outputs: list[Any]) -> int:
        from fvcore.nn.jit_handles import get_shape

        *lead, h_in, w_in = get_shape(inputs[0])
        h_out, w_out = get_shape(outputs[0])[-2:]
        rows = math.prod(lead)
        return rows * (h_in * w_out * taps(w_in, w_out) + h_out * w_out * taps(h_in, h_out))

    return rule


#: our MAC rules, by op: where fvcore has none, or one that miscounts or fails
MAC_RULES: dict[str, Callable[[list[Any], list[Any]], int]] = {
    "aten::einsum": _einsum_macs,
    "aten::matmul": _product_macs(0),
    "aten::mm": _product_macs(0),
    "aten::bmm": _product_macs(0),
    "aten::baddbmm": _product_macs(1),
    "aten::baddbmm_": _product_macs(1),
    "aten::addbmm": _product_macs(1, batched_sum=True),
    "aten::addbmm_": _product_macs(1, batched_sum=True),
    "aten::mv": _product_macs(0),  # (spectral normalisation's power iteration: mv and dot)
    "aten::addmv": _product_macs(1),
    "aten::addmv_": _product_macs(1),
    "aten::dot": _product_macs(0),
    "aten::vdot": _product_macs(0),
    "aten::_convolution_mode": _convolution_mode_macs,
    "aten::linalg_vector_norm": _vector_norm_macs,
    "aten::scaled_dot_product_attention": _sdpa_macs,
    "aten::_native_multi_head_attention": _native_mha_macs,
    "aten::_transformer_encoder_layer_fwd": _encoder_layer_macs,
    "shortcutify::adabd_conv": _adabd_macs,
    "shortcutify::warp": _warp_macs,
    "shortcutify::pointwise_conv_add": _pointwise_macs,
    "aten::upsample_linear1d": _per_output(2),
    "aten::upsample_trilinear3d": _per_output(8),
    "aten::upsample_bicubic2d": _per_output(16),
    "aten::upsample_nearest_exact1d": _per_output(1),
    "aten::_upsample_nearest_exact1d": _per_output(1),
    "aten::upsample_nearest_exact2d": _per_output(1),
    "aten::_upsample_nearest_exact2d": _per_output(1),
    "aten::upsample_nearest_exact3d": _per_output(1),
    "aten::_upsample_nearest_exact3d": _per_output(1),
    "aten::_upsample_bilinear2d_aa": _antialiased_macs(1),
    "aten::_upsample_bicubic2d_aa": _antialiased_macs(2),
}


def _fvcore_defaults() -> dict[str, Any]:
    """fvcore's own rules (``FlopCountAnalysis`` sets them), to be guarded like ours."""
    import importlib

    return dict(getattr(importlib.import_module("fvcore.nn.flop_count"), "_DEFAULT_SUPPORTED_OPS", {}))


def _guarded(op: str, rule: Callable[[list[Any], list[Any]], Any], failed: Counter[str]) -> Callable[[list[Any], list[Any]], Any]:
    """``rule``, but an op whose shapes it cannot read (a rule written for the common layouts) counts 0 and is
    reported in ``failed``, so that one odd op leaves its MACs out, said so, instead of failing the count."""

    def handle(inputs: list[Any], outputs: list[Any]) -> Any:
        try:
            return rule(inputs, outputs)
        except Exception:  # noqa: BLE001 (any failure of a rule: the op is reported as not counted)
            failed[op] += 1
            return 0

    return handle


def _fvcore_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int, Counter[str], Counter[str]]:
    with warnings.catch_warnings():  # (importing fvcore scripts functions: torch deprecates torch.jit.script)
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(module, inputs)
    failed: Counter[str] = Counter()  # ops whose rule could not read their shapes: reported as not counted
    handles = {**_fvcore_defaults(), **MAC_RULES}
    analysis.set_op_handle(**{op: _guarded(op, rule, failed) for op, rule in handles.items()})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # nn.MultiheadAttention / TransformerEncoder(Layer) take their unfused path: fvcore cannot read the
        # shapes of the nested tensors that the fused one makes of padded batches (a count of the whole
        # padded batch, as the unfused path computes it; the fused ops are counted alike where a graph calls them)
        torch.backends.mha.set_fastpath_enabled(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            total = int(analysis.total())
            by_op = Counter({k: int(v) for k, v in analysis.by_operator().items()})
            unsupported = Counter(analysis.unsupported_ops()) + failed
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return total, by_op, unsupported


class _FlatCall(nn.Module):
    """``forward(*tensors)``: calls ``fn`` with the tensor leaves of ``(args, kwargs)`` replaced.

    The output is flattened to a tuple of its tensor leaves so that fvcore's jit tracer
    accepts any structure (tuples, dicts, None) on either side.
    """

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        super().__init__()
        if isinstance(fn, nn.Module):
            self.fn = fn
        else:
            self._fn = fn
            owner = getattr(fn, "__self__", None)  # a bound method: register its module's weights
            if isinstance(owner, nn.Module):
                self.owner = owner
        flat, self.spec = tree_flatten((args, kwargs))
        self.flat = flat
        self.slots = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor)]

    def inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.flat[i] for i in self.slots)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat = list(self.flat)
        for i, t in zip(self.slots, tensors):
            flat[i] = t
        args, kwargs = tree_unflatten(flat, self.spec)
        fn = self.fn if hasattr(self, "fn") else self._fn
        out = fn(*args, **kwargs)
        return tuple(t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))


def count_macs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Counter[str], Counter[str]]:
    """MACs of one call ``fn(*args, **kwargs)``, counted by fvcore.

    Returns:
        ``(total, by_operator, uncounted_ops)``; ``uncounted_ops`` maps each aten op that
        fvcore has no handle for to its number of calls.

    Raises:
        UntraceableModelError: fvcore's jit trace of the call failed (naming what it tripped on).
    """
    call = _FlatCall(fn, args, kwargs)
    try:
        with torch.no_grad():
            return _fvcore_macs(call, call.inputs())
    except Exception as exc:  # noqa: BLE001 (whatever the jit tracer trips on: said, with the way round it)
        name = getattr(fn, "__qualname__", type(fn).__name__)
        raise UntraceableModelError(
            f"fvcore's jit trace, which counts the MACs, cannot follow {name}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}\n"
            "Some code runs in eager PyTorch but not under the jit tracer (e.g. max_unpool2d's output_size "
            "checks); a graph captured by torch.export calls ATen ops the tracer follows: wrap the generator "
            "with capture='export'."
        ) from exc


def call_macs(fn: Callable[..., Any], args: tuple, kwargs: dict) -> int:
    """MACs of one call (0 when it takes or returns no tensor)."""
    call = _FlatCall(fn, args, kwargs)
    if not call.slots:
        return 0
    with torch.no_grad():
        if not call(*call.inputs()):
            return 0
        return _fvcore_macs(call, call.inputs())[0]


def param_count(params: Any) -> int:
    """Number of distinct parameter elements."""
    seen: dict[int, int] = {}
    for p in params:
        seen[id(p)] = p.numel()
    return sum(seen.values())


@dataclass(frozen=True)
class PathCost:
    """MACs (per frame, for the whole batch of the example input) and parameters of one path.

    Attributes:
        macs: multiply-adds (fvcore, one multiply-add = one MAC).
        params: parameters the path uses.
        by_operator: ``macs`` split by operator (fvcore's names: ``"conv"``, ``"matmul"``, ...).
        uncounted_ops: operators no MAC rule covers, with how often they ran (counted as 0; reported as
            ``NOT COUNTED`` when the report is printed).
    """

    macs: int
    params: int
    by_operator: dict[str, int] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CostReport:
    """Costs of the teacher and of the paths a :class:`~shortcutify.ShortcutV2V` runs.

    Attributes:
        teacher: the generator as given.
        keyframe: a keyframe (the teacher plus the block's reference preparation).
        shortcut: a non-keyframe: everything it runs, the block included.
        block: the shortcut block alone (per frame; reference preparation excluded).
        floor: the shortcut path without the block (layers before the encoder tap and
            after the decoder tap, plus any side branch the tail needs).
        decision: what the keyframe policy's signal costs per frame (the encoder tap's
            change, for policies that use it; zero for :class:`~shortcutify.FixedInterval`);
            already included in ``keyframe`` and ``shortcut``.
        interval: mean frames per keyframe α used for :meth:`amortised_macs`.
        input_shapes: shapes of the example inputs the counts were taken on.
        interval_source: where ``interval`` came from, for the report (``""``: not said).
    """

    teacher: PathCost
    keyframe: PathCost
    shortcut: PathCost
    block: PathCost
    floor: PathCost
    interval: float
    input_shapes: tuple[tuple[int, ...], ...]
    decision: PathCost = PathCost(0, 0)
    interval_source: str = ""

    def amortised_macs(self, interval: float | None = None) -> float:
        """Mean MACs per frame with a keyframe every ``interval`` frames on average: ``(K + (α−1)·S) / α``."""
        a = self.interval if interval is None else interval
        if not is_interval(a):
            raise ValueError(f"interval must be a number >= 1, got {a!r}")
        return amortised(self.keyframe.macs, self.shortcut.macs, a)

    @property
    def shortcut_reduction(self) -> float:
        """Teacher MACs / shortcut-path MACs."""
        return self.teacher.macs / max(self.shortcut.macs, 1)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain values (JSON-ready): per path ``{"macs", "params"}``, ``interval``,
        ``amortised_macs``, ``input_shapes`` and the shortcut path's ``uncounted_ops``."""
        rows = {k: getattr(self, k) for k in ("teacher", "keyframe", "shortcut", "block", "floor", "decision")}
        d: dict[str, Any] = {k: {"macs": v.macs, "params": v.params} for k, v in rows.items()}
        d["interval"] = self.interval
        d["amortised_macs"] = self.amortised_macs()
        d["input_shapes"] = [list(s) for s in self.input_shapes]
        d["uncounted_ops"] = dict(self.shortcut.uncounted_ops)
        return d

    def __str__(self) -> str:
        t = self.teacher.macs
        rows = [
            ("teacher", self.teacher.macs, self.teacher.params),
            ("keyframe path", self.keyframe.macs, self.keyframe.params),
            ("shortcut path", self.shortcut.macs, self.shortcut.params),
            ("  block alone", self.block.macs, self.block.params),
            ("  floor (no block)", self.floor.macs, self.floor.params),
            *([("  keyframe decision", self.decision.macs, None)] if self.decision.macs else []),
            (f"amortised, α={self.interval:g}", self.amortised_macs(), None),
        ]
        head = f"{'path':<22}{'GMACs':>10}{'x teacher':>11}{'params':>14}{'x teacher':>11}"
        batch = self.input_shapes[0][0] if self.input_shapes and len(self.input_shapes[0]) == 4 else 1
        what = f"per frame of all {batch} streams" if batch > 1 else "per frame"
        lines = [f"Costs {what} on input {' + '.join('x'.join(map(str, s)) for s in self.input_shapes)} (fvcore; 1 multiply-add = 1 MAC)", head, "-" * len(head)]
        for name, macs, params in rows:
            p = "" if params is None else f"{params:>14,}"
            pr = "" if params is None else f"{params / max(self.teacher.params, 1):>11.4f}"
            lines.append(f"{name:<22}{macs / 1e9:>10.3f}{macs / max(t, 1):>11.4f}{p}{pr}")
        lines.append(
            f"shortcut frames cost 1/{self.shortcut_reduction:.2f} of the teacher's MACs (multiply-adds, not time: on small "
            "frames and on layers that move more memory than they multiply, the wall-clock gain is smaller; time both "
            "paths on your device: shortcutify.demo.timing.time_calls(path_calls(sv, frame), cuda=frame.is_cuda))"
        )
        if self.interval_source:
            lines.append(f"α={self.interval:g}: {self.interval_source}")
        unc = set(self.shortcut.uncounted_ops) | set(self.keyframe.uncounted_ops) | set(self.teacher.uncounted_ops)
        cheap, missing = sorted(unc & ELEMENTWISE_OPS), sorted(unc - ELEMENTWISE_OPS)
        if cheap:
            lines.append("not counted (element-wise, by convention): " + ", ".join(u.replace("aten::", "") for u in cheap))
        if missing:
            lines.append(
                "NOT COUNTED, no MAC rule (the figures above leave these out): " + ", ".join(u.replace("aten::", "") for u in missing)
            )
        return "\n".join(lines)
