"""Saving a trained shortcut block and attaching it to a generator again.

Only the small learned part is saved (as in PEFT): ``shortcut_block.pt`` (the block's
``state_dict``, loaded with ``weights_only=True`` so that loading never runs code) and
``shortcut_config.json`` (taps, tap shapes, width, policy, library version, example
input shapes and a signature of the teacher's graph).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import IncompatibleCheckpointError, ShortcutifyError, UntraceableModelError
from .graph import graph_fingerprint
from .policy import FixedInterval, KeyframePolicy

__all__ = ["save", "load", "CONFIG_NAME", "WEIGHTS_NAME"]

CONFIG_NAME = "shortcut_config.json"
WEIGHTS_NAME = "shortcut_block.pt"
FORMAT = 2  # 2: the block at half the decoder tap's resolution (format-1 blocks do not fit it)


def teacher_checksum(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the teacher's parameters and buffers, in state_dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float64 if t.is_floating_point() else t.dtype).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def atomic_write(path: Path, write: Any) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save(sv: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``sv``'s block and config to the directory ``path`` (created if needed)."""
    from . import __version__

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    policy = sv.policy
    policy_cfg = policy.to_config() if hasattr(policy, "to_config") else {"type": type(policy).__name__}
    examples = []
    for x in sv._example:
        if not isinstance(x, Tensor):
            raise ShortcutifyError("save() needs example inputs that are all tensors (non-tensor arguments cannot be stored)")
        examples.append({"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")})
    config = {
        "format": FORMAT,
        "library": "shortcutify",
        "library_version": __version__,
        **sv.config,
        "interval": policy.interval,
        "policy": policy_cfg,
        "example_inputs": examples,
        "teacher": type(sv.teacher).__name__,
        "teacher_checksum": teacher_checksum(sv.teacher),
        "graph_fingerprint": graph_fingerprint(sv.graph_signature),
        "graph_signature": sv.graph_signature,
    }
    state = {k: v.detach().cpu() for k, v in sv.block.state_dict().items()}
    atomic_write(out / WEIGHTS_NAME, lambda fh: torch.save(state, fh))
    atomic_write(out / CONFIG_NAME, lambda fh: fh.write(json.dumps(config, indent=1).encode()))
    return out


def _policy_from(config: dict[str, Any], policy: KeyframePolicy | None) -> KeyframePolicy:
    if policy is not None:
        return policy
    cfg = config.get("policy", {})
    if cfg.get("type") == "FixedInterval":
        return FixedInterval(int(cfg["n"]))
    raise IncompatibleCheckpointError(
        f"the block was saved with a {cfg.get('type')!r} keyframe policy, which cannot be rebuilt from JSON: "
        "pass policy=... to load()"
    )


def load(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_inputs: Any = None,
    policy: KeyframePolicy | None = None,
    map_location: str | torch.device | None = None,
    **trace_options: Any,
) -> Any:
    """Re-attach a saved shortcut block to ``model`` (the user's own generator).

    Args:
        model: a generator with the same graph as the one the block was trained on.
        path: the directory written by :meth:`ShortcutV2V.save`.
        example_inputs: inputs for tracing (default: zeros of the saved example shapes,
            on the model's device).
        policy: keyframe policy (default: the saved one).
        map_location: where to load the weights (default: the model's device).
        trace_options: ``leaf_modules``, ``tracer_kwargs``, ``concrete_args`` as given
            to :func:`shortcutify` originally.

    Raises:
        FileNotFoundError: ``path`` holds no saved block.
        IncompatibleCheckpointError: the generator does not match; the message says what differs.
    """
    from . import __version__
    from .module import shortcutify

    src = Path(path)
    cfg_file, w_file = src / CONFIG_NAME, src / WEIGHTS_NAME
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"no saved shortcut block at {src}: {f.name} is missing (write one with sv.save(path))")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise IncompatibleCheckpointError(f"{cfg_file} is not valid JSON: {exc}") from exc
    if config.get("library") != "shortcutify":
        raise IncompatibleCheckpointError(f"{cfg_file} is not a shortcutify config")
    if config.get("format") != FORMAT:
        raise IncompatibleCheckpointError(
            f"{cfg_file} holds a format-{config.get('format')} block (shortcutify {config.get('library_version')}); "
            f"this version reads format {FORMAT}, whose block has another architecture. Distil the block again "
            "with this version (the teacher is unchanged), or load it with the version that saved it."
        )
    if config.get("library_version") != __version__:
        warnings.warn(
            f"block saved by shortcutify {config.get('library_version')}, loading with {__version__}", stacklevel=2
        )
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    if example_inputs is None:
        example_inputs = tuple(
            torch.zeros(e["shape"], dtype=getattr(torch, e["dtype"]), device=device) for e in config["example_inputs"]
        )
    try:
        sv = shortcutify(
            model,
            config["enc_layer"],
            config["dec_layer"],
            example_inputs,
            policy=_policy_from(config, policy),
            width=int(config["width"]),
            resolution=str(config.get("resolution", "half")),
            **trace_options,
        )
    except (IncompatibleCheckpointError, UntraceableModelError):
        raise
    except ShortcutifyError as exc:
        raise IncompatibleCheckpointError(
            f"the saved block's taps ({config['enc_layer']!r} -> {config['dec_layer']!r}) do not fit this "
            f"{type(model).__name__}: {exc}. (If shortcutify() was given leaf_modules, tracer_kwargs or "
            "concrete_args, pass the same to load().)"
        ) from exc

    problems = []
    for key in ("enc_shape", "dec_shape"):
        if list(sv.config[key][:1]) != list(config[key][:1]):
            problems.append(f"{key[:3]} tap channels: saved {config[key][0]}, this generator {sv.config[key][0]}")
    if graph_fingerprint(sv.graph_signature) != config["graph_fingerprint"]:
        diff = list(
            difflib.unified_diff(config["graph_signature"], sv.graph_signature, "saved teacher", "this generator", n=0, lineterm="")
        )
        shown = [line for line in diff if not line.startswith("@@")][:12]
        problems.append("graph differs:\n    " + "\n    ".join(shown) + ("\n    ..." if len(diff) > len(shown) + 2 else ""))
    if problems:
        raise IncompatibleCheckpointError(
            f"the block in {src} was trained for a different generator ({config.get('teacher')}):\n  - "
            + "\n  - ".join(problems)
        )
    state = torch.load(w_file, map_location=map_location or device, weights_only=True)
    try:
        sv.block.load_state_dict(state)
    except RuntimeError as exc:
        raise IncompatibleCheckpointError(f"{w_file} does not fit the block: {exc}") from exc
    if teacher_checksum(model) != config.get("teacher_checksum"):
        warnings.warn(
            "the generator's weights differ from those the block was distilled from (same graph, other weights): "
            "shortcut frames may be poor until you distill again",
            stacklevel=2,
        )
    return sv
