"""The map-method registry: lazy built-ins, and a contract every registered method keeps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError
from wsss.io.maps import ClassMaps, MapStore
from wsss.maps.lpcam import Prototypes
from wsss.maps.methods import (
    AGNOSTIC_KEY,
    MAP_METHODS,
    FunctionMethod,
    MapMethod,
    create_map_method,
    get_map_method,
    list_map_methods,
)
from wsss.maps.runner import run_maps
from wsss.models.classifier import CAMClassifier
from wsss.registry import Registry

pytestmark = pytest.mark.usefixtures("one_thread")


def test_builtin_methods_are_imported_on_the_first_lookup_only():
    code = (
        "import sys\n"
        "from wsss.maps.methods import list_map_methods\n"
        "assert 'wsss.maps.cam' not in sys.modules and 'wsss.maps.lpcam' not in sys.modules\n"
        "print(list_map_methods())\n"
        "assert 'wsss.maps.lpcam' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['cam', 'lpcam', 'lpcam_f']"


def test_a_failing_builtin_import_is_retried_and_reported():
    registry = Registry("thing", modules=("wsss.no_such_module",))
    for _ in range(2):
        with pytest.raises(ModuleNotFoundError, match="no_such_module"):
            registry.names()


def test_unknown_names_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown map method 'nope'; known: cam, lpcam"):
        get_map_method("nope")
    with pytest.raises(ConfigError, match=r"map method .cam.*scale"):
        create_map_method("cam", scale=2)


class _Tiny(SegmentationDataset):
    def __init__(self):
        rng = np.random.default_rng(0)
        self.root, self.split, self.classes = Path("memory"), "train", ["a", "b", "c"]
        self.ids = ["x", "y"]
        self.images = {i: rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for i in self.ids}

    def load_image(self, sample_id):
        return self.images[sample_id]

    def load_label(self, sample_id):
        return np.array([1, 0, 1] if sample_id == "x" else [0, 1, 0], np.float32)


def _inputs(name: str, model: CAMClassifier) -> object:
    """A valid value of each declared input file kind; a new kind needs an entry here."""
    if name == "prototypes":
        g = torch.Generator().manual_seed(0)
        d = model.feature_dim
        return Prototypes(
            foreground=[torch.rand(2, d, generator=g) for _ in range(3)],
            context=[torch.rand(1, d, generator=g) for _ in range(3)],
            classes=["a", "b", "c"],
        )
    pytest.fail(f"no test value for the map-method input {name!r}: add one to _inputs")


@pytest.mark.parametrize("name", list_map_methods())
def test_every_registered_method_keeps_the_contract(name, tmp_path):
    cls = get_map_method(name)
    assert issubclass(cls, MapMethod) and cls.name == name
    assert cls.outputs and len(set(cls.outputs)) == len(cls.outputs)
    assert cls.model_types and all(help_text for help_text in cls.files.values())
    torch.manual_seed(0)
    model = CAMClassifier("resnet10t", num_classes=3, output_stride=16).eval()
    options = {f: _inputs(f, model) for f in cls.files}
    dataset = _Tiny()
    result = run_maps(
        name, model, dataset, tmp_path, scales=(1.0,), method_options=options, progress=False
    )
    assert result.complete and set(result.outputs) == set(cls.outputs)
    for output, folder in result.outputs.items():
        store = MapStore(folder)
        assert store.is_complete() and store.manifest()["method"] == output
        maps = store.load("x")
        expected = [AGNOSTIC_KEY] if cls.class_agnostic else [1, 3]
        assert maps.keys.tolist() == expected and maps.hr.shape[1:] == (20, 28)


def test_a_plain_function_is_a_one_output_method(tmp_path):
    from wsss.maps.cam import cam_maps_batch

    def squared(model, images, class_indices, **tta):
        maps = cam_maps_batch(model, images, class_indices, **tta)
        return [ClassMaps(keys=m.keys, cam=m.cam**2, hr=m.hr**2) for m in maps]

    method = FunctionMethod(squared)
    assert method.name == "squared" and method.outputs == ("squared",)
    model = CAMClassifier("resnet10t", num_classes=3, output_stride=16).eval()
    result = run_maps(squared, model, _Tiny(), tmp_path, scales=(1.0,), progress=False)
    assert result.outputs == {"squared": tmp_path} and MapStore(tmp_path).is_complete()
    (direct,) = cam_maps_batch(
        model, [torch.from_numpy(_Tiny().images["y"]).permute(2, 0, 1)], [[1]], scales=(1.0,)
    )
    np.testing.assert_allclose(MapStore(tmp_path).load("y").hr, direct.hr**2, atol=1e-6)
    assert "cam" in MAP_METHODS  # the built-ins are there beside it
