"""The package's layers import one way: ops <- core <- train <- demo."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "shortcutify"
ORDER = ["ops", "core", "train", "demo"]  # a layer may import only the layers before it


def _imported_layers(source: str, rel: tuple[str, ...]) -> set[str]:
    """The layers a module imports (relative or absolute imports of shortcutify.<layer>).

    ``rel``: the module's path inside the package, e.g. ``("core", "module.py")``.
    """
    layers = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # resolve a relative import against the file's package
                base = list(rel[:-1])[: len(rel) - node.level]
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts + [a.name] for a in node.names] if not node.module else [parts]
            else:
                names = [node.module.split(".")[1:]] if node.module and node.module.startswith("shortcutify.") else []
            layers |= {p[0] for p in names if p and p[0] in ORDER}
        elif isinstance(node, ast.Import):
            layers |= {a.name.split(".")[1] for a in node.names if a.name.startswith("shortcutify.") and a.name.split(".")[1] in ORDER}
    return layers


@pytest.mark.parametrize("layer", ORDER)
def test_a_layer_imports_only_the_layers_below_it(layer):
    allowed = set(ORDER[: ORDER.index(layer) + 1])
    paths = list((PACKAGE / layer).rglob("*.py"))
    assert paths
    for path in paths:
        found = _imported_layers(path.read_text(), path.relative_to(PACKAGE).parts)
        assert found <= allowed, f"{path.relative_to(PACKAGE)} imports {found - allowed}"


@pytest.mark.parametrize(
    "source, rel, expected",
    [
        ("from ..train import distill", ("core", "x.py"), {"train"}),
        ("from ...demo.models import ResnetGenerator", ("core", "blocks", "x.py"), {"demo"}),
        ("from .. import train", ("core", "x.py"), {"train"}),
        ("import shortcutify.demo.video", ("train", "x.py"), {"demo"}),
        ("from shortcutify.core import shortcutify", ("train", "x.py"), {"core"}),
        ("from .cut import Cut", ("core", "x.py"), {"core"}),
        ("from ..errors import ShortcutifyError", ("core", "x.py"), set()),
    ],
)
def test_the_check_sees_every_form_of_import(source, rel, expected):
    assert _imported_layers(source, rel) == expected
