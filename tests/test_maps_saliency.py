"""One-channel saliency maps with TTA: C²AM (oriented, ReLU, summed, max-normalised) and the
two-class detector (mean probability), against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsss.data.transforms import normalize
from wsss.maps.saliency import AGNOSTIC_KEY, saliency_maps_batch
from wsss.models import CCAM

pytestmark = pytest.mark.usefixtures("one_thread")


def _image(h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


def test_ccam_maps_at_scale_one_match_a_direct_computation() -> None:
    torch.manual_seed(0)
    model = CCAM("resnet10t", output_stride=8).eval()
    image = _image()
    (maps,) = saliency_maps_batch(model, [image], scales=[1.0])
    assert maps.keys.tolist() == [AGNOSTIC_KEY]
    assert maps.hr.shape == (1, 32, 48) and maps.cam.shape == (1, 8, 12)
    x = normalize(image)[None]
    with torch.no_grad():
        a = model.saliency_logits(x).relu()
        b = model.saliency_logits(x.flip(-1)).relu().flip(-1)
    up = F.interpolate(a + b, size=(32, 48), mode="bilinear", align_corners=False)[0]
    expected = up / (up.max() + 1e-5)
    np.testing.assert_allclose(maps.hr, expected.numpy(), atol=1e-5)
    assert maps.hr.max() == pytest.approx(1.0, abs=1e-4)
    # The stored direction flips the sign before the ReLU: the other partition.
    model.set_direction(-1)
    (inverted,) = saliency_maps_batch(model, [image], scales=[1.0])
    with torch.no_grad():
        a = (-model(x).logits).relu()
        b = (-model(x.flip(-1)).logits).relu().flip(-1)
    up = F.interpolate(a + b, size=(32, 48), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(inverted.hr, (up / (up.max() + 1e-5)).numpy(), atol=1e-5)


def test_images_of_equal_size_batch_without_changing_maps() -> None:
    torch.manual_seed(0)
    model = CCAM("resnet10t", output_stride=8).eval()
    images = [_image(seed=0), _image(24, 40, seed=1), _image(seed=2)]
    together = saliency_maps_batch(model, images, scales=[1.0, 0.5])
    for image, maps in zip(images, together, strict=True):
        (alone,) = saliency_maps_batch(model, [image], scales=[1.0, 0.5])
        np.testing.assert_allclose(maps.hr, alone.hr, atol=1e-5)
        assert maps.hr.shape[1:] == tuple(image.shape[1:])


class ConstantDetector(nn.Module):
    """Two-class logits (0, log 3) everywhere: p(salient) = 0.75."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 2, *x.shape[-2:])
        logits[:, 1] = float(np.log(3.0))
        return logits * self.scale


def test_detector_maps_are_mean_probabilities_not_renormalised() -> None:
    (maps,) = saliency_maps_batch(ConstantDetector(), [_image()], scales=[1.0, 0.5, 1.5])
    np.testing.assert_allclose(maps.hr, 0.75, atol=1e-6)
    np.testing.assert_allclose(maps.cam, 0.75, atol=1e-6)


def test_other_models_are_refused() -> None:
    with pytest.raises(ValueError, match="gives no saliency"):
        saliency_maps_batch(nn.Conv2d(3, 5, 1), [_image()], scales=[1.0])


def test_the_ccam_method_runs_through_the_shared_runner(tmp_path) -> None:
    from pathlib import Path

    from wsss.data.base import SegmentationDataset
    from wsss.io.maps import MapStore
    from wsss.maps.runner import run_maps

    class Two(SegmentationDataset):
        def __init__(self) -> None:
            self.root, self.split, self.classes, self.ids = Path("."), "train", ["x"], ["a", "b"]

        def load_image(self, sample_id: str) -> np.ndarray:
            size = (32, 48) if sample_id == "a" else (24, 40)
            return _image(*size, seed=len(sample_id)).permute(1, 2, 0).numpy()

        def load_label(self, sample_id: str) -> np.ndarray:
            return np.array([sample_id == "a"], np.float32)  # "b" has no label: still mapped

    torch.manual_seed(0)
    model = CCAM("resnet10t", output_stride=8).eval()
    result = run_maps("ccam", model, Two(), tmp_path / "sal", scales=[1.0], channels_last=False)
    assert result.complete and result.written == 2
    store = MapStore(tmp_path / "sal")
    for sample_id in ("a", "b"):
        maps = store.load(sample_id)
        image = torch.from_numpy(Two().load_image(sample_id)).permute(2, 0, 1)
        (direct,) = saliency_maps_batch(model, [image], scales=[1.0])
        assert maps.keys.tolist() == [AGNOSTIC_KEY] and maps.hr.shape[1:] == image.shape[1:]
        np.testing.assert_allclose(maps.hr, direct.hr, atol=1e-5)


def test_the_detector_method_refuses_a_segmentation_model(tmp_path) -> None:
    from wsss.errors import ConfigError
    from wsss.maps.methods import get_map_method
    from wsss.models.segmentation import DeepLabV3Plus

    method = get_map_method("saliency_detector")()
    assert method.class_agnostic and method.model_types == ("deeplabv3plus",)
    with pytest.raises(ConfigError, match="needs a two-class saliency detector; this "):
        method.check(DeepLabV3Plus("resnet10t", num_classes=21), ["a"])
    method.check(DeepLabV3Plus("resnet10t", num_classes=2), ["a"])
