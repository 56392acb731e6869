"""The package's layers import downward only; the device side imports nothing of edge_sr.

Every import counts, including those inside functions (a lazy import hides a cycle from
Python, not from a reader). A unit is a subpackage or a top-level module of ``edge_sr``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Top to bottom. A unit may import itself and units of lower layers, never a peer or above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("benchmark", "train_zoo"),
    ("harness", "train", "zoo"),
    ("pipeline", "baselines"),
    ("quant",),
    ("evaluate", "train_init"),
    ("models",),
    ("data", "metrics", "device"),
    ("errors", "weights", "__init__"),  # the package's __init__ imports none of it
)
# Run on the board (or stand alone): they must not need the edge_sr package.
STANDALONE = ("runtime", "targets")


def _layer_of() -> dict[str, int]:
    return {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def _imports(path: Path, root: Path, package: str) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    here = list(path.relative_to(root / package).parts[:-1])  # the module's package
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = [package, *here][:len(here) + 2 - node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
                names.add(mod)
                if not node.module:  # from . import x: x may be a submodule
                    names.update(f"{mod}.{alias.name}" for alias in node.names)
            else:
                names.add(node.module or "")
    return names


def _unit(path: Path, root: Path = ROOT) -> str:
    return path.relative_to(root / "edge_sr").with_suffix("").parts[0]


def layer_violations(root: Path = ROOT) -> list[str]:
    """Every import that goes up or sideways between layers, as ``file: a -> b``."""
    layer = _layer_of()
    found = []
    for path in sorted((root / "edge_sr").rglob("*.py")):
        unit = _unit(path, root)
        if unit not in layer:
            found.append(f"{path.relative_to(root)}: unit {unit!r} is in no layer")
            continue
        for name in _imports(path, root, "edge_sr"):
            parts = name.split(".")
            if parts[0] != "edge_sr" or len(parts) < 2:
                continue
            target = parts[1]
            if target == unit or target == "__init__":
                continue
            if target not in layer or layer[target] <= layer[unit]:
                found.append(f"{path.relative_to(root)}: {unit} -> {target}")
    for package in STANDALONE:
        for path in sorted((root / package).rglob("*.py")):
            for name in _imports(path, root, package):
                if name.split(".")[0] == "edge_sr":
                    found.append(f"{path.relative_to(root)}: {package} -> {name}")
    return found


def test_layers_import_downward_only():
    assert layer_violations() == []


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in (ROOT / "edge_sr").rglob("*.py")}
    assert units - set(_layer_of()) == set()


@pytest.mark.parametrize("source, expected", [
    ("edge_sr/models/bad.py", "from ..pipeline import builder\n"),          # upward
    ("edge_sr/pipeline/bad.py", "def f():\n    from ..harness import x\n"),  # lazy, upward
    ("edge_sr/quant/bad.py", "import edge_sr.baselines\n"),                  # absolute
    ("edge_sr/metrics.py", "from .device import rpc\n"),                    # sideways
    ("runtime/bad.py", "from edge_sr.models import create\n"),              # device side
])
def test_the_check_finds_an_import_against_the_layers(tmp_path, source, expected):
    """A copy of the tree with one bad import added fails the check, naming the file."""
    for package in ("edge_sr", *STANDALONE):
        for path in (ROOT / package).rglob("*.py"):
            dest = tmp_path / path.relative_to(ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(path.read_text())
    bad = tmp_path / source
    bad.write_text((bad.read_text() if bad.exists() else "") + expected)
    found = layer_violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(source + ":"), found
