"""Segmentation inference: scales × flip on logits, softmax, dense CRF, argmax."""

from __future__ import annotations

import sys
import types
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss.data.transforms import normalize
from wsss.errors import ConfigError
from wsss.maps.segmentation_infer import (
    CRFParams,
    predict_segmentation,
    segmentation_logits,
)
from wsss.maps.tta import resize_image, scaled_size
from wsss.models.segmentation import DeepLabV3Plus

pytestmark = pytest.mark.usefixtures("one_thread")


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), np.uint8))


def _first_channels(x: torch.Tensor) -> torch.Tensor:
    return x[:, :2].clone()


def test_flipped_logits_are_flipped_back_before_summing() -> None:
    # The "network" returns its input's first two channels: with one scale, the sum over the
    # image and its flip (flipped back) is twice the normalised image, ramp included.
    ramp = torch.arange(24, dtype=torch.uint8).mul(10).expand(3, 10, 24).contiguous()
    logits = segmentation_logits(_first_channels, ramp, scales=(1.0,))
    torch.testing.assert_close(logits, 2 * normalize(ramp)[:2])
    unflipped = segmentation_logits(_first_channels, ramp, scales=(1.0,), flip=False)
    torch.testing.assert_close(unflipped, normalize(ramp)[:2])


def _loop_reference(model, image: torch.Tensor, scales) -> torch.Tensor:
    """One image, one scale, one view at a time, each view a batch of one."""
    h, w = image.shape[-2:]
    total = torch.zeros(())
    with torch.no_grad():
        for s in scales:
            x = normalize(resize_image(image, scaled_size((h, w), s)))[None]
            for flipped in (False, True):
                out = model(x.flip(-1) if flipped else x)
                out = F.interpolate(out, (h, w), mode="bilinear", align_corners=False)
                total = total + (out.flip(-1) if flipped else out)[0]
    return total


def test_batched_tta_equals_per_image_per_scale_loop() -> None:
    torch.manual_seed(0)
    model = DeepLabV3Plus("resnet10t", num_classes=4, decoder_channels=16).eval()
    images = [_image(40, 56, 0), _image(33, 45, 1), _image(40, 56, 2)]
    scales = (1.0, 0.5, 1.5)
    # 40×56 at scale 1.5 is 60×84 = 5040 px: 12 000 px holds one image and its flip, so the
    # two 40×56 images go in separate chunks there and together at the smaller scales.
    preds = predict_segmentation(model, images, scales, max_pixels=12_000)
    for image, pred in zip(images, preds, strict=True):
        probs = torch.softmax(_loop_reference(model, image, scales), dim=0).numpy()
        np.testing.assert_allclose(pred.probs, probs, rtol=1e-4, atol=1e-5)
        top2 = np.sort(probs, axis=0)[-2:]
        clear = top2[1] - top2[0] > 1e-4
        assert (pred.mask == probs.argmax(0))[clear].all()
        assert pred.mask.dtype == np.uint8 and pred.mask.shape == image.shape[-2:]
        np.testing.assert_allclose(pred.probs.sum(0), 1.0, rtol=1e-5)


def test_hwc_arrays_and_training_mode_and_bad_scales() -> None:
    model = DeepLabV3Plus("resnet10t", num_classes=3, decoder_channels=8).eval()
    image = _image(24, 32, 3)
    [from_array] = predict_segmentation(model, [image.permute(1, 2, 0).numpy()], (1.0,))
    [from_tensor] = predict_segmentation(model, [image], (1.0,))
    np.testing.assert_array_equal(from_array.probs, from_tensor.probs)
    with pytest.raises(ConfigError, match="scales"):
        predict_segmentation(model, [image], (1.0, 0.0))
    with pytest.raises(ValueError, match="eval"):
        predict_segmentation(model.train(), [image], (1.0,))


class _FakeCRF:
    calls: ClassVar[list] = []

    def __init__(self, w, h, k):
        self.calls.append(("DenseCRF2D", w, h, k))

    def setUnaryEnergy(self, unary):
        self.unary = unary

    def addPairwiseGaussian(self, **kw):
        self.calls.append(("gaussian", kw))

    def addPairwiseBilateral(self, rgbim, **kw):
        self.calls.append(("bilateral", kw, rgbim.copy()))

    def inference(self, n):
        self.calls.append(("inference", n))
        # Q as pydensecrf returns it: K × (H·W); here, favour class 0 everywhere.
        q = np.zeros_like(self.unary)
        q[0] = 1.0
        return q


@pytest.fixture
def fake_pydensecrf(monkeypatch):
    package = types.ModuleType("pydensecrf")
    densecrf = types.ModuleType("pydensecrf.densecrf")
    utils = types.ModuleType("pydensecrf.utils")
    densecrf.DenseCRF2D = _FakeCRF
    utils.unary_from_softmax = lambda p: -np.log(np.clip(p, 1e-5, 1)).reshape(len(p), -1)
    package.densecrf, package.utils = densecrf, utils
    for name, module in [("", package), (".densecrf", densecrf), (".utils", utils)]:
        monkeypatch.setitem(sys.modules, "pydensecrf" + name, module)
    _FakeCRF.calls = []
    return _FakeCRF


def test_crf_uses_deeplab_v2_parameters_on_the_original_image(fake_pydensecrf) -> None:
    image = _image(6, 9, 4)
    model = lambda x: torch.stack([x[:, 0], -x[:, 0]], 1)  # noqa: E731
    [pred] = predict_segmentation(model, [image], (1.0, 0.5), crf=True)
    assert fake_pydensecrf.calls[0] == ("DenseCRF2D", 9, 6, 2)
    assert fake_pydensecrf.calls[1] == ("gaussian", {"sxy": 1.0, "compat": 3.0})
    name, kw, rgb = fake_pydensecrf.calls[2]
    assert (name, kw) == ("bilateral", {"sxy": 67.0, "srgb": 3.0, "compat": 4.0})
    np.testing.assert_array_equal(rgb, image.permute(1, 2, 0).numpy())
    assert fake_pydensecrf.calls[3] == ("inference", 10)
    assert (pred.mask == 0).all() and pred.probs.shape == (2, 6, 9)

    fake_pydensecrf.calls = []
    predict_segmentation(model, [image], (1.0,), crf=CRFParams(iterations=3, gaussian_sxy=2))
    assert fake_pydensecrf.calls[1] == ("gaussian", {"sxy": 2, "compat": 3.0})
    assert fake_pydensecrf.calls[-1] == ("inference", 3)


def test_crf_without_pydensecrf_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ConfigError, match=r"'crf' extra"):
        predict_segmentation(_first_channels, [_image(4, 4, 5)], (1.0,), crf=True)


def test_real_crf_snaps_noisy_probabilities_to_colour_regions() -> None:
    pytest.importorskip("pydensecrf.densecrf")
    h, w = 24, 32
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[0, :, : w // 2] = 220  # red left half, blue right half
    image[2, :, w // 2 :] = 220
    truth = np.zeros((h, w), np.int64)
    truth[:, w // 2 :] = 1
    rng = np.random.default_rng(0)
    noisy = truth ^ (rng.random((h, w)) < 0.15)  # 15 % of the pixels on the wrong side
    logits = torch.from_numpy(np.stack([noisy == 0, noisy == 1]).astype(np.float32) * 0.8)
    model = lambda x: F.interpolate(logits[None].expand(len(x), -1, -1, -1), x.shape[-2:])  # noqa: E731
    [plain] = predict_segmentation(model, [image], (1.0,), flip=False)
    [refined] = predict_segmentation(model, [image], (1.0,), flip=False, crf=True)
    assert (plain.mask != truth).mean() > 0.1
    assert (refined.mask == truth).all()
    np.testing.assert_allclose(refined.probs.sum(0), 1.0, rtol=1e-5)
