"""README's commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_block(markdown: str, heading: str) -> str:
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"section {heading!r} should hold one bash block"
    return blocks[0].strip()


def test_ci_runs_the_readme_test_command_verbatim():
    command = _bash_block((ROOT / "README.md").read_text(), "Test")
    assert "\n" not in command and command.endswith("python -m pytest -q")
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readme_demo_command_sets_up_and_runs_the_demo():
    command = _bash_block((ROOT / "README.md").read_text(), "Quick start: the whole job on real video")
    assert "\n" not in command
    assert command.startswith("python -m venv .venv") and "torch==2.13.0" in command
    assert command.endswith("python -m shortcutify demo")
