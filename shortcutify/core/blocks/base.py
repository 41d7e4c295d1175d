"""What every shortcut block shares: the protocol, the alignment and AdaBD heads.

A block predicts the decoder-tap feature of the current frame ``[B, Cf, Hf, Wf]`` from the
encoder-tap feature ``a`` ``[B, Ca, Ha, Wa]`` and a reference taken on the last keyframe:

* ``prepare_reference(a_ref, f_ref)`` runs once per keyframe and returns the block's own
  reference type (a ``NamedTuple`` of tensors);
* ``block(a, reference, return_aligned=False)`` returns :class:`BlockOutput`. ``reference``
  may also be the keyframe's raw taps, :class:`KeyframeTaps`; the block then prepares the
  reference itself, so that training uses every parameter inside one ``forward`` (as
  ``DistributedDataParallel`` wants).

A new block type subclasses :class:`ShortcutBlock`, implements ``_reductions``,
``_reconstruction``, ``prepare_reference`` and ``_predict``, and is registered in
:data:`shortcutify.core.blocks.BLOCK_TYPES` under its ``resolution`` name.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from ...errors import InputMismatchError
from ...ops import MOTION_PRIORS, adabd_conv, coarse_features, coarse_grid, coarse_pool, correlation_flow
from ...ops.fast_path import fast_path_enabled, scoped_switch
from ...ops.gather import gather_pays
from ..checks import is_count
from .principal import PatchMoments, principal_components, set_rows_
from .resize import half_size

__all__ = ["ShortcutBlock", "BlockOutput", "KeyframeTaps", "tap_size_of", "LightConv", "default_width", "rows_inside", "channels_last_inside", "motion_pool_for", "prior_names", "REDUCED_PRIORS", "PRIOR_LEFT_OUT_EVERY", "REDUCTION_SHIFT", "REDUCTIONS", "START_REDUCTIONS"]

#: a block with the motion prior trains every ``PRIOR_LEFT_OUT_EVERY``-th sample of a batch without it (the others
#: with it): distilled from the prior on every sample, the cartoon teacher's block learned to correct the prior
#: and little else in 250 steps (``benchmarks/RESULTS.md``, "Motion prior")
PRIOR_LEFT_OUT_EVERY = 2

#: :meth:`ShortcutBlock.init_reductions`'s default: each reduced channel starts this many of its
#: standard deviations above zero, so that the ReLU after the reduction passes nearly all of it
#: (chosen among shifts by ``benchmarks/data_init.py``; ``benchmarks/RESULTS.md``, "Data-dependent start")
REDUCTION_SHIFT = 2.0
#: the block's two reductions by the names :meth:`ShortcutBlock.init_reductions` takes: ``"encoder"``
#: (``reduce_enc``, read by the flow and offset heads) and ``"decoder"`` (``reduce_dec``, the content AdaBD blends)
REDUCTIONS = ("encoder", "decoder")
#: the reductions :meth:`ShortcutBlock.init_reductions` sets by default: the decoder tap's alone (starting
#: the encoder tap's too distilled worse blocks on most teachers measured and about equal ones on the
#: others; ``benchmarks/RESULTS.md``, "Data-dependent start" and "Distillation over many teachers")
START_REDUCTIONS: tuple[str, ...] = ("decoder",)


class KeyframeTaps(NamedTuple):
    """A keyframe's raw tap values: ``enc`` ``[B, Ca, Ha, Wa]``, ``dec`` ``[B, Cf, Hf, Wf]``."""

    enc: Tensor
    dec: Tensor


class BlockOutput(NamedTuple):
    """What a block returns.

    Attributes:
        feature: the predicted decoder-tap feature ``[B, Cf, Hf, Wf]``.
        aligned: the prediction from the warped reference alone (AdaBD's mask ``m = 0``),
            same shape, when asked for with ``return_aligned=True`` (distillation's
            alignment loss), else ``None``.
    """

    feature: Tensor
    aligned: Tensor | None


def tap_size_of(a: Tensor) -> Tensor:
    """``[B, 0, Ha, Wa]`` for an encoder tap ``a [B, Ca, Ha, Wa]``: a tensor without values whose shape records
    the tap's size, what a reference keeps to refuse frames of another size (:meth:`ShortcutBlock.forward`)."""
    return a.new_empty((a.shape[0], 0, a.shape[-2], a.shape[-1]))


def _light_groups(cin: int, cout: int, min_per_group: int = 8) -> int:
    g = math.gcd(cin, cout)
    best = 1
    for d in range(1, g + 1):
        if g % d == 0 and cin // d >= min_per_group and cout // d >= min_per_group:
            best = d
    return best


class LightConv(nn.Module):
    """Heterogeneous conv: a grouped 3×3 conv and a pointwise conv in parallel, summed.

    ``[B, cin, H, W] -> [B, cout, H, W]``; MACs per position ``9·cin·cout/g + cin·cout``.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(cin, cout, 3, padding=1, groups=_light_groups(cin, cout), bias=False)
        self.point = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(x) + self.point(x)


#: motion priors that compare the block's own reduced encoder features (``h`` channels on the flow
#: grid: what the flow head reads, so nothing is computed for them alone but the pooling) instead of the
#: raw encoder tap (``Ca`` channels): name -> the estimator, a key of :data:`~shortcutify.ops.MOTION_PRIORS`.
#: The estimator stays parameter-free, but its input is learned: it starts as the reduction's random (or
#: data-started) projection and changes as the block is distilled. Several times cheaper than the tap's
#: on wide taps (``benchmarks/RESULTS.md``, "Motion prior").
REDUCED_PRIORS: dict[str, str] = {"local-reduced": "local"}


def prior_names() -> tuple[str, ...]:
    """Every name a block's ``motion_prior`` takes: the keys of :data:`~shortcutify.ops.MOTION_PRIORS`
    (on the encoder tap) and of :data:`REDUCED_PRIORS` (on the reduced encoder features)."""
    return (*MOTION_PRIORS, *REDUCED_PRIORS)


def motion_prior_name(value: object) -> str | None:
    """A block's ``motion_prior`` argument as stored: ``None`` (no prior) or one of
    :func:`prior_names`; ``True`` is ``"local"``, ``False`` ``None``.

    Raises:
        ValueError: anything else (the message lists what is accepted).
    """
    if value is None or value is False:
        return None
    if value is True:
        return "local"
    if isinstance(value, str) and value in prior_names():
        return value
    raise ValueError(f"motion_prior must be True, False, None or one of {prior_names()}, got {value!r}")


def motion_pool_for(dec_size: tuple[int, int]) -> int:
    """The motion prior's pooling factor for a decoder tap of ``dec_size`` ``(Hf, Wf)``: both layouts
    predict the flow at half that resolution (:func:`~shortcutify.core.blocks.resize.half_size`), and
    :func:`~shortcutify.ops.coarse_pool` pools that grid to a longer side near 40."""
    return coarse_pool(half_size(dec_size))


_ROWS_INSIDE = {"enabled": True}


def channels_last_inside(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Blocks run their inside in channels-last memory where :func:`rows_inside` says it pays (``True``, the
    default) or always in the plain layout (``False``: as before 0.19; for comparisons, e.g.
    ``benchmarks/speed.py``): from the call on, or within a ``with`` block only (as :func:`~shortcutify.ops.use_fast_path`).
    Same numbers up to rounding."""
    return scoped_switch(_ROWS_INSIDE, enabled)


def rows_inside(x: Tensor) -> bool:
    """Whether a block runs its inside in channels-last memory (channel rows), for its reduced feature
    ``x [B, h, H, W]`` at AdaBD's resolution: CPU inference (no gradient recorded, not traced by
    ``torch.compile``, fast paths on, :func:`~shortcutify.ops.use_fast_path`) where AdaBD takes its
    row gathers on channels-last features (:func:`~shortcutify.ops.gather.gather_pays` with ``rows=True``:
    there its product writes channel rows,
    and the block's convs and interpolations are faster in that layout; on the plain-PyTorch AdaBD the
    layout makes its blend slower), unless :func:`channels_last_inside` turned it off. A block's output is
    contiguous either way (the tail reads that faster)."""
    return (
        _ROWS_INSIDE["enabled"]
        and x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.compiler.is_compiling() and fast_path_enabled()
        and gather_pays(x, rows=True)
    )


#: the most channels a block takes or is built with (far above any generator's feature maps; a width beyond it is a
#: mistake whose weights would not fit in memory)
MAX_CHANNELS = 1 << 16


def default_width(enc_channels: int, dec_channels: int) -> int:
    """Block width ``h`` from the tap widths: half the narrower tap, at least 4."""
    return max(4, min(enc_channels, dec_channels) // 2)


def zero_(conv: nn.Module) -> nn.Module:
    """Zero a conv's weight and bias (a head that starts as "no change")."""
    nn.init.zeros_(conv.weight)  # type: ignore[arg-type]
    if getattr(conv, "bias", None) is not None:
        nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
    return conv


def _head(h: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(LightConv(2 * h, h), nn.ReLU(), LightConv(h, h), nn.ReLU(), zero_(nn.Conv2d(h, out_channels, 1)))


class ShortcutBlock(nn.Module, ABC):
    """Shortcut-V2V's block with AdaBD (adaptive blending and deformation), sized from the taps.

    Abstract: :class:`~shortcutify.core.blocks.HalfResolutionBlock` and
    :class:`~shortcutify.core.blocks.FullResolutionBlock` are the two layouts; build one by
    name with :func:`~shortcutify.core.blocks.make_block`.

    Args:
        enc_channels: ``Ca``, channels of the encoder tap.
        dec_channels: ``Cf``, channels of the decoder tap.
        width: ``h``, the block's internal width (default :func:`default_width`).
        kernel_size: kernel of the AdaBD deformable conv (odd).
        motion_prior: start the flow from a parameter-free estimate
            (:func:`~shortcutify.ops.correlation_flow` between the current and the reference
            encoder taps, pooled to a coarse grid); the flow head then learns a correction.
            ``False``/``None``: off (default: the flow head alone); ``True``: ``"local"``;
            or a key of :data:`~shortcutify.ops.MOTION_PRIORS` (``"local"``, ``"regional"``:
            the estimator of versions 0.5 to 0.9), or of :data:`REDUCED_PRIORS`
            (``"local-reduced"``: ``"local"`` on the block's reduced encoder features). Stored as
            that key (or ``None``). In training mode every second sample of a batch goes without
            it (:data:`PRIOR_LEFT_OUT_EVERY`).
        motion_pool: the prior's pooling factor from the flow grid to its coarse grid (an
            integer >= 1, fixing the search range in pixels), or ``None``: from each call's size
            (:func:`~shortcutify.ops.coarse_grid`). :func:`~shortcutify.shortcutify` sets it
            for the frame size it was built on (:func:`motion_pool_for`), so that a block
            distilled on crops searches as far, in pixels, as on whole frames.

    Both layouts share: a flow head (a light conv stack on ``[a_t, a_ref]`` predicting one
    flow ``[B, 2, ., .]`` (dy, dx) in pixels), an AdaBD head (a light conv stack on
    ``[aligned a_ref, a_t]`` predicting 3×3 offsets ``[B, 2k², ., .]`` and a blending mask
    ``m = sigmoid(.)`` ``[B, k², ., .]``), and one modulated deformable conv with shared
    weights applied to the aligned reference feature (offsets, modulation ``1 − m``) and to
    the current feature (zero offsets, modulation ``m``), fused into one matrix product
    (:func:`~shortcutify.ops.adabd_conv`). Heads and reconstruction start at zero: an
    untrained block predicts the reference feature warped by the motion prior (by nothing
    without it).
    """

    resolution: ClassVar[str]

    def __init__(
        self, enc_channels: int, dec_channels: int, width: int | None = None, kernel_size: int = 3,
        motion_prior: bool | str | None = False, motion_pool: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("enc_channels", enc_channels), ("dec_channels", dec_channels), ("kernel_size", kernel_size)):
            if not is_count(value) or value > MAX_CHANNELS:
                raise ValueError(f"{name} must be an integer from 1 to {MAX_CHANNELS}, got {value!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if motion_pool is not None and not is_count(motion_pool):
            raise ValueError(f"motion_pool must be an integer >= 1 or None, got {motion_pool!r}")
        h = default_width(enc_channels, dec_channels) if width is None else width
        if not is_count(h) or h > MAX_CHANNELS:
            raise ValueError(f"width must be an integer from 1 to {MAX_CHANNELS}, got {width!r}")
        h = int(h)
        self.enc_channels, self.dec_channels, self.width, self.kernel_size = enc_channels, dec_channels, h, kernel_size
        self.motion_prior = motion_prior_name(motion_prior)
        self.motion_pool = None if motion_pool is None else int(motion_pool)
        k2 = kernel_size * kernel_size
        self.reduce_enc, self.reduce_dec = self._reductions(enc_channels, dec_channels, h)
        self.flow_head = _head(h, 2)
        self.adabd_head = _head(h, 3 * k2)
        self.weight = nn.Parameter(torch.empty(h, h, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(h))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's fan-in init
        bound = 1 / math.sqrt(h * k2)
        nn.init.uniform_(self.bias, -bound, bound)
        self.reconstruct = zero_(self._reconstruction(h, dec_channels))

    # ------------------------------------------------------------ what a layout defines
    @abstractmethod
    def _reductions(self, enc_channels: int, dec_channels: int, h: int) -> tuple[nn.Module, nn.Module]:
        """The convs that take the encoder and decoder taps to width ``h``."""

    @abstractmethod
    def _reconstruction(self, h: int, dec_channels: int) -> nn.Module:
        """The conv that takes the blended feature back to the decoder tap's width."""

    @abstractmethod
    def reduction_inputs(self, a: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        """What ``reduce_enc`` and ``reduce_dec`` read for the taps ``a [B, Ca, Ha, Wa]``, ``f [B, Cf, Hf, Wf]``
        (the inputs whose statistics :meth:`init_reductions` takes)."""

    @abstractmethod
    def prepare_reference(self, a_ref: Tensor, f_ref: Tensor) -> Any:
        """The reference state from a keyframe's taps ``a_ref [B, Ca, Ha, Wa]``, ``f_ref [B, Cf, Hf, Wf]``."""

    @abstractmethod
    def _predict(self, a: Tensor, reference: Any, return_aligned: bool) -> BlockOutput:
        """Predict from ``a`` and a prepared reference."""

    # ------------------------------------------------------------------ shared
    def forward(self, a: Tensor, reference: Any, return_aligned: bool = False) -> BlockOutput:
        """Predict the decoder-tap feature ``[B, Cf, Hf, Wf]`` from ``a [B, Ca, Ha, Wa]``.

        ``reference``: what :meth:`prepare_reference` returned, or the keyframe's
        :class:`KeyframeTaps` (then prepared here). ``return_aligned``: also return the
        prediction from the warped reference alone.

        Raises:
            InputMismatchError: ``a`` has another size than the encoder tap the reference was made from.
        """
        if isinstance(reference, KeyframeTaps):
            reference = self.prepare_reference(reference.enc, reference.dec)
        made_from = getattr(reference, "tap", None)
        if made_from is not None and made_from.shape[-2:] != a.shape[-2:]:
            raise InputMismatchError(
                f"the reference was made from an encoder tap of {made_from.shape[-2]}x{made_from.shape[-1]}, but this frame's "
                f"is {a.shape[-2]}x{a.shape[-1]}: a reference serves frames of its keyframe's size only. Prepare it from a "
                "keyframe of these frames, sv.prepare_reference(sv.run_keyframe(*inputs))"
            )
        return self._predict(a, reference, return_aligned)

    def reference_size(self, reference: Any) -> tuple[int, int] | None:
        """The decoder tap's size ``(Hf, Wf)`` that ``reference`` (what :meth:`prepare_reference` returned,
        or a keyframe's :class:`KeyframeTaps`) was made for: a frame whose decoder tap has another size cannot be
        predicted from it. ``None`` where a layout does not say (the base class knows only the taps)."""
        if isinstance(reference, KeyframeTaps):
            return int(reference.dec.shape[-2]), int(reference.dec.shape[-1])
        return None

    @property
    def untrained(self) -> bool:
        """``True`` while the reconstruction is all zero, as built: the block then predicts the
        warped reference feature alone, whatever its other weights (no training step has changed it)."""
        return not any(bool(p.detach().any()) for p in self.reconstruct.parameters())

    @torch.no_grad()
    def init_reductions(
        self, taps: Iterable[KeyframeTaps], shift: float = REDUCTION_SHIFT, reductions: str | Iterable[str] = START_REDUCTIONS
    ) -> None:
        """Start reductions from the taps' principal components.

        Each reduction named in ``reductions`` (a conv from ``C`` channels to the block's width
        ``h``, then ReLU) is set to a projection onto the ``h`` leading principal components of
        what it reads on ``taps``
        (:func:`~shortcutify.core.blocks.principal.principal_components`: at the scale PyTorch's
        default initialisation gives on that input), each component centred and raised by
        ``shift`` of its standard deviations, so that the ReLU passes it nearly whole: the block
        starts from the tap's strongest directions instead of a random half of a random projection.
        The others keep their weights. By default only the decoder tap's reduction is set (the
        content AdaBD blends and the reconstruction reads); the encoder tap's feeds the flow and
        offset heads, and starting it too distilled worse blocks on most teachers measured
        (:data:`START_REDUCTIONS`).
        Nothing else changes: an untrained block still predicts the warped reference (its flow
        head reads the encoder features, but its last conv is still zero).

        Args:
            taps: keyframe taps (:class:`KeyframeTaps`: ``enc [B, Ca, Ha, Wa]``,
                ``dec [B, Cf, Hf, Wf]``) of sample frames; one pass, moments gathered in float64.
            shift: how many standard deviations each reduced channel starts above zero.
            reductions: which reductions to set, names from :data:`REDUCTIONS` (one name or several).

        Raises:
            ValueError: ``taps`` is empty, a tap does not have the block's channels, or
                ``reductions`` names no reduction or an unknown one.
            FloatingPointError: the taps are not finite; the block is unchanged.
        """
        names = (reductions,) if isinstance(reductions, str) else tuple(reductions)
        unknown = [n for n in names if n not in REDUCTIONS]
        if unknown or not names:
            raise ValueError(f"reductions must name one or more of {REDUCTIONS}, got {reductions!r}")
        convs = {"encoder": self.reduce_enc, "decoder": self.reduce_dec}
        moments: dict[str, PatchMoments] | None = None
        for t in taps:
            if t.enc.shape[1] != self.enc_channels or t.dec.shape[1] != self.dec_channels:
                raise ValueError(
                    f"taps of {t.enc.shape[1]} and {t.dec.shape[1]} channels; this block reads {self.enc_channels} "
                    f"(encoder tap) and {self.dec_channels} (decoder tap)"
                )
            if moments is None:
                moments = {n: PatchMoments(convs[n]) for n in REDUCTIONS if n in names}  # type: ignore[arg-type]
            inputs = dict(zip(REDUCTIONS, self.reduction_inputs(t.enc, t.dec)))
            for n, m in moments.items():
                m.update(inputs[n])
        if moments is None:
            raise ValueError("init_reductions needs the taps of at least one keyframe")
        try:  # all derived before any is set: a failure leaves the block as it was
            rows = {n: principal_components(m, self.width, shift) for n, m in moments.items()}
        except FloatingPointError as err:
            raise FloatingPointError(f"init_reductions: the taps are not finite (NaN or Inf); the block is unchanged ({err})") from None
        for n, (w, b) in rows.items():
            set_rows_(convs[n], w, b)  # type: ignore[arg-type]

    def reference_parameters(self) -> list[nn.Parameter]:
        """The parameters :meth:`prepare_reference` uses (counted in the keyframe path's cost)."""
        return [*self.reduce_enc.parameters(), *self.reduce_dec.parameters()]

    @property
    def prior_reads_reduced(self) -> bool:
        """Whether the motion prior compares the reduced encoder features (:data:`REDUCED_PRIORS`)
        rather than the encoder tap."""
        return self.motion_prior in REDUCED_PRIORS

    def motion_features(self, a: Tensor, grid: tuple[int, int], reduced: Tensor | None = None) -> Tensor:
        """What the motion prior compares: the encoder tap ``a [B, Ca, Ha, Wa]``, or for a prior
        of :data:`REDUCED_PRIORS` the block's reduced encoder features ``reduced [B, h, ., .]``
        on the flow grid ``grid``, as unit vectors on the coarse grid (``[B, C, h', w']``,
        float32, no gradient; pooled by ``motion_pool`` where it is set)."""
        x = a
        if self.prior_reads_reduced:
            if reduced is None:
                raise ValueError(f"motion_prior={self.motion_prior!r} compares the reduced encoder features: pass them as reduced=")
            x = reduced
        with torch.no_grad():
            return coarse_features(x, coarse_grid(grid, pool=self.motion_pool))

    def _prior(self, a: Tensor, ref_motion: Tensor, grid: tuple[int, int], reduced: Tensor | None = None) -> Tensor | None:
        """The motion prior on ``grid`` (``[B, 2, H, W]`` in its pixels), or ``None`` without one
        (``reduced``: the reduced encoder features on ``grid``, what a prior of :data:`REDUCED_PRIORS` compares).

        In a training step (training mode, gradients recorded) every second sample of a batch
        (indices 1, 3, ...) goes without it (zero flow), so that the flow head also learns to align
        by itself instead of only correcting the prior (:data:`PRIOR_LEFT_OUT_EVERY`); otherwise
        (eval mode, or frames streamed without gradients) every sample has it, so that a stream's
        output never depends on its place in a batch.
        """
        if not self.motion_prior:
            return None
        leave_out = self.training and torch.is_grad_enabled()
        with torch.no_grad():
            estimator = MOTION_PRIORS[REDUCED_PRIORS.get(self.motion_prior, self.motion_prior)]
            prior = correlation_flow(self.motion_features(a, grid, reduced), ref_motion, grid, **estimator).to(a.dtype)
            if leave_out and prior.shape[0] > 1:
                keep = (torch.arange(prior.shape[0], device=prior.device) % PRIOR_LEFT_OUT_EVERY != PRIOR_LEFT_OUT_EVERY - 1).to(prior.dtype)
                prior = prior * keep.view(-1, 1, 1, 1)
            return prior

    def _adabd(self, a_ref: Tensor, a: Tensor, f_ref: Tensor, return_aligned: bool) -> tuple[Tensor, Tensor | None]:
        """AdaBD: offsets and blending mask from ``[aligned a_ref, a]``, then one fused modulated deformable conv."""
        pred = self.adabd_head(torch.cat([a_ref, a], dim=1))
        k2 = self.kernel_size * self.kernel_size
        offset, mask = pred[:, : 2 * k2], torch.sigmoid(pred[:, 2 * k2 :])
        return adabd_conv(f_ref, a, offset, mask, self.weight, self.bias, reference_only=return_aligned)

    def extra_repr(self) -> str:
        return (
            f"enc_channels={self.enc_channels}, dec_channels={self.dec_channels}, width={self.width}, "
            f"kernel_size={self.kernel_size}, resolution={self.resolution!r}, motion_prior={self.motion_prior!r}"
            + (f", motion_pool={self.motion_pool}" if self.motion_pool is not None else "")
        )
