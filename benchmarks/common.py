"""Shared helpers of the benchmark scripts: machine description and result files."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

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
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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
