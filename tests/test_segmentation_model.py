"""Segmentation networks (DeepLabV3+, DeepLabV2) and the segmentation loss."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from wsss.errors import ConfigError, DataError, OfflineError
from wsss.models import create_model, load_model, save_model
from wsss.models.segmentation import DeepLabV2, DeepLabV3Plus, segmentation_loss

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(backbone="resnet10t", num_classes=4, decoder_channels=16)


@pytest.mark.parametrize("size", [(64, 48), (50, 37)])
@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("deeplabv3plus", TINY),
        ("deeplabv3plus", {**TINY, "output_stride": 8}),
        ("deeplabv2", dict(backbone="resnet10t", num_classes=4)),
    ],
)
def test_logits_at_input_resolution(kind: str, kwargs: dict, size: tuple[int, int]) -> None:
    model = create_model(kind, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 4, *size)
    assert torch.isfinite(out).all()


def test_v3plus_structure_os16_aspp_6_12_18_decoder_from_stride_4() -> None:
    model = DeepLabV3Plus(**TINY).eval()
    with torch.no_grad():
        features = model.encoder(torch.randn(1, 3, 64, 96))
    assert features[-1].shape[-2:] == (4, 6)  # output stride 16
    assert features[2].shape[-2:] == (16, 24)  # stride 4: ResNet layer1
    assert model.decoder.block1[0].in_channels == features[2].shape[1]
    dilations = [m.dilation[0] for m in model.decoder.aspp[0].convs.modules() if _is_3x3(m)]
    assert dilations == [6, 12, 18]
    assert model.head.out_channels == 4 and model.head.kernel_size == (1, 1)


def _is_3x3(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)


def test_v3plus_norm_in_decoder_is_group_by_default_batch_as_option() -> None:
    group = DeepLabV3Plus(**TINY)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in group.decoder.modules())
    norms = [m for m in group.decoder.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 4 for m in norms)
    batch = DeepLabV3Plus(**TINY, decoder_norm="batch")
    assert not any(isinstance(m, nn.GroupNorm) for m in batch.decoder.modules())


def test_v3plus_equals_stock_smp_on_inputs_divisible_by_16() -> None:
    ours = DeepLabV3Plus(**TINY, decoder_norm="batch").eval()
    stock = smp.DeepLabV3Plus(
        encoder_name="tu-resnet10t",
        encoder_weights=None,
        encoder_output_stride=16,
        decoder_channels=16,
        decoder_atrous_rates=(6, 12, 18),
        decoder_aspp_separable=False,
        classes=4,
    ).eval()
    state = {k.replace("head.", "segmentation_head.0.", 1): v for k, v in ours.state_dict().items()}
    stock.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), stock(x), rtol=1e-4, atol=1e-5)


def test_v2_structure_os8_four_dilated_branches_summed() -> None:
    model = DeepLabV2(backbone="resnet10t", num_classes=5).eval()
    assert [c.dilation[0] for c in model.head] == [6, 12, 18, 24]
    assert all(c.bias is not None and c.out_channels == 5 for c in model.head)
    weights = torch.cat([c.weight.flatten() for c in model.head])
    assert 0.008 < weights.std().item() < 0.012  # N(0, 0.01²) as the reference
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.backbone(x)[-1]
        assert features.shape[-2:] == (8, 8)  # output stride 8
        # Silencing all branches but one leaves that branch's logits.
        for conv in model.head[1:]:
            conv.weight.zero_()
            conv.bias.zero_()
        one = model.head[0](features)
        expected = torch.nn.functional.interpolate(one, size=(64, 64), mode="bilinear")
        torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("kind", ["deeplabv3plus", "deeplabv2"])
def test_param_groups_partition_encoder_pretrained_head_new(kind: str) -> None:
    model = create_model(kind, backbone="resnet10t", num_classes=3)
    groups = model.param_groups()
    ids = {name: {id(p) for p in ps} for name, ps in groups.items()}
    every = [i for s in ids.values() for i in s]
    assert len(every) == len(set(every)) == len(list(model.parameters()))
    encoder = model.encoder if kind == "deeplabv3plus" else model.backbone
    assert ids["pretrained_weights"] | ids["pretrained_biases"] == {
        id(p) for p in encoder.parameters()
    }
    head = model.head if kind == "deeplabv3plus" else model.head[0]
    assert id(head.weight) in ids["new_weights"] and id(head.bias) in ids["new_biases"]
    if kind == "deeplabv3plus":
        gn = next(m for m in model.decoder.modules() if isinstance(m, nn.GroupNorm))
        assert id(gn.weight) in ids["new_weights"] and id(gn.bias) in ids["new_biases"]
        moved = model.param_groups(norm_weight_group="biases")
        assert id(gn.weight) in {id(p) for p in moved["new_biases"]}


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("deeplabv3plus", {**TINY, "atrous_rates": (2, 4, 6)}),
        ("deeplabv2", dict(backbone="resnet10t", num_classes=4, atrous_rates=(2, 3))),
    ],
)
def test_load_model_rebuilds_from_checkpoint(tmp_path, kind: str, kwargs: dict) -> None:
    model = create_model(kind, **kwargs).eval()
    path = save_model(tmp_path / "seg", model, {"classes": ["a", "b", "c"]})
    loaded, meta = load_model(path)
    assert type(loaded) is type(model) and meta["architecture"] == model.architecture()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_v3plus_pretrained_offline_raises_offline_error(monkeypatch) -> None:
    create = timm.create_model

    def offline(name, *args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("Name or service not known")
        return create(name, *args, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(OfflineError, match=r"resnet10t.*local file"):
        DeepLabV3Plus(**TINY, pretrained=True)


def test_v3plus_local_encoder_weights(tmp_path) -> None:
    reference = timm.create_model("resnet10t")
    path = tmp_path / "resnet10t.safetensors"
    save_file(reference.state_dict(), str(path))
    model = DeepLabV3Plus(**TINY, weights=path)
    torch.testing.assert_close(
        model.encoder.model.conv1[0].weight, reference.state_dict()["conv1.0.weight"]
    )
    assert "weights" not in model.architecture()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(backbone="no_such_net"), "not a timm model"),
        (dict(output_stride=32), "output_stride"),
        (dict(atrous_rates=(6, 12)), "atrous_rates"),
        (dict(decoder_norm="layer"), "decoder_norm"),
        (dict(num_classes=1), "background"),
        (dict(weights="/no/such/file.safetensors"), "does not exist"),
    ],
)
def test_v3plus_bad_settings_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DeepLabV3Plus(**{**TINY, **kwargs})


# ---- loss ------------------------------------------------------------------------------------

LOGITS = [  # K=3 classes on a 2×2 image: LOGITS[k][row][col]
    [[2.0, 0.0], [1.0, -1.0]],
    [[0.5, 1.0], [3.0, 0.0]],
    [[-1.0, 2.0], [0.0, 0.5]],
]
TARGET = [[0, 2], [255, 1]]


def _hand_loss(eps: float) -> float:
    total, count = 0.0, 0
    for r in range(2):
        for c in range(2):
            y = TARGET[r][c]
            if y == 255:
                continue
            z = [LOGITS[k][r][c] for k in range(3)]
            log_norm = math.log(sum(math.exp(v) for v in z))
            nll = [log_norm - v for v in z]
            total += (1 - eps) * nll[y] + eps * sum(nll) / 3
            count += 1
    return total / count


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_matches_hand_computation_ignoring_255(eps: float) -> None:
    logits = torch.tensor(LOGITS).unsqueeze(0)
    target = torch.tensor(TARGET).unsqueeze(0)
    loss = segmentation_loss(logits, target, label_smoothing=eps)
    assert loss.item() == pytest.approx(_hand_loss(eps), rel=1e-6)


def test_loss_ignored_pixel_logits_get_no_gradient() -> None:
    logits = torch.tensor(LOGITS).unsqueeze(0).requires_grad_()
    segmentation_loss(logits, torch.tensor(TARGET).unsqueeze(0), label_smoothing=0.1).backward()
    assert (logits.grad[0, :, 1, 0] == 0).all()
    assert (logits.grad[0, :, 0, 0] != 0).all()


def test_loss_all_ignored_is_zero_not_nan() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 2, 2), 255), label_smoothing=0.1)
    loss.backward()
    assert loss.item() == 0.0 and (logits.grad == 0).all()


def test_loss_rejects_class_ids_beyond_the_model() -> None:
    with pytest.raises(DataError, match="class id 3"):
        segmentation_loss(torch.randn(1, 3, 2, 2), torch.tensor([[[0, 1], [3, 255]]]))
    with pytest.raises(ConfigError, match="label_smoothing"):
        segmentation_loss(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 1.0)


def test_registry_knows_segmentation_kinds_without_importing_them() -> None:
    # load_model must rebuild a segmentation checkpoint in a process that never imported
    # wsss.models.segmentation itself.
    code = "from wsss.models import list_models; print(list_models())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "deeplabv3plus" in out.stdout and "deeplabv2" in out.stdout
