"""time_calls runs every call the same number of times, interleaved (no timing assertions); the demo report says when timings were disturbed."""

from shortcutify.demo.timing import time_calls


def test_every_call_runs_warmup_plus_repeats_times_interleaved():
    log = []
    result = time_calls({"a": lambda: log.append("a"), "b": lambda: log.append("b")}, repeats=4, warmup=2)
    assert set(result) == {"a", "b"} and all(v >= 0 for v in result.values())
    assert log == ["a", "b"] * 6


def test_the_demo_report_says_when_other_processes_competed_for_the_cores_while_timing():
    from shortcutify.demo.cli import _report_md

    report = {
        "preset": "quick", "teacher": "t", "taps": ["a", "b"], "block_width": 8, "block_resolution": "half",
        "adaptive_policy": "AdaptiveKeyframes()", "adaptive_calibration_rate": 0.3, "fidelity": [],
        "fidelity_untrained": {"psnr": 30.0, "ssim": 0.9}, "distill": {"steps": 1, "loss_first": 1.0, "loss_last": 0.5},
        "timing_seconds": {"teacher": 2.0, "keyframe": 2.1, "shortcut": 1.0, "amortised": 1.4},
        "timing_threads": 2, "torch": "x", "wall_seconds": 1.0, "cpu_count": 2,
    }
    assert "Timings unreliable" in _report_md({**report, "timing_load_average": 5.3}, "cost")
    assert "Timings unreliable" not in _report_md({**report, "timing_load_average": 1.9}, "cost")
    assert "Timings unreliable" not in _report_md({**report, "timing_load_average": None}, "cost")
