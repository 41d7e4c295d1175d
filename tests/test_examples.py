"""The examples and the demo run (quick mode) so that they cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("av")


def _run(args, cwd):
    res = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_demo_quick_writes_report_video_plot_and_block(tmp_path):
    _run(["-m", "shortcutify", "demo", "--quick", "--out", str(tmp_path / "demo")], ROOT)
    out = tmp_path / "demo"
    for name in ("report.md", "report.json", "side_by_side.mp4", "per_frame.png", "block/shortcut_config.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["cost"]["shortcut"]["macs"] < report["cost"]["teacher"]["macs"]
    assert all(v["shortcut_frames"] > 0 for v in report["fidelity"])
    assert {v["policy"] for v in report["fidelity"]} == {"FixedInterval(3)", "adaptive"}
    assert report["timing_seconds"]["teacher"] > 0
    saved = json.loads((out / "block" / "shortcut_config.json").read_text())
    assert saved["policy"]["type"] == "AdaptiveKeyframes"  # the calibrated policy travels with the block


def test_vid2vid_example_quick_with_the_full_resolution_block(tmp_path):
    _run([str(ROOT / "examples" / "vid2vid.py"), "--quick", "--steps", "10", "--resolution", "full", "--out", str(tmp_path)], ROOT)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["taps"] == ["trunk.4", "trunk.11"]
    assert report["block_resolution"] == "full"


def test_quickstart(tmp_path):
    out = _run([str(ROOT / "examples" / "quickstart.py"), "--steps", "5"], tmp_path)
    assert "keyframe" in out and "shortcut" in out and "shortcut path" in out
