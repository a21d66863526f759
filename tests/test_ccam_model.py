"""The C²AM model: pooled vectors, stage concat, stored direction, checkpoint round trip,
and the border-prior direction detection."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.models import CCAM, create_model, detect_direction, list_models, load_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> CCAM:
    torch.manual_seed(0)
    return CCAM("resnet10t").eval()


def test_features_concat_last_two_stages_and_pool_by_sigmoid(model: CCAM) -> None:
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        out = model(x)
        stages = model.backbone(x)
        z = model.features(x)
    assert model.feature_dim == 512 + 256
    torch.testing.assert_close(z, torch.cat([stages[-1], stages[-2]], dim=1))
    assert out.logits.shape == (2, 1, 4, 3)
    p = torch.sigmoid(out.logits)
    torch.testing.assert_close(out.fg, (p * z).mean((2, 3)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.bg, ((1 - p) * z).mean((2, 3)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.fg + out.bg, z.mean((2, 3)), rtol=1e-4, atol=1e-6)
    assert model.head.bias is None and model.head.kernel_size == (3, 3)


def test_output_stride_32_resizes_layer3_to_layer4() -> None:
    model = CCAM("resnet10t", output_stride=32).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.logits.shape == (1, 1, 2, 2)
    assert out.fg.shape == (1, 768)


def test_direction_flips_the_sign_of_the_logits(model: CCAM) -> None:
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        raw = model(x).logits
        torch.testing.assert_close(model.saliency_logits(x), raw)
        model.set_direction(-1)
        try:
            flipped = model.saliency_logits(x)
        finally:
            model.set_direction(1)
    torch.testing.assert_close(flipped, -raw)  # not 1 − ℓ
    with pytest.raises(ValueError, match="direction"):
        model.set_direction(0)


def test_registered_and_direction_survives_checkpoint(tmp_path: Path) -> None:
    assert "ccam" in list_models()
    model = create_model("ccam", backbone="resnet10t").eval()
    model.set_direction(-1)
    weights = save_model(tmp_path / "ccam", model, {"classes": [], "step": 1})
    loaded, meta = load_model(weights)
    assert isinstance(loaded, CCAM)
    assert meta["architecture"] == {"type": "ccam", "backbone": "resnet10t", "output_stride": 16}
    assert float(loaded.direction) == -1.0
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.saliency_logits(x), model.saliency_logits(x))


def test_param_groups_put_head_and_bn_in_new_groups(model: CCAM) -> None:
    groups = model.param_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    # As the reference groups by name: the head BN's scale is a new weight, its shift a bias.
    assert {id(p) for p in groups["new_weights"]} == {
        id(model.head.weight),
        id(model.head_bn.weight),
    }
    assert {id(p) for p in groups["new_biases"]} == {id(model.head_bn.bias)}
    assert id(model.backbone.bn1.weight) in {id(p) for p in groups["pretrained_weights"]}
    moved = model.param_groups(norm_weight_group="biases")
    assert {id(p) for p in moved["new_weights"]} == {id(model.head.weight)}
    assert {id(p) for p in moved["new_biases"]} == {
        id(model.head_bn.weight),
        id(model.head_bn.bias),
    }


def test_the_engine_builds_optimiser_groups_for_ccam(model: CCAM) -> None:
    # The engine passes norm_weight_group; CCAM.param_groups once took no argument.
    from wsss.train.optim import param_groups

    groups = param_groups(model, 0.1, 1e-4, (1, 2, 10, 20), "weights")
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == pytest.approx(
        {"pretrained_weights": 0.1, "pretrained_biases": 0.2, "new_weights": 1.0, "new_biases": 2.0}
    )
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def _blob(h: int = 12, w: int = 12) -> np.ndarray:
    """High probability on a centred square, low elsewhere."""
    p = np.full((h, w), 0.1)
    p[4:-4, 4:-4] = 0.9
    return p


def test_detect_direction_on_upright_and_inverted_maps() -> None:
    upright = np.stack([_blob(), _blob()])
    est = detect_direction(upright, border=2)
    # 12×12, 2-cell strips: every strip is entirely 0.1; the 8×8 interior is
    # 16 cells of 0.9 and 48 of 0.1.
    assert est.direction == 1 and est.images == 2
    assert est.border == pytest.approx(0.1)
    assert est.interior == pytest.approx((16 * 0.9 + 48 * 0.1) / 64)
    inverted = detect_direction(torch.from_numpy(1 - upright)[:, None], border=2)
    assert inverted.direction == -1
    assert inverted.border == pytest.approx(0.9)


def test_detect_direction_rules_differ_when_maps_are_shifted() -> None:
    # Inverted, but every probability is below 0.5: the reference rule (border > 0.5)
    # misses it, the interior rule does not.
    shifted = 0.4 * (1 - _blob())
    assert detect_direction(shifted, border=2).direction == -1
    assert detect_direction(shifted, border=2, rule="reference").direction == 1


def test_detect_direction_weighs_each_map_equally_across_sizes() -> None:
    small = np.zeros((6, 6))
    large = np.ones((20, 10))
    est = detect_direction([small, large], border=1)
    assert est.images == 2 and est.border == pytest.approx(0.5)
    with pytest.raises(ValueError, match="too small"):
        detect_direction(np.zeros((4, 4)), border=2)
    assert math.isnan(detect_direction(np.zeros((4, 4)), 2, rule="reference").interior)
    with pytest.raises(ValueError, match="at least one"):
        detect_direction([])
