"""Specification of cost accounting (fvcore MACs, one multiply-add = one)."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from torch.utils.flop_counter import FlopCounterMode

from generators import TinyUNet
from shortcutify import shortcutify
from shortcutify.core.cost import ELEMENTWISE_OPS, count_macs
from shortcutify.demo.models import ResnetGenerator, resnet_taps
from shortcutify.ops import use_fast_path

# ops both counters count: fvcore names on the left (conv = aten::_convolution)
MATMUL_LIKE = {"conv", "matmul", "linear", "addmm", "bmm", "mm", "einsum", "grid_sampler"}


def _grid_sampler_flops(input_shape, grid_shape, *args, out_shape=None, **kwargs):
    n, c = input_shape[:2]
    return 2 * 4 * n * c * grid_shape[1] * grid_shape[2]  # bilinear: 4 multiply-adds per output value


def _torch_macs(fn, *args, **kwargs):
    """MACs of matmul-like ops by torch's own counter (which counts 2 flops per multiply-add)."""
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.grid_sampler_2d: _grid_sampler_flops}) as m:
        with torch.no_grad():
            fn(*args, **kwargs)
    return m.get_total_flops() // 2


@pytest.fixture(scope="module")
def resnet_sv():
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=3)
    x = torch.randn(2, 3, 32, 32)
    return gen, x, shortcutify(gen, *resnet_taps(gen), x, interval=3)


def test_teacher_macs_are_fvcores(resnet_sv):
    gen, x, sv = resnet_sv
    report = sv.cost()
    assert report.teacher.macs == int(FlopCountAnalysis(gen, x).total())
    assert report.teacher.params == sum(p.numel() for p in gen.parameters())


def test_paths_add_up_and_amortise(resnet_sv):
    _, _, sv = resnet_sv
    r = sv.cost()
    assert r.keyframe.macs > r.teacher.macs  # the teacher plus the reference preparation
    assert r.block.macs > 0 and r.floor.macs > 0
    assert r.floor.macs + r.block.macs == r.shortcut.macs
    assert r.shortcut.macs < r.teacher.macs
    assert r.amortised_macs() == pytest.approx((r.keyframe.macs + 2 * r.shortcut.macs) / 3)
    assert r.amortised_macs(1) == r.keyframe.macs
    assert r.block.params == sum(p.numel() for p in sv.block.parameters())
    assert r.shortcut.params < r.teacher.params
    text = str(r)
    assert "shortcut path" in text and "amortised, α=3" in text and "block alone" in text
    d = r.as_dict()
    assert d["teacher"]["macs"] == r.teacher.macs and d["interval"] == 3


def test_every_heavy_op_is_counted_and_matches_torchs_flop_counter(resnet_sv):
    _, x, sv = resnet_sv
    fast = sv.cost()  # the fast path's fused op counts as the reference it replaces
    with use_fast_path(False):
        _check_counts_against_torch(sv, x, fast)


def _check_counts_against_torch(sv, x, fast):
    r = sv.cost()
    # nothing but element-wise ops is left uncounted, on any path
    for path in (fast.teacher, fast.keyframe, fast.shortcut, fast.block, r.teacher, r.keyframe, r.shortcut, r.block):
        assert set(path.uncounted_ops) <= ELEMENTWISE_OPS, path.uncounted_ops
    assert [p.macs for p in (fast.keyframe, fast.shortcut, fast.block)] == [p.macs for p in (r.keyframe, r.shortcut, r.block)]
    # the block's deformable sampling (grid_sample) and its fused matrix product are counted
    assert r.block.by_operator.get("grid_sampler", 0) > 0 and r.block.by_operator.get("matmul", 0) > 0
    # cross-check with torch.utils.flop_counter on the same calls
    with torch.no_grad():
        _, a, f = sv.run_keyframe(x)
        ref = sv.block.prepare_reference(a, f)
    ours_block = sum(v for k, v in r.block.by_operator.items() if k in MATMUL_LIKE)
    assert ours_block == _torch_macs(sv.block, a, ref)
    ours_short = sum(v for k, v in r.shortcut.by_operator.items() if k in MATMUL_LIKE)
    assert ours_short == _torch_macs(sv.run_shortcut, x, reference=ref)
    ours_teacher = sum(v for k, v in r.teacher.by_operator.items() if k in MATMUL_LIKE)
    assert ours_teacher == _torch_macs(sv.teacher, x)


def test_shortcut_path_of_a_unet_still_pays_for_the_skip():
    gen = TinyUNet()
    x = torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "down", "up", x)
    r = sv.cost()
    inc_macs = count_macs(gen.inc, x)[0]
    assert r.floor.macs >= inc_macs  # the encoder skip is computed on shortcut frames
    assert r.shortcut.macs < r.teacher.macs


@pytest.mark.parametrize("resolution, layout, width", [("auto", "full", 32), ("full", "full", 64), ("half", "half", 64)])
def test_paper_setting_meets_the_mac_target(resolution, layout, width):
    """RecycleGAN ResNet generator (ngf=64, 6 blocks, 256x256, the paper's taps): shortcut ≤ 1/6 teacher,
    with the default block (the full layout at half the paper's width), the paper's and the half layout."""
    gen = ResnetGenerator(ngf=64, n_blocks=6)
    x = torch.zeros(1, 3, 256, 256)
    sv = shortcutify(gen, *resnet_taps(gen), x, resolution=resolution)
    r = sv.cost()
    assert (sv.block.resolution, sv.block.width) == (layout, width)  # h = 64 as in the paper at its automatic width
    assert r.shortcut.macs * 6 <= r.teacher.macs, str(r)
    assert r.block.params * 10 < r.teacher.params


def test_the_fused_attention_paths_count_what_the_unfused_ones_do():
    """``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` run fused ops in inference; they are
    counted as their unfused paths (training mode, with dropout 0, runs those) are."""
    from torch import nn

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True).eval()

    class Fused(nn.Module):  # the op the layer's fast path calls, called directly
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            a = layer.self_attn
            return torch._transformer_encoder_layer_fwd(
                x, a.embed_dim, a.num_heads, a.in_proj_weight, a.in_proj_bias, a.out_proj.weight, a.out_proj.bias,
                False, layer.norm_first, layer.norm1.eps, layer.norm1.weight, layer.norm1.bias, layer.norm2.weight,
                layer.norm2.bias, layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias, None,
            )

    class FusedAttention(nn.Module):  # the op nn.MultiheadAttention's fast path calls, called directly
        def __init__(self):
            super().__init__()
            self.a = layer.self_attn

        def forward(self, x):
            a = self.a
            return torch._native_multi_head_attention(
                x, x, x, a.embed_dim, a.num_heads, a.in_proj_weight, a.in_proj_bias, a.out_proj.weight, a.out_proj.bias,
                need_weights=False,
            )[0]

    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        torch.testing.assert_close(Fused()(x), layer(x))
        torch.testing.assert_close(FusedAttention()(x), layer.self_attn(x, x, x, need_weights=False)[0])
    fused = count_macs(Fused(), x)
    assert set(fused[1]) == {"_transformer_encoder_layer_fwd"} and not fused[2]
    fused_attention = count_macs(FusedAttention(), x)
    assert set(fused_attention[1]) == {"_native_multi_head_attention"} and not fused_attention[2]
    evaluated = count_macs(layer, x)  # (counted on the unfused path: the fused one's nested tensors have no shape)
    layer.train()
    unfused = count_macs(layer, x)
    assert "_native_multi_head_attention" not in unfused[1] and "_transformer_encoder_layer_fwd" not in unfused[1]
    assert fused[0] == evaluated[0] == unfused[0]
    attention = count_macs(layer.self_attn, x, x, x, need_weights=False)
    assert fused_attention[0] == attention[0] > 0
    assert torch.backends.mha.get_fastpath_enabled()  # (counting turns the fast path off only while it counts)


def test_a_transformer_given_a_padding_mask_is_counted():
    """``nn.TransformerEncoder`` turns a padded batch into nested tensors on its fast path: counted as the
    unfused path computes it, the whole padded batch (before 0.22 the count failed)."""
    from torch import nn

    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2).eval()
    x = torch.randn(2, 10, 32)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[1, 6:] = True
    masked = count_macs(encoder, x, src_key_padding_mask=mask)
    assert masked[0] == count_macs(encoder, x)[0] > 0
    assert set(masked[2]) <= ELEMENTWISE_OPS, masked[2]


def test_an_op_without_a_mac_rule_is_reported_apart_from_the_element_wise_ones():
    from shortcutify.core.cost import CostReport, PathCost

    path = PathCost(10, 1, {}, {"aten::add": 2, "aten::fancy_fused_op": 1})
    text = str(CostReport(path, path, path, path, path, 3.0, ((1, 3, 8, 8),)))
    assert "not counted (element-wise, by convention): add" in text
    assert "NOT COUNTED, no MAC rule (the figures above leave these out): fancy_fused_op" in text


def test_element_wise_ops_of_other_families_are_not_reported_as_missing():
    """Timestep embeddings (sin, cos), mobile activations (hardswish, relu6), masks (masked_fill_)."""
    from torch import nn

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            h = F.hardswish(self.conv(x)) + torch.sin(x.mean()) * torch.cos(x.mean())
            h = F.relu6(h) + F.hardsigmoid(h) + F.softplus(h)
            return h.masked_fill_(h > 5, 0.0)

    _, _, uncounted = count_macs(Mixed().eval(), torch.rand(1, 3, 8, 8))
    assert set(uncounted) <= ELEMENTWISE_OPS, set(uncounted) - ELEMENTWISE_OPS


_PRODUCTS = {
    "conv-padding-same": (lambda x, w, v: F.conv2d(x, w, padding="same"), "_convolution_mode"),
    "conv-padding-valid-dilated": (lambda x, w, v: F.conv2d(x, w, padding="valid", dilation=2), "_convolution_mode"),
    "matmul-vector": (lambda x, w, v: x.flatten(2).transpose(1, 2) @ v, "matmul"),
    "matmul-broadcast-left": (lambda x, w, v: w[:, :, 0, 0] @ x.flatten(2), "matmul"),
    "matmul-broadcast-right": (lambda x, w, v: x.flatten(2).transpose(1, 2) @ w[:, :, 0, 0], "matmul"),
    "baddbmm": (lambda x, w, v: torch.baddbmm(x.flatten(2), w[:, :, 0, 0].expand(2, 6, 6), x.flatten(2)), "baddbmm"),
    "baddbmm_": (lambda x, w, v: x.flatten(2).clone().baddbmm_(w[:, :, 0, 0].expand(2, 6, 6), x.flatten(2)), "baddbmm_"),
    "addbmm": (lambda x, w, v: torch.addbmm(x[0, 0, :4], x.flatten(0, 1)[:, :4, :], x.flatten(0, 1)), "addbmm"),
    "einsum-ellipsis": (lambda x, w, v: torch.einsum("...chw,dc->...dhw", x, w[:, :, 0, 0]), "einsum"),
    "einsum-three-operands": (lambda x, w, v: torch.einsum("bchw,dc,ed->behw", x, w[:, :, 0, 0], w[:4, :, 0, 0]), "einsum"),
    "einsum-implicit-output": (lambda x, w, v: torch.einsum("bchw,dc", x, w[:, :, 0, 0]), "einsum"),
}


@pytest.mark.parametrize("name", list(_PRODUCTS))
def test_products_of_every_form_are_counted_as_torch_counts_them(name):
    """``padding="same"`` convs, matrix products with 1-D or broadcast operands, ``baddbmm`` (also in place),
    ``addbmm`` and einsums with ``...``, three operands or an implicit output: one MAC per multiply-add, as
    torch's own counter counts them (before 0.22 some counted 0, some failed the count)."""
    fn, op = _PRODUCTS[name]
    torch.manual_seed(0)
    x, w, v = torch.randn(2, 6, 8, 8), torch.randn(6, 6, 3, 3), torch.randn(6)
    macs, by_op, uncounted = count_macs(fn, x, w, v)
    reference = {  # (torch's counter skips the in-place form and addbmm: counted on their out-of-place equivalents)
        "baddbmm_": _PRODUCTS["baddbmm"][0],
        "addbmm": lambda x, w, v: x[0, 0, :4] + torch.bmm(x.flatten(0, 1)[:, :4, :], x.flatten(0, 1)).sum(0),
    }.get(name, fn)
    assert macs == _torch_macs(reference, x, w, v) > 0
    assert set(by_op) == {op} and not set(uncounted) - ELEMENTWISE_OPS, (by_op, uncounted)


def test_an_op_whose_rule_cannot_read_it_is_reported_not_counted_instead_of_failing_the_count(monkeypatch):
    from shortcutify.core import cost

    def unreadable(inputs, outputs):
        raise IndexError("list index out of range")

    monkeypatch.setitem(cost.MAC_RULES, "aten::matmul", unreadable)
    x = torch.randn(2, 6, 8)
    macs, by_op, uncounted = count_macs(lambda a: torch.relu(a @ a.transpose(1, 2)) @ a, x)
    assert macs == 0 and uncounted["aten::matmul"] == 2


@pytest.mark.parametrize("prior", [True, "local-reduced", "regional"])
def test_the_motion_priors_are_counted_in_full(prior):
    """Every op of the library's own motion priors has a MAC rule or is element-wise (before 0.22 the
    local priors' ``amax`` was reported as not counted)."""
    torch.manual_seed(0)
    sv = shortcutify(ResnetGenerator(ngf=8, n_blocks=2), "model.4", "model.12", torch.zeros(1, 3, 32, 32), motion_prior=prior)
    report = sv.cost()
    assert set(report.shortcut.uncounted_ops) <= ELEMENTWISE_OPS and "NOT COUNTED" not in str(report)


class Unpooling(torch.nn.Module):
    """Unpools to a given size, as SegNet-like generators (MONAI's Quicknat) do: eager PyTorch checks
    the size with ``torch._check_value``, which fvcore's jit tracer cannot follow."""

    def __init__(self):
        super().__init__()
        conv = torch.nn.Conv2d
        self.enc, self.dec, self.out = conv(3, 8, 3, padding=1), conv(8, 8, 3, padding=1), conv(8, 3, 1)
        self.mid = torch.nn.Sequential(conv(8, 8, 3, padding=1), torch.nn.ReLU(), conv(8, 8, 3, padding=1))

    def forward(self, x):
        h = self.enc(x)
        pooled, where = F.max_pool2d(h, 2, return_indices=True)
        return self.out(self.dec(F.max_unpool2d(self.mid(pooled), where, 2, output_size=h.size())))


def test_a_teacher_the_jit_tracer_cannot_follow_is_counted_on_its_exported_graph_and_fx_says_what_to_do():
    from shortcutify import UntraceableModelError

    gen, x = Unpooling().eval(), torch.randn(1, 3, 16, 16)
    report = shortcutify(gen, "enc", "dec", x, capture="export").cost()
    convs = 16 * 16 * 8 * 27 + 2 * 8 * 8 * 8 * 72 + 16 * 16 * 8 * 72 + 16 * 16 * 3 * 8  # enc, mid, dec, out
    assert report.teacher.macs == convs and "NOT COUNTED" not in str(report)  # (pooling, unpooling: element-wise)
    with pytest.raises(UntraceableModelError, match="capture='export'"):
        shortcutify(gen, "enc", "dec", x, capture="fx").cost()


def test_costs_are_counted_in_a_fresh_process_where_warnings_are_errors():
    # (fvcore's import scripts functions, which torch deprecates: under pytest's filterwarnings=error or -W error a
    # first count failed, blamed on an uncountable submodule)
    code = (
        "import torch, torch.nn as nn, shortcutify as S\n"
        "g = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)).eval()\n"
        "x = torch.rand(1, 3, 16, 16)\n"
        "S.list_taps(g, x)\n"
        "print(S.shortcutify(g, '0', '1', x).cost().teacher.macs)\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == 16 * 16 * 9 * (3 * 8 + 8 * 8 + 8 * 3)


def test_matrix_vector_products_and_dot_products_are_counted():
    a, v, w = torch.randn(5, 7), torch.randn(7), torch.randn(5)
    assert count_macs(torch.mv, a, v)[0] == count_macs(torch.addmv, w, a, v)[0] == 5 * 7
    assert count_macs(torch.dot, v, v)[0] == count_macs(torch.vdot, v, v)[0] == 7
    conv = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Conv2d(3, 8, 3)).eval()  # (SPADE's discriminator-style
    macs, _, uncounted = count_macs(conv, torch.randn(1, 3, 8, 8))                       # weights: mv and vdot per call)
    assert macs == 6 * 6 * 8 * 27 + 8 * 27 + 8
    assert not set(uncounted) - ELEMENTWISE_OPS, uncounted


def _naive_antialias_taps(size_in, size_out, half_taps):
    """Taps of one antialiased pass per output element, written out: the filter covers ``half_taps`` input
    pixels each side, widened by the shrink factor, plus the centre."""
    scale = size_in / size_out
    import math

    return 2 * math.ceil(half_taps * scale if scale > 1 else half_taps) + 1


@pytest.mark.parametrize("mode, antialias, per_output", [
    ("nearest-exact", False, 1), ("bicubic", False, 16), ("bilinear", True, 1), ("bicubic", True, 2),
])
@pytest.mark.parametrize("size", [(5, 7), (24, 40)])
def test_every_interpolation_mode_is_counted(mode, antialias, per_output, size):
    """Resampling costs its taps per output element (fvcore's convention for nearest 1 and bilinear 4);
    antialiased shrinking blends more taps the more it shrinks, in two separable passes."""
    x = torch.rand(2, 3, 16, 20)
    macs, _, uncounted = count_macs(lambda x: F.interpolate(x, size=size, mode=mode, antialias=antialias), x)
    assert not uncounted
    h, w = size
    if not antialias:
        assert macs == per_output * 2 * 3 * h * w
    else:
        width_pass = 2 * 3 * 16 * w * _naive_antialias_taps(20, w, per_output)
        assert macs == width_pass + 2 * 3 * h * w * _naive_antialias_taps(16, h, per_output)


@pytest.mark.parametrize("mode, dims, per_output", [("linear", 1, 2), ("trilinear", 3, 8)])
def test_linear_and_trilinear_interpolation_are_counted(mode, dims, per_output):
    x = torch.rand(1, 2, *([6] * dims))
    macs, _, uncounted = count_macs(lambda x: F.interpolate(x, scale_factor=2, mode=mode), x)
    assert not uncounted and macs == per_output * 2 * 12**dims


def test_aliases_and_fresh_constants_of_export_graphs_are_free():
    """A crop that keeps everything (``out[:, :, :H, :W]``) becomes ``aten::alias`` in an export graph, a constant
    filled in forward ``lift_fresh_copy``: neither is reported as missing."""
    from torch import nn

    class Crop(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            h, w = x.shape[-2:]
            mask = torch.tensor([1.0, 0.5, 1.0]).view(1, 3, 1, 1)
            return (self.conv(x) * mask)[:, :, :h, :w]

    gm = torch.export.export(Crop().eval(), (torch.rand(1, 3, 8, 8),), strict=False).module()
    _, _, uncounted = count_macs(gm, torch.rand(1, 3, 8, 8))
    assert set(uncounted) <= ELEMENTWISE_OPS, set(uncounted) - ELEMENTWISE_OPS
