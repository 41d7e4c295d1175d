"""Specification of suggest_taps: ranked tap pairs that shortcutify accepts, scored by MACs saved and a difficulty proxy."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from torch import nn

from generators import TwoInputGen, random_generators
from shortcutify import (
    EmptyCutError,
    ShortcutifyError,
    TapShapeError,
    TapSuggestion,
    TapSuggestions,
    shortcutify,
    suggest_taps,
)
from shortcutify.demo.teachers import load_teacher, read_split


class MixedRes(nn.Module):
    """Full, half and quarter resolution features, a skip at half resolution, two ways up."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(32, 32, 3, padding=1)
        self.up1 = nn.Conv2d(32, 16, 3, padding=1)
        self.fuse = nn.Conv2d(32, 16, 3, padding=1)
        self.up2 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.stem(x))
        d1 = F.relu(self.down1(s))
        m = F.relu(self.mid(F.relu(self.down2(d1))))
        u = F.relu(self.up1(F.interpolate(m, scale_factor=2.0, mode="bilinear")))
        u = F.relu(self.fuse(torch.cat([u, d1], dim=1)))
        return torch.tanh(self.out(F.relu(self.up2(u))))


def _cartoon_tiny():
    """The bundled tiny cartoon teacher (the paper's ResNet layout, trained) and a real 32x32 frame."""
    teacher, _ = load_teacher("cartoon-tiny")
    return teacher, read_split("bikes", "train", (32, 32), max_frames=1)


@pytest.fixture(scope="module")
def ranked():
    """The tiny cartoon teacher, its frame, and its top 5 suggestions (fx capture)."""
    teacher, x = _cartoon_tiny()
    return teacher, x, suggest_taps(teacher, x, top=5, capture="fx")


def _wraps_and_runs(gen, x, s, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sv = shortcutify(gen, s.enc_layer, s.dec_layer, x, **kw)
    sv(*x)
    out = sv(*(v + 0.01 for v in x))
    assert not sv.last_was_keyframe
    for o in (out.values() if isinstance(out, dict) else [out]):
        assert torch.isfinite(o).all()
    return sv


@pytest.mark.parametrize("which", ["mixed_resolution", "cartoon_tiny"])
def test_every_suggestion_is_a_valid_cut_that_wraps_runs_and_costs_what_it_says(which, ranked):
    torch.manual_seed(0)
    if which == "mixed_resolution":
        gen, x = MixedRes(), torch.randn(1, 3, 32, 32)
        found = suggest_taps(gen, x, top=4)
    else:
        gen, x, found = ranked
    assert isinstance(found, TapSuggestions) and all(isinstance(s, TapSuggestion) for s in found)
    assert 1 <= len(found) <= 5
    assert repr(found) == str(found) and type(found[:1]) is TapSuggestions and found[:1][0] is found[0]
    for s in found:
        assert len(s.enc.shape) == 4 and len(s.dec.shape) == 4
        assert s.skipped_macs > s.block_macs > 0 and s.saved_macs == s.skipped_macs - s.block_macs
        sv = _wraps_and_runs(gen, (x,), s)  # shortcutify raises TapOrderError unless dec is downstream of enc
        cost = sv.cost()
        assert (sv.block.resolution, sv.block.width) == (s.resolution, s.width) and cost.block.macs == s.block_macs
        assert cost.teacher.macs == s.teacher_macs
        assert cost.teacher.macs - cost.shortcut.macs == s.saved_macs
        assert cost.teacher.macs / cost.shortcut.macs == pytest.approx(s.speedup)


def test_scores_combine_saving_and_difficulty_and_are_sorted(ranked):
    found = ranked[2]
    scores = [s.score for s in found]
    assert scores == sorted(scores, reverse=True)
    for s in found:
        assert 0.0 <= s.difficulty <= 1.0 and 0.0 < s.saved_fraction < 1.0
        assert s.speedup == pytest.approx(1.0 / (1.0 - s.saved_fraction))
        assert s.score == pytest.approx(math.log(s.speedup) * (1.0 - s.difficulty))
    table = str(found)
    assert "enc_layer" in table and "difficulty" in table and found[0].enc_layer in table


def test_the_proxy_changes_the_ranking_against_macs_alone(ranked):
    # cutting from the first (full-resolution) conv saves more MACs than any suggestion, but the
    # skipped part is harder to predict from it: ranked by MACs alone it would come first
    teacher, x, found = ranked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wider = shortcutify(teacher, "model.1", found[0].dec_layer, x).cost()
    assert wider.teacher.macs - wider.shortcut.macs > found[0].saved_macs
    assert ("model.1", found[0].dec_layer) not in [(s.enc_layer, s.dec_layer) for s in found]
    assert found[0].difficulty > 0.0


def test_taps_are_named_by_module_as_users_write_them(ranked):
    found = ranked[2]
    assert all(s.enc_layer.startswith("model.") and s.dec_layer.startswith("model.") for s in found)
    assert all(s.enc.name != s.enc_layer for s in found)  # not the fx node name (model_6)


def test_fx_and_export_rank_the_same_pairs(ranked):
    gen, x, by_fx = ranked
    by_export = suggest_taps(gen, x, top=5, capture="export")
    assert [(s.enc_layer, s.dec_layer) for s in by_fx] == [(s.enc_layer, s.dec_layer) for s in by_export]
    assert [s.score for s in by_fx] == pytest.approx([s.score for s in by_export], abs=1e-3)
    _wraps_and_runs(gen, (x,), by_export[0], capture="export")


def test_real_frames_may_be_given_per_input():
    torch.manual_seed(0)
    gen = TwoInputGen()
    label, prev = torch.randn(1, 4, 16, 16), torch.randn(1, 3, 16, 16)
    clip = prev + 0.1 * torch.randn(5, 3, 16, 16)
    found = suggest_taps(gen, (label, prev), frames=(None, clip), top=2)
    assert len(found) >= 1
    _wraps_and_runs(gen, (label, prev), found[0])
    with pytest.raises(ValueError, match=r"frames\[1\]"):
        suggest_taps(gen, (label, prev), frames=(None, clip[:, :, :8]))
    with pytest.raises(ValueError, match="T >= 2"):
        suggest_taps(gen, (label, prev), frames=(None, clip[:1]))


def test_a_model_without_feature_maps_is_refused_with_what_to_check():
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
    with pytest.raises(TapShapeError, match="4-D") as e:
        suggest_taps(mlp, torch.randn(2, 16))
    assert isinstance(e.value, ShortcutifyError) and "list_taps" in str(e.value)


def test_a_model_with_nothing_to_skip_is_refused():
    with pytest.raises(EmptyCutError, match="skips"):
        suggest_taps(nn.Conv2d(3, 8, 3, padding=1), torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("top", [0, -1, True, 2.0])
def test_top_must_be_a_count(top):
    with pytest.raises(ValueError, match="top"):
        suggest_taps(MixedRes(), torch.randn(1, 3, 16, 16), top=top)


def test_an_unknown_block_layout_is_refused():
    with pytest.raises(ValueError, match="resolution"):
        suggest_taps(MixedRes(), torch.randn(1, 3, 16, 16), resolution="quarter")


@settings(max_examples=6)
@given(random_generators(max_ops=6))
def test_on_arbitrary_small_generators_every_suggestion_wraps(gen_x):
    gen, x = gen_x
    try:
        found = suggest_taps(gen, x, top=2)
    except EmptyCutError:  # e.g. every cut skips less than the smallest block costs
        assume(False)
    for s in found:
        assert s.saved_macs > 0 and len(s.dec.shape) == 4
        _wraps_and_runs(gen, (x,), s)


def test_suggesting_taps_leaves_the_models_modes_as_they_were():
    gen = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, 1, 1), nn.Dropout(0.2), nn.ReLU(), nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(),
                        nn.ConvTranspose2d(8, 3, 4, 2, 1))
    gen.train()
    gen[6].eval()  # a mix of modes, as a user mid-training may have
    before = [m.training for m in gen.modules()]
    suggest_taps(gen, torch.randn(1, 3, 32, 32), top=1)
    assert [m.training for m in gen.modules()] == before and all(p.requires_grad for p in gen.parameters())


def test_a_long_measurement_shows_a_progress_bar_unless_turned_off(monkeypatch, capsys):
    import shortcutify.core.suggest as suggest

    monkeypatch.setattr(suggest, "PROGRESS_DELAY_S", 0.0)  # every measurement counts as long
    model, x = MixedRes().eval(), torch.randn(1, 3, 16, 16)
    quiet = suggest_taps(model, x, top=2, progress=False)
    assert "suggest_taps" not in capsys.readouterr().err
    shown = suggest_taps(model, x, top=2)
    assert "suggest_taps: measuring cuts" in capsys.readouterr().err
    assert [(s.enc_layer, s.dec_layer, s.score) for s in shown] == [(s.enc_layer, s.dec_layer, s.score) for s in quiet]


class _Guided(nn.Module):
    """A frame (32x32) and a guide (16x16) whose branch joins the frame's after a stride-2 conv."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.g = nn.Conv2d(1, 32, 3, padding=1)
        self.c, self.d = nn.Conv2d(32, 32, 3, padding=1), nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.e = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x, guide):
        h = F.relu(self.b(F.relu(self.a(x))) + self.g(guide))
        return torch.sigmoid(self.e(F.relu(self.d(F.relu(self.c(h))))))


def test_no_suggestion_leaves_an_input_unread_by_shortcut_frames_and_explicit_taps_that_do_warn():
    """An encoder tap on the guide's branch would skip every path from the frame to the output: shortcut
    frames could not follow the video at all."""
    torch.manual_seed(0)
    gen = _Guided()
    inputs = (torch.rand(1, 3, 32, 32), torch.rand(1, 1, 16, 16))
    for s in suggest_taps(gen, inputs, top=5):
        sv = shortcutify(gen, s.enc_layer, s.dec_layer, inputs)
        with torch.no_grad():
            for p in sv.block.parameters():
                p.copy_(0.1 * torch.randn(p.shape))
            sv(*inputs)
            moved = sv(torch.rand(1, 3, 32, 32), inputs[1])
            sv.reset()
            sv(*inputs)
            assert not torch.equal(moved, sv(torch.rand(1, 3, 32, 32), inputs[1])), (s.enc_layer, s.dec_layer)
    with pytest.warns(UserWarning, match=r"shortcut frames do not read the generator's input\(s\) \['x'\].*'g'"):
        shortcutify(gen, "g", "c", inputs)


def test_a_ranking_by_savings_alone_says_so(monkeypatch):
    """When every cut measures the highest difficulty (a proxy the generator defeats), the order is by MACs alone."""
    import shortcutify.core.suggest as suggest_module

    monkeypatch.setattr(suggest_module._Proxy, "difficulty", lambda self, enc, dec, half: 1.0)
    with pytest.warns(UserWarning, match="every cut measured the highest difficulty.*MACs they save alone") as caught:
        suggest_taps(_Guided(), (torch.rand(1, 3, 32, 32), torch.rand(1, 1, 16, 16)), top=2)
    assert {w.filename for w in caught if "highest difficulty" in str(w.message)} == {__file__}


class _Residual(nn.Module):
    """``out = x + f(x)``: the input's change reaches the output past every cut."""

    def __init__(self) -> None:
        super().__init__()
        self.f = MixedRes()

    def forward(self, x):
        return x + 0.05 * self.f(x)


def test_a_generator_whose_output_follows_its_input_says_the_ranking_is_by_savings():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"every cut measured a difficulty of at most 0\.01.*out = x \+ f\(x\)") as caught:
        found = suggest_taps(_Residual(), torch.rand(1, 3, 32, 32) * 2 - 1, top=3)
    assert all(s.difficulty <= 0.01 for s in found)
    assert {w.filename for w in caught if "at most 0.01" in str(w.message)} == {__file__}
    teacher, x = _cartoon_tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        suggest_taps(teacher, x, top=3)  # a generator whose cuts the proxy tells apart: no warning


def test_variants_of_one_cut_are_listed_once_with_the_decoder_tap_before_the_norm():
    """Taps on a conv, its norm and its activation (one value passed on) are variants of one cut: a list of
    them would crowd out other cuts. One variant is listed, its decoder tap on the conv (before the norm, which
    then normalises the block's prediction: benchmarks/RESULTS.md, "Automatic taps")."""
    from shortcutify.demo.models import ResnetGenerator

    torch.manual_seed(0)
    gen, x = ResnetGenerator(ngf=8, n_blocks=4), torch.randn(1, 3, 64, 64)
    found = suggest_taps(gen, x, top=8)
    # (conv, norm, relu) of the downsampling and upsampling layers: model.1-3, 4-6, 7-9, 14-16, 17-19
    chain = {f"model.{i + k}": i for i in (1, 4, 7, 14, 17) for k in range(3)}
    cuts = [(chain.get(s.enc_layer, s.enc_layer), chain.get(s.dec_layer, s.dec_layer)) for s in found]
    assert len(cuts) == len(set(cuts)) == 8, [(s.enc_layer, s.dec_layer) for s in found]
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)
    assert not {s.dec_layer for s in found} & {f"model.{i + k}" for i in (1, 4, 7, 14, 17) for k in (1, 2)}


class TokensOnTheGrid(nn.Module):
    """A Swin-like generator: transformer-style layers on [B, H, W, C] tokens between conv stems."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.norm1, self.mlp1 = nn.LayerNorm(c), nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
        self.norm2, self.mlp2 = nn.LayerNorm(c), nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
        self.mid = nn.Conv2d(c, c, 3, padding=1)
        self.up = nn.ConvTranspose2d(c, 3, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stem(x).permute(0, 2, 3, 1)  # [B, H, W, C]
        t = t + self.mlp1(self.norm1(t))
        t = t + self.mlp2(self.norm2(t))
        h = F.relu(self.mid(t.permute(0, 3, 1, 2)))
        return self.up(h)


@pytest.mark.parametrize("size", [(32, 32), (24, 48)])
def test_values_laid_out_channels_last_are_not_suggested_where_feature_maps_are(size):
    torch.manual_seed(0)
    gen, x = TokensOnTheGrid(), torch.randn(1, 3, *size)
    found = suggest_taps(gen, x, top=5)
    h, w = size[0] // 2, size[1] // 2
    for s in found:
        for shape in (s.enc.shape, s.dec.shape):
            assert tuple(shape[1:3]) != (h, w), (s.enc_layer, s.dec_layer, shape)  # not [B, H, W, C]
    _wraps_and_runs(gen, (x,), found[0])


def test_an_output_that_ignores_the_frames_is_told_apart_from_frames_that_do_not_differ():
    torch.manual_seed(0)
    gen = MixedRes().eval()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="pass frames= with frames that differ"):
        suggest_taps(gen, x, frames=x.expand(4, -1, -1, -1).clone())
    last = [m for m in gen.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():  # a last layer initialised to zero, as diffusion U-Nets are before training
        last.weight.zero_()
        last.bias.zero_()
    with pytest.raises(ValueError, match="does not change when its input frames do.*initialised to zero"):
        suggest_taps(gen, x)


class Conditioned(nn.Module):
    """A conditioning input that joins after the encoder: the cut from the encoder skips its only path."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU())
        self.cond = nn.Linear(4, 16)
        self.mid = nn.Sequential(*[nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)])
        self.dec = nn.Sequential(nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ReLU())
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x, c):
        return self.out(self.dec(self.mid(self.enc(x) + 0.1 * self.cond(c)[:, :, None, None])))


class HeldConditioning(nn.Module):
    def __init__(self, gen: nn.Module, c: torch.Tensor) -> None:
        super().__init__()
        self.gen = gen
        self.register_buffer("c", c)

    def forward(self, x):
        return self.gen(x, self.c)


def test_a_better_cut_left_out_because_it_would_not_follow_an_input_is_named():
    torch.manual_seed(0)
    gen = Conditioned().eval()
    x, c = torch.randn(1, 3, 32, 32), torch.randn(1, 4)
    with pytest.warns(UserWarning, match=r"'enc.1' -> 'dec.0' .* is left out: its shortcut frames would not read input\(s\) \['c'\]"):
        found = suggest_taps(gen, (x, c), top=3)
    assert all(s.enc_layer != "enc.1" for s in found)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # held in the generator: offered, without a word
        held = suggest_taps(HeldConditioning(gen, c), x, top=3)
    assert (held[0].enc_layer, held[0].dec_layer) == ("gen.enc.1", "gen.dec.0")


def test_encoder_taps_that_do_not_change_with_the_frames_are_not_suggested():
    from test_misuse import _ZeroState

    torch.manual_seed(0)
    found = suggest_taps(_ZeroState().eval(), torch.rand(1, 3, 16, 16), top=20, progress=False)
    assert found and all(not s.enc_layer.startswith(("s", "new_zeros", "relu_1")) for s in found), [s.enc_layer for s in found]


def test_output_names_the_image_the_difficulty_judges():
    class WithFlow(nn.Module):  # (image, flow): the flow comes from the frame alone, larger than the image
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1),
            )

        def forward(self, x):
            return self.net(x), 50 * x[:, :2]

    torch.manual_seed(0)
    gen, x = WithFlow().eval(), torch.randn(1, 3, 16, 16)
    every = {(s.enc_layer, s.dec_layer): s.difficulty for s in suggest_taps(gen, x, top=10, progress=False)}
    image = {(s.enc_layer, s.dec_layer): s.difficulty for s in suggest_taps(gen, x, top=10, progress=False, output=0)}
    same = every.keys() & image.keys()
    assert same
    # the flow, which no cut skips, dilutes every cut's difficulty; the image alone shows it
    assert all(image[k] > 10 * every[k] for k in same), (every, image)
    with pytest.raises(TypeError, match="output must name the image"):
        suggest_taps(gen, x, output=1.5, progress=False)


def test_taps_computed_from_an_integer_label_map_are_still_suggested():
    class Labels(nn.Module):  # pix2pixHD-style: an integer label map embedded, beside a floating previous frame
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(5, 8)
            self.l1, self.l2, self.l3 = (nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))
            self.prev, self.out = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(16, 3, 3, padding=1)

        def forward(self, labels, prev):
            h = self.embed(labels[:, 0]).permute(0, 3, 1, 2)
            h = self.l3(torch.relu(self.l2(torch.relu(self.l1(h)))))
            return self.out(torch.cat([h, self.prev(prev)], 1))

    torch.manual_seed(0)
    gen = Labels().eval()
    labels, prev = torch.randint(0, 5, (1, 1, 16, 16)), torch.randn(1, 3, 16, 16)
    found = suggest_taps(gen, (labels, prev), top=5, progress=False)  # (the default pairs move only the frame)
    assert any(s.enc_layer.startswith(("l1", "permute")) for s in found), [(s.enc_layer, s.dec_layer) for s in found]


class _PixelShuffleSR(nn.Module):
    """A super-resolution tail: a conv making 4x the channels, then PixelShuffle(2)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(*(m for _ in range(3) for m in (nn.Conv2d(16 if _ else 3, 16, 3, padding=1), nn.ReLU())))
        self.srtail = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.PixelShuffle(2), nn.Conv2d(16, 3, 3, padding=1))

    def forward(self, x):
        return self.srtail(self.head(x))


def test_a_decoder_tap_of_sub_pixel_phases_is_not_suggested_and_is_named_when_chosen():
    """The conv before PixelShuffle holds a finer map's phases in its channels (distilled there, a block lost
    3-4 dB against the tap after the shuffle in a probe); the shuffle's output is the tap to take."""
    torch.manual_seed(0)
    gen, x = _PixelShuffleSR().eval(), torch.rand(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = suggest_taps(gen, x, top=20, progress=False)
    assert found and all(s.dec_layer != "srtail.0" for s in found)
    with pytest.warns(UserWarning, match=r"dec_layer 'srtail\.0' feeds a pixel shuffle \(node 'srtail\.1'\)"):
        shortcutify(gen, "head.0", "srtail.0", x)


class _FunctionalResidualChain(nn.Module):
    """Residual blocks written in ``forward`` (``h = h + relu(conv(h))``): the sums, not the convs' outputs, hold
    the features, and no module returns them."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, 2, 1)
        self.res = nn.ModuleList([nn.Conv2d(32, 32, 3, padding=1) for _ in range(3)])
        self.up, self.rgb = nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.c2(F.relu(self.c1(x))))
        for r in self.res:
            h = h + F.relu(r(h))
        return torch.tanh(self.rgb(F.relu(self.up(h))))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_residual_sums_written_in_forward_are_candidate_taps(capture):
    """(before: only module outputs were candidates while any pair of them qualified; here that chose a cut between
    the residual convs' own outputs, 1.2x fewer MACs, which shortcutify() then warned about)"""
    torch.manual_seed(0)
    gen, x = _FunctionalResidualChain().eval(), torch.rand(1, 3, 64, 64) * 2 - 1
    found = suggest_taps(gen, x, top=3, capture=capture)
    best = found[0]
    assert best.dec_layer.startswith("add") and best.speedup > 2.0, [(s.enc_layer, s.dec_layer, s.speedup) for s in found]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no warning that the cut skips less than its shortcut frames run)
        sv = shortcutify(gen, best.enc_layer, best.dec_layer, x, capture=capture)
    assert sv.cost().shortcut.macs == pytest.approx(sv.cost().teacher.macs / best.speedup, rel=1e-6)


class _SumInModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, h):
        return (h + F.relu(self.conv(h))) / 1.0  # (diffusers' resnets divide the sum by output_scale_factor)


class _ModuleResidualChain(_FunctionalResidualChain):
    def __init__(self) -> None:
        super().__init__()
        self.res = nn.ModuleList([_SumInModule() for _ in range(3)])

    def forward(self, x):
        h = F.relu(self.c2(F.relu(self.c1(x))))
        for r in self.res:
            h = r(h)
        return torch.tanh(self.rgb(F.relu(self.up(h))))


def test_a_sum_that_a_module_returns_is_named_by_the_module():
    torch.manual_seed(0)
    found = suggest_taps(_ModuleResidualChain().eval(), torch.rand(1, 3, 64, 64) * 2 - 1, top=3, capture="fx")
    assert found[0].dec_layer.startswith("res.") and not any(s.enc_layer.startswith("add") or s.dec_layer.startswith("add") for s in found)


class _PositionEmbedded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 16, 16, 16))

    def forward(self, x):
        h = self.c1(x)
        return self.c2(h + self.pos) + h


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_value_plus_a_weight_is_no_residual_sum_and_a_sum_of_two_values_is(capture):
    from shortcutify.core.capture import CaptureOptions
    from shortcutify.core.capture import capture as capture_graph
    from shortcutify.core.suggest import _is_residual_sum

    captured = capture_graph(_PositionEmbedded().eval(), (torch.randn(1, 3, 16, 16),), CaptureOptions(method=capture))
    sums = [n for n in captured.gm.graph.nodes if _is_residual_sum(n)]
    assert len(sums) == 1 and sums[0] in captured.gm.graph.output_node().all_input_nodes, [n.name for n in sums]


class _GlobalResidual(nn.Module):
    """ESRGAN's trunk: ``fea + trunk(body(fea))``, the first features added back around the body."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 32, 3, padding=1)
        self.body = nn.Sequential(*[m for _ in range(3) for m in (nn.Conv2d(32, 32, 3, padding=1), nn.LeakyReLU(0.2))])
        self.trunk, self.last = nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 3, 3, padding=1)

    def forward(self, x):
        fea = self.first(x)
        return self.last(fea + self.trunk(self.body(fea)))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_decoder_tap_on_a_sum_around_the_cut_moves_to_the_addend_the_cut_skips(capture):
    """The cut at ``trunk`` skips what the one at the sum does, and its tail adds the current frame's ``fea``
    exactly, where the block would have to carry it."""
    torch.manual_seed(0)
    found = suggest_taps(_GlobalResidual().eval(), torch.rand(1, 3, 32, 32) * 2 - 1, top=5, capture=capture)
    assert found[0].dec_layer == "trunk", [(s.enc_layer, s.dec_layer) for s in found]
    assert not any(s.dec_layer.startswith("add") and s.enc_layer == "first" for s in found)
