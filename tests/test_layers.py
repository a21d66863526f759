"""The package layers point down only (ARCHITECTURE.md, "Target layout").

Every ``wsss`` import, at module level or inside a function, is a dependency: a lazy import
still couples the packages. A package may import its own modules, any package of a lower
layer, and the few same-layer peers listed in ``PEERS``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import wsss

SRC = Path(wsss.__file__).parent

LAYERS: dict[str, int] = {
    "errors": 0,
    "registry": 0,
    "runtime": 1,
    "io": 1,
    "config": 1,
    "data": 2,
    "models": 2,
    "maps": 3,
    "refine": 3,
    "evaluate": 3,
    "diagnostics": 3,
    "report": 3,
    "train": 3,
    "pipeline": 4,
    "cli": 5,
    "__main__": 6,
    "__init__": 6,  # the public API re-exports from every layer, lazily
}

# Same-layer imports that are allowed (importer, imported).
PEERS = {
    ("runtime", "io"),  # provenance writes run_info.json atomically
    ("config", "io"),
    ("config", "runtime"),
    ("refine", "maps"),  # refinement reads and writes class maps
    ("maps", "refine"),  # segmentation inference ends with the dense CRF (wsss.refine.crf)
    ("report", "evaluate"),  # the report formats metric tables
    ("diagnostics", "evaluate"),
    ("train", "maps"),  # validation hooks may compute maps
    ("train", "evaluate"),  # validation hooks compute metrics
    ("train", "refine"),  # the boundary task trains on affinity labels (path indices, targets)
}

# Packages that only infer or measure: none of them may import the training package.
INFERENCE_ONLY = ("maps", "refine", "evaluate", "report", "diagnostics", "io", "models", "data")


def package_of(path: Path, src: Path = SRC) -> str:
    return path.relative_to(src).parts[0].removesuffix(".py")


def wsss_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "wsss":
                names = [f"wsss.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "wsss" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def violations(src: Path = SRC) -> list[str]:
    problems = []
    for path in sorted(src.rglob("*.py")):
        importer = package_of(path, src)
        if importer not in LAYERS:
            problems.append(f"{path.relative_to(src)}: package {importer!r} has no layer")
            continue
        for line, imported in wsss_imports(path):
            if imported == importer or imported not in LAYERS:
                continue
            down = LAYERS[imported] < LAYERS[importer]
            if not (down or (importer, imported) in PEERS):
                problems.append(
                    f"{path.relative_to(src)}:{line}: {importer} (layer {LAYERS[importer]}) "
                    f"imports {imported} (layer {LAYERS[imported]})"
                )
    return problems


def test_layers_point_down():
    assert violations() == []


def test_the_check_catches_a_planted_upward_import(tmp_path):
    # A copy of the package with one upward import added must fail the check.
    planted = tmp_path / "wsss"
    for path in SRC.rglob("*.py"):
        target = planted / path.relative_to(SRC)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    io_module = planted / "io" / "maps.py"
    io_module.write_text(
        io_module.read_text(encoding="utf-8")
        + "\n\ndef _f():\n    from wsss.pipeline import RunDir\n",
        encoding="utf-8",
    )
    found = violations(planted)
    assert len(found) == 1 and "io (layer 1) imports pipeline (layer 4)" in found[0]


@pytest.mark.parametrize("package", INFERENCE_ONLY)
def test_inference_packages_do_not_load_training(package):
    code = (
        f"import sys, wsss.{package}; "
        "bad = sorted(m for m in sys.modules if m.startswith(('wsss.train', 'wsss.pipeline'))); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api_resolves_and_import_is_cheap():
    code = (
        "import sys, wsss; n = sum(m.startswith('wsss.') for m in sys.modules); "
        "names = [getattr(wsss, a) for a in wsss.__all__]; print(n)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
