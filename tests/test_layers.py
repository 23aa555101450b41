"""The package's layers: runtime < pipeline < personas < apps. A layer imports
only from the layers before it, whether the import is at the top of a module or
inside a function; and the module paths before the layers still import."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "axis_steer"
LAYERS = ["runtime", "pipeline", "personas", "apps"]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every axis_steer module an import statement in ``path`` names (with its line)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.rsplit(".", node.level)[0]
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return [(n, m) for n, m in out if m == "axis_steer" or m.startswith("axis_steer.")]


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_from_the_layers_before_it(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    bad = []
    for path in sorted((PKG / layer).rglob("*.py")):
        for lineno, mod in _imports(path):
            other = _layer_of(mod)
            if other is not None and other not in allowed:
                bad.append(f"{path.relative_to(PKG.parent)}:{lineno} imports {mod}")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_top_package_and_errors_import_no_layer_eagerly():
    for name in ("__init__.py", "errors.py"):
        tree = ast.parse((PKG / name).read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: the lazy __getattr__ may import
            if isinstance(node, ast.ImportFrom) and node.module:
                assert _layer_of(node.module) is None, f"{name}: imports {node.module} at import time"


def test_importing_the_runtime_loads_nothing_above_it():
    code = (
        "import sys, axis_steer.runtime.hooks, axis_steer.runtime.ops, axis_steer.runtime.formats, "
        "axis_steer.runtime.monitor, axis_steer.runtime.models, axis_steer.runtime.reference\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['axis_steer', 'pipeline'], ['axis_steer', 'personas'], ['axis_steer', 'apps']))\n"
        "print(' '.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_axis_steer_needs_no_torch():
    code = "import sys, axis_steer, axis_steer.runtime.ops; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("old", sorted(importlib.import_module("axis_steer").MOVED))
def test_the_module_paths_before_the_layers_still_import(old):
    import axis_steer

    mod = importlib.import_module(f"axis_steer.{old}")
    assert mod is importlib.import_module(axis_steer.MOVED[old])
    assert getattr(axis_steer, old) is mod


def test_top_level_names():
    import axis_steer
    from axis_steer.runtime.formats import load_axis
    from axis_steer.runtime.hooks import Attachment

    assert axis_steer.Attachment is Attachment and axis_steer.load_axis is load_axis
    from axis_steer.hooks import Attachment as old  # noqa: F401 - the path users have in scripts

    assert old is Attachment
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        axis_steer.nope  # noqa: B018


def test_no_layer_imports_the_serving_package():
    """axis_steer.serving (vLLM) sits beside the layers: it uses the runtime,
    and nothing in the layers uses it."""
    bad = []
    for layer in LAYERS:
        for path in sorted((PKG / layer).rglob("*.py")):
            bad += [f"{path.relative_to(PKG.parent)}:{n} imports {m}" for n, m in _imports(path)
                    if m == "axis_steer.serving" or m.startswith("axis_steer.serving.")]
    assert not bad, "\n".join(bad)
    for path in sorted((PKG / "serving").rglob("*.py")):
        for n, m in _imports(path):
            assert _layer_of(m) in (None, "runtime"), f"{path.relative_to(PKG.parent)}:{n} imports {m}"
