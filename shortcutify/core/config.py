"""The typed description of a shortcut: which taps, which block (what :meth:`ShortcutV2V.save` stores)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .blocks import prior_names

__all__ = ["ShortcutConfig"]


@dataclass(frozen=True)
class ShortcutConfig:
    """Taps and block of a :class:`~shortcutify.ShortcutV2V`; enough to rebuild it on the same generator.

    Attributes:
        enc_layer, dec_layer: the tap names as given to :func:`~shortcutify.shortcutify`.
        enc_node, dec_node: the fx node names they resolved to.
        enc_shape, dec_shape: the taps' ``[C, H, W]`` on the example input.
        width: the block's width ``h``.
        resolution: the block layout (a key of :data:`shortcutify.core.blocks.BLOCK_TYPES`; the
            one built, never ``"auto"``).
        kernel_size: the AdaBD deformable conv's kernel.
        capture: how the generator's graph was captured, ``"fx"`` or ``"export"`` (a saved
            block is attached again by the same path).
        motion_prior: the parameter-free motion estimate the block starts its flow from: one
            of :func:`~shortcutify.core.blocks.prior_names`, or ``None`` (none, the default).
            ``from_dict`` reads a missing key (blocks saved before 0.5) or ``False`` as
            ``None``, and ``True`` (0.5 to 0.9, when there was one estimator) as ``"regional"``.
    """

    enc_layer: str
    dec_layer: str
    enc_node: str
    dec_node: str
    enc_shape: tuple[int, ...]
    dec_shape: tuple[int, ...]
    width: int
    resolution: str = "half"
    kernel_size: int = 3
    capture: str = "fx"
    motion_prior: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (shapes as lists)."""
        d = asdict(self)
        d["enc_shape"], d["dec_shape"] = list(self.enc_shape), list(self.dec_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShortcutConfig:
        """From :meth:`to_dict`'s output; keys that are not fields are ignored.

        ``resolution``, ``kernel_size`` and ``capture`` default to ``"half"``, 3 and ``"fx"``
        (earlier format-2 blocks were saved without them); ``motion_prior`` as described
        above.

        Raises:
            ValueError: a required field is missing or has the wrong type.
        """
        if not isinstance(d, dict):
            raise ValueError(f"shortcut config must be a dict (from to_dict()), got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.name not in ("resolution", "kernel_size", "capture", "motion_prior")}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"shortcut config lacks {missing}")
        kw = {k: v for k, v in d.items() if k in names}
        prior = kw.get("motion_prior")
        kw["motion_prior"] = None if prior is None or prior is False else "regional" if prior is True else prior
        try:
            kw["enc_shape"], kw["dec_shape"] = tuple(int(v) for v in kw["enc_shape"]), tuple(int(v) for v in kw["dec_shape"])
            for key in ("width", "kernel_size"):
                if key in kw:
                    if isinstance(kw[key], bool) or not isinstance(kw[key], int) or kw[key] < 1:
                        raise TypeError(f"{key} must be an int >= 1, got {kw[key]!r}")
            if len(kw["enc_shape"]) != 3 or len(kw["dec_shape"]) != 3 or min(*kw["enc_shape"], *kw["dec_shape"]) < 1:
                raise ValueError(f"enc_shape and dec_shape must be [C, H, W] of sizes >= 1, got {d['enc_shape']!r}, {d['dec_shape']!r}")
            for key in ("enc_layer", "dec_layer", "enc_node", "dec_node", "resolution", "capture"):
                if key in kw and not isinstance(kw[key], str):
                    raise TypeError(f"{key} must be a str, got {kw[key]!r}")
            if kw["motion_prior"] is not None and kw["motion_prior"] not in prior_names():
                raise TypeError(f"motion_prior must be null, true, false or one of {prior_names()}, got {kw['motion_prior']!r}")
            if kw.get("capture", "fx") not in ("fx", "export"):
                raise ValueError(f"capture must be 'fx' or 'export', got {kw['capture']!r}")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"shortcut config is malformed: {exc}") from exc
        return cls(**kw)
