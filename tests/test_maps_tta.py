"""Multi-scale + flip TTA: sizes, resampling, crop, flip symmetry, merge hook, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wsss.errors import ConfigError
from wsss.maps.tta import (
    default_max_pixels,
    multiscale_flip,
    normalize_maps,
    resize_image,
    scaled_size,
    size_groups,
    strided_size,
    strided_up_size,
)
from wsss.models.classifier import CAMClassifier

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


pytestmark = pytest.mark.usefixtures("one_thread")


def random_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))


@pytest.fixture(scope="module")
def model() -> CAMClassifier:
    torch.manual_seed(0)
    return CAMClassifier("resnet10t", num_classes=3, output_stride=16).eval()


def relu_maps(model):
    return lambda x: F.relu(model(x, with_maps=True).maps)


def test_size_helpers_by_hand():
    assert strided_size((37, 53), 4) == (10, 14)
    assert strided_size((36, 52), 4) == (9, 13)
    assert strided_up_size((37, 53), 16) == (48, 64)
    assert strided_up_size((32, 48), 16) == (32, 48)
    # Half-to-even rounding, as round()/np.round in the reference code.
    assert scaled_size((37, 53), 0.5) == (18, 26)
    assert scaled_size((37, 53), 1.5) == (56, 80)
    assert scaled_size((3, 5), 0.1) == (1, 1)
    assert size_groups([(2, 3), (4, 5), (2, 3), (1, 1), (4, 5)]) == [[0, 2], [1, 4], [3]]


def test_resize_matches_pil_bicubic():
    image = random_image(37, 53)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    for scale in (0.5, 1.5, 2.0):
        h, w = scaled_size((37, 53), scale)
        ours = resize_image(image, (h, w)).permute(1, 2, 0).numpy().astype(int)
        ref = np.asarray(pil.resize((w, h), Image.BICUBIC)).astype(int)
        assert ours.shape == ref.shape
        # Pure noise is the worst case for rounding differences; photos differ less.
        assert np.abs(ours - ref).max() <= 2
        assert (ours != ref).mean() < 0.01
    assert torch.equal(resize_image(image, (37, 53)), image)


def test_forward_sees_normalised_pairs_at_each_scale():
    image = random_image(37, 53)
    seen = []

    def forward(x):
        seen.append(x.clone())
        return x[:, :1]

    multiscale_flip(forward, image)
    assert [tuple(x.shape) for x in seen] == [
        (2, 3, 37, 53),
        (2, 3, 18, 26),
        (2, 3, 56, 80),
        (2, 3, 74, 106),
    ]
    for x in seen:
        assert torch.equal(x[1], x[0].flip(-1))
    expected = (image.float() / 255 - MEAN) / STD
    torch.testing.assert_close(seen[0][0], expected)


def test_output_shapes_and_strided_up16_crop():
    h, w = 37, 53
    ramp = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4) ** 2

    def forward(x):
        return ramp.expand(len(x), -1, -1, -1)

    strided, hr = multiscale_flip(forward, random_image(h, w), scales=(1.0,))
    assert strided.shape == (1, 10, 14) and hr.shape == (1, h, w)
    m = ramp + ramp.flip(-1)
    expected_hr = F.interpolate(m, (48, 64), mode="bilinear", align_corners=False)[0, :, :h, :w]
    expected_s4 = F.interpolate(m, (10, 14), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(hr, expected_hr)
    torch.testing.assert_close(strided, expected_s4)
    direct = F.interpolate(m, (h, w), mode="bilinear", align_corners=False)[0]
    assert not torch.allclose(hr, direct, atol=1e-3)
    # Scales add up: two scales of an input-independent forward give twice one scale.
    strided2, hr2 = multiscale_flip(forward, random_image(h, w), scales=(1.0, 0.5))
    torch.testing.assert_close(hr2, 2 * expected_hr)
    torch.testing.assert_close(strided2, 2 * expected_s4)


def test_tta_map_of_a_flipped_image_is_the_flipped_map(model):
    image = random_image(25, 35, seed=1)
    strided, _ = multiscale_flip(relu_maps(model), image)
    strided_f, _ = multiscale_flip(relu_maps(model), image.flip(-1))
    assert strided.abs().max() > 0
    torch.testing.assert_close(strided_f, strided.flip(-1), rtol=1e-5, atol=1e-6)
    # The full-resolution map is flip-equivariant when the width needs no crop.
    image = random_image(24, 32, seed=2)
    _, hr = multiscale_flip(relu_maps(model), image)
    _, hr_f = multiscale_flip(relu_maps(model), image.flip(-1))
    torch.testing.assert_close(hr_f, hr.flip(-1), rtol=1e-5, atol=1e-6)


def test_mirror_symmetric_image_gives_symmetric_maps(model):
    half = random_image(21, 16, seed=3)
    image = torch.cat([half, half.flip(-1)], dim=-1)
    strided, hr = multiscale_flip(relu_maps(model), image)
    assert strided.shape == (3, 6, 8) and hr.shape == (3, 21, 32)
    torch.testing.assert_close(strided, strided.flip(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hr, hr.flip(-1), rtol=1e-5, atol=1e-6)


def test_merge_hook_sums_features_before_a_linear_head(model):
    image = random_image(23, 31, seed=4)
    weight = model.head.weight

    def features(x):
        return model(x, with_features=True).features

    def linear_head(a, b):
        return F.conv2d(a + b, weight)

    via_features = multiscale_flip(features, image, merge=linear_head)
    via_maps = multiscale_flip(lambda x: model(x, with_maps=True).maps, image)
    for ours, ref in zip(via_features, via_maps, strict=True):
        assert ref.abs().max() > 0
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    # With the ReLU of CAM the two orders differ: the hook really is applied.
    relu_first = multiscale_flip(relu_maps(model), image)[0]
    assert not torch.allclose(F.relu(via_features[0]), relu_first, atol=1e-6)


def test_batch_of_equal_sizes_matches_single_images_and_chunks(model):
    images = torch.stack([random_image(21, 29, seed=s) for s in range(3)])
    whole = multiscale_flip(relu_maps(model), images)
    chunked = multiscale_flip(relu_maps(model), images, max_pixels=1)
    for k in range(3):
        single = multiscale_flip(relu_maps(model), images[k])
        for batched, one in zip(whole, single, strict=True):
            assert (batched[k] - one).abs().max() < 1e-5
    for a, b in zip(whole, chunked, strict=True):
        assert (a - b).abs().max() < 1e-5


def test_forward_calls_hold_at_most_max_pixels_per_device():
    def shapes(image, **kwargs):
        seen = []

        def forward(x):
            seen.append(tuple(x.shape))
            return x[:, :1]

        multiscale_flip(forward, image, scales=(1.0, 2.0), **kwargs)
        return seen

    images = torch.stack([random_image(200, 300, seed=s) for s in range(2)])  # 60k px each
    # CPU: 0.25 Mpx per call: at scale 1 both images with their flips (240k), at scale 2
    # (240k px per input) one input per call.
    assert default_max_pixels("cpu") == 250_000
    assert shapes(images, device="cpu") == [(4, 3, 200, 300)] + [(1, 3, 400, 600)] * 4
    # The GPU budget (3 Mpx) takes both images and their flips at either scale.
    assert default_max_pixels("cuda:0") == 3_000_000
    assert shapes(images, max_pixels=3_000_000) == [(4, 3, 200, 300), (4, 3, 400, 600)]
    assert shapes(images[0], max_pixels=1) == [(1, 3, 200, 300)] * 2 + [(1, 3, 400, 600)] * 2


def test_normalize_maps_by_hand():
    x = torch.tensor([[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = normalize_maps(x, eps=1.0)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.4], [0.2, 0.8]]))
    assert torch.equal(out[1], torch.zeros(2, 2))
    assert normalize_maps(torch.zeros(0, 3, 4)).shape == (0, 3, 4)
    top = normalize_maps(torch.full((1, 2, 2), 10.0)).max().item()
    assert math.isclose(top, 10 / (10 + 1e-5), rel_tol=1e-6)


@pytest.mark.parametrize("scales", [(), (1.0, 0.0), (1.0, -0.5), (float("nan"),)])
def test_bad_scales_are_rejected(scales):
    with pytest.raises(ConfigError, match="scales"):
        multiscale_flip(lambda x: x, random_image(8, 8), scales=scales)


def test_non_uint8_image_is_rejected():
    with pytest.raises(ValueError, match="uint8"):
        multiscale_flip(lambda x: x, torch.rand(3, 8, 8))
