"""Shared helpers of the benchmark scripts: machine description and result files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from shortcutify.demo.models import resnet_taps

RESULTS = Path(os.environ.get("SHORTCUTIFY_RESULTS", Path(__file__).parent / "results"))


def machine(device: str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on."""
    info = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device,
    }
    cpu = cpu_model()
    if cpu:
        info["cpu"] = cpu
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_model() -> str | None:
    """The CPU's model name with its widest vector extension, or ``None`` where /proc/cpuinfo does
    not say: a CPU benchmark's ratios depend on it (the speed benchmark's teacher ran about twice as
    fast on an AVX-512 machine as on the machine of the runs before 2026-11-28's last ones, whose
    CPU was not recorded)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return ", ".join(x for x in (name, vector) if x) or None


def write(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    def fmt(v: Any) -> str:
        return f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def cartoon_preset(quick: bool) -> tuple[str, tuple[int, int], tuple[int, int], int]:
    """The cartoon teacher the quality benchmarks use: (teacher name, bikes frame size, carphone frame size, crop)."""
    return ("cartoon-tiny", (68, 160), (72, 88), 64) if quick else ("cartoon", (136, 320), (144, 176), 128)


def in_fresh_processes(script: str, argv: list[str], processes: int, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run ``python script *argv --processes 1 --out FILE`` ``processes`` times, one after the
    other, each in a fresh Python process, and return what each wrote to ``FILE`` (JSON).

    For CPU timings: on this machine a process's times depend on state that differs from
    process to process (how malloc serves large tensors), so one process is one sample.
    """
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(processes):
            out = Path(tmp) / f"run{i}.json"
            print(f"process {i + 1} of {processes}", flush=True)
            subprocess.run([sys.executable, script, *argv, "--processes", "1", "--out", str(out)],
                           env=dict(os.environ, **(env or {})), check=True)
            runs.append(json.loads(out.read_text()))
    return runs


def suggested_taps(gen: Any) -> tuple[str, str]:
    """``suggest_taps``'s first choice on the trained cartoon teacher with real frames (``benchmarks/taps.py``:
    ``model.6 -> model.16`` there since 0.25), named by the generator's structure: the ReLU after the first
    down-sampling conv and the first transposed conv's output (the decoder tap at half the frame's
    resolution, at the head of its conv/norm/ReLU chain). The generators of gpu.py and speed.py have
    random weights, on which ``suggest_taps`` would rank other pairs: the pair is taken from the trained
    teacher, as a user's trained generator would give it."""
    return "model.6", f"model.{4 + 3 * gen.n_down + gen.n_blocks}"


#: the tap pairs gpu.py's and speed.py's ``--taps`` name: the paper's (the default) and suggest_taps's first choice on a trained teacher
TAPS: dict[str, Callable[[Any], tuple[str, str]]] = {"paper": resnet_taps, "suggested": suggested_taps}
