"""CAM inference: batched TTA against a straightforward loop, class selection, K = 0."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss.maps.cam import cam_maps, cam_maps_batch, predicted_classes
from wsss.maps.methods import MAP_METHODS, get_map_method
from wsss.maps.tta import resize_image
from wsss.models.classifier import CAMClassifier

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
SCALES = (1.0, 0.5, 1.5, 2.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def random_image(h: int, w: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))


@pytest.fixture(scope="module")
def model() -> CAMClassifier:
    torch.manual_seed(0)
    net = CAMClassifier("resnet10t", num_classes=4, output_stride=16).eval()
    # Class rows of one sign: the features are ≥ 0, so every map is a sum of same-sign terms.
    # With random signs a map's maximum can be a small residue of cancelling terms, whose
    # relative rounding error (and so the normalised maps' differences between two equally
    # valid summation orders) reaches 1e-5. Class 3 is negative everywhere: its ReLU'd map is 0.
    # The factor puts maxima far above the 1e-5 of the normalisation.
    sign = torch.tensor([1.0, 1.0, 1.0, -1.0]).view(4, 1, 1, 1)
    with torch.no_grad():
        net.head.weight.copy_(net.head.weight.abs() * sign * 100)
    return net


@torch.inference_mode()
def loop_reference(model, image, classes, scales=SCALES):
    """One forward per image, scale and flip; sums and crops written out by hand."""
    h, w = image.shape[-2:]
    size4 = (math.ceil(h / 4), math.ceil(w / 4))
    size_up = (16 * math.ceil(h / 16), 16 * math.ceil(w / 16))
    strided, hr = 0, 0
    for s in scales:
        size = (round(h * s), round(w * s))
        x = (resize_image(image, size)[None].float() / 255 - MEAN) / STD
        plain = F.relu(model(x, with_maps=True).maps)
        flipped = F.relu(model(x.flip(-1), with_maps=True).maps).flip(-1)
        m = plain + flipped
        strided = strided + F.interpolate(m, size4, mode="bilinear", align_corners=False)[0]
        up = F.interpolate(m, size_up, mode="bilinear", align_corners=False)[0]
        hr = hr + up[:, :h, :w]
    strided, hr = strided[classes], hr[classes]
    strided = strided / (strided.amax(dim=(1, 2), keepdim=True) + 1e-5)
    hr = hr / (hr.amax(dim=(1, 2), keepdim=True) + 1e-5)
    return strided.numpy(), hr.numpy()


def test_batched_tta_equals_straightforward_loop(model):
    sizes = [(21, 31), (17, 22), (21, 31), (21, 31)]
    images = [random_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    classes = [[0, 2], [1], [3, 0], [0, 1, 2, 3]]
    # A small pixel cap splits the equal-size group into chunks of 1, 2 and 4 images.
    maps = cam_maps_batch(model, images, classes, scales=SCALES, max_pixels=6_000)
    for image, wanted, got in zip(images, classes, maps, strict=True):
        ref_cam, ref_hr = loop_reference(model, image, sorted(wanted))
        np.testing.assert_array_equal(got.keys, np.array(sorted(wanted)) + 1)
        assert got.cam.shape == ref_cam.shape and got.hr.shape == ref_hr.shape
        assert np.abs(got.cam - ref_cam).max() < 1e-5
        assert np.abs(got.hr - ref_hr).max() < 1e-5


def test_single_image_api_accepts_an_hwc_array(model):
    image = random_image(21, 30, seed=7)
    got = cam_maps(model, image.permute(1, 2, 0).numpy(), [1, 3], scales=(1.0, 0.5))
    ref_cam, ref_hr = loop_reference(model, image, [1, 3], scales=(1.0, 0.5))
    assert got.cam.shape == (2, 6, 8) and got.hr.shape == (2, 21, 30)
    assert np.abs(got.cam - ref_cam).max() < 1e-5 and np.abs(got.hr - ref_hr).max() < 1e-5


def test_maps_are_in_unit_range_with_max_one(model):
    maps = cam_maps(model, random_image(33, 47, seed=3), [0, 1, 2, 3])
    for arr in (maps.cam, maps.hr):
        assert arr.min() >= 0 and arr.max() <= 1
        peaks = arr.max(axis=(1, 2))
        assert np.all((peaks == 0) | (np.abs(peaks - 1) < 1e-4)), peaks


def test_no_class_gives_zero_channel_maps(model):
    maps = cam_maps_batch(model, [random_image(37, 53, 0), random_image(37, 53, 1)], [[], [2]])
    assert maps[0].keys.shape == (0,)
    assert maps[0].cam.shape == (0, 10, 14) and maps[0].hr.shape == (0, 37, 53)
    assert maps[1].cam.shape == (1, 10, 14)


def test_predicted_classes_threshold_on_scale_one_logits():
    torch.manual_seed(0)
    net = CAMClassifier("resnet10t", num_classes=3, output_stride=16).eval()
    # Features are post-ReLU (≥ 0): a positive row gives logit > 0, a negative one < 0 and a
    # zero row exactly 0, i.e. probability 0.5, which counts as present.
    with torch.no_grad():
        net.head.weight.copy_(
            torch.stack(
                [
                    torch.ones(net.feature_dim),
                    -torch.ones(net.feature_dim),
                    torch.zeros(net.feature_dim),
                ]
            ).view(3, -1, 1, 1)
        )
    images = [random_image(30, 40, seed=0), random_image(25, 35, seed=1)]
    assert predicted_classes(net, images) == [[0, 2], [0, 2]]
    assert predicted_classes(net, images, threshold=0.6) == [[0], [0]]
    assert predicted_classes(net, images * 2, threshold=0.6, max_pixels=1) == [[0]] * 4
    maps = cam_maps_batch(net, images, [None, [1]], scales=(1.0,))
    np.testing.assert_array_equal(maps[0].keys, [1, 3])
    np.testing.assert_array_equal(maps[1].keys, [2])
    assert np.all(maps[0].hr[1] == 0)  # the zero row's map is all zero, not NaN


def test_bad_class_indices_and_images_are_rejected(model):
    image = random_image(16, 16, seed=0)
    with pytest.raises(ValueError, match="out of range"):
        cam_maps(model, image, [4])
    with pytest.raises(ValueError, match="uint8"):
        cam_maps(model, image.float(), [0])
    with pytest.raises(ValueError, match="class lists"):
        cam_maps_batch(model, [image, image], [[0]])


def test_cam_is_registered_and_computes_cam_maps_batch(model):
    assert "cam" in MAP_METHODS
    method = get_map_method("cam")()
    assert method.outputs == ("cam",) and method.settings() == {}
    image = torch.randint(0, 256, (3, 20, 28), dtype=torch.uint8)
    tta = {"scales": (1.0, 0.5), "device": "cpu", "amp": False}
    (maps,) = method.compute(model, [image], [[0, 2]], max_pixels=None, **tta)
    (direct,) = cam_maps_batch(model, [image], [[0, 2]], **tta)
    np.testing.assert_array_equal(maps["cam"].hr, direct.hr)
