"""time_calls runs every call the same number of times, interleaved (no timing assertions)."""

from shortcutify.demo.timing import time_calls


def test_every_call_runs_warmup_plus_repeats_times_interleaved():
    log = []
    result = time_calls({"a": lambda: log.append("a"), "b": lambda: log.append("b")}, repeats=4, warmup=2)
    assert set(result) == {"a", "b"} and all(v >= 0 for v in result.values())
    assert log == ["a", "b"] * 6
