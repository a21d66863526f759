"""docs/quickstart.md runs as written; the docs name no build machine; packaging metadata."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "quickstart.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def python_blocks(path: Path) -> list[str]:
    """The ```python code blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)


def test_quickstart_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(QUICKSTART)
    assert len(blocks) >= 7
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "quickstart"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{QUICKSTART.name}[block {i}]", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{QUICKSTART.name} block {i} fails:\n{block}") from e
    dataset = namespace["dataset"]
    assert len(list((tmp_path / "runs/quick/maps/cam").glob("*.npz"))) == len(dataset.ids)
    assert len(list((tmp_path / "runs/quick/masks/cam").glob("*.png"))) == len(dataset.ids)
    # what the page claims: the saved masks score exactly like the maps at the same threshold
    scores, same = namespace["scores"], namespace["same"]
    assert scores["miou"] == pytest.approx(same["miou"])
    assert scores["per_class"] == same["per_class"]
    assert namespace["heatmap"].shape == (1, 128, 128)
    assert (tmp_path / "runs/from-timm/checkpoints/last.safetensors").is_file()


def test_docs_do_not_describe_the_machine_they_were_written_on() -> None:
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "benchmarks" / "README.md"]
    for path in docs:
        text = path.read_text(encoding="utf-8")
        for phrase in ("build machine", "this machine"):
            assert phrase not in text, f"{path.name} mentions '{phrase}'"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_one_version_source_license_and_typing_marker() -> None:
    import tomllib

    import wsss

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    setuptools = project["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "wsss.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", wsss.__version__)
    assert "py.typed" in setuptools["package-data"]["wsss"]
    assert (ROOT / "src" / "wsss" / "py.typed").is_file()
    assert project["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
