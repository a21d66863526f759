"""The CAM classifier: map shapes, GAP(maps) = logits, parameter groups, weights loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from wsss.errors import ConfigError, OfflineError
from wsss.models import CAMClassifier, create_backbone, load_backbone_weights, save_model
from wsss.models.backbone import stage_module

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("stride", [16, 8])
@pytest.mark.parametrize("size", [(64, 48), (50, 37)])
def test_map_shapes_follow_output_stride(stride: int, size: tuple[int, int]) -> None:
    model = CAMClassifier("resnet10t", num_classes=5, output_stride=stride).eval()
    out = model(torch.randn(2, 3, *size), with_maps=True, with_features=True)
    expected = (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert out.maps.shape == (2, 5, *expected)
    assert out.features.shape == (2, model.feature_dim, *expected)
    assert out.logits.shape == (2, 5)


def test_logits_are_gap_of_maps_and_head_of_gap_features() -> None:
    model = CAMClassifier("resnet10t", num_classes=4, output_stride=16).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 80), with_maps=True, with_features=True)
        head_of_gap = model.head(out.features.mean(dim=(2, 3), keepdim=True)).flatten(1)
    torch.testing.assert_close(out.logits, out.maps.mean(dim=(2, 3)))
    torch.testing.assert_close(out.logits, head_of_gap, rtol=1e-4, atol=1e-5)
    assert model.head.bias is None
    # Maps are raw (pre-ReLU): a random head gives negative values somewhere.
    assert (out.maps < 0).any()


def test_optional_outputs_are_none_unless_requested() -> None:
    model = CAMClassifier("resnet10t", num_classes=2).eval()
    out = model(torch.randn(1, 3, 32, 32))
    assert out.maps is None and out.features is None and out.stages is None
    stages = model(torch.randn(1, 3, 32, 32), with_stages=True).stages
    assert len(stages) == len(model.backbone.feature_info.channels())


def test_param_groups_partition_parameters() -> None:
    model = CAMClassifier("resnet10t", num_classes=3)
    groups = model.param_groups()
    ids = {name: {id(p) for p in ps} for name, ps in groups.items()}
    all_ids = [i for s in ids.values() for i in s]
    assert len(all_ids) == len(set(all_ids)) == len(list(model.parameters()))
    assert ids["new_weights"] == {id(model.head.weight)}
    assert ids["new_biases"] == set()
    backbone = dict(model.backbone.named_parameters())
    assert id(backbone["conv1.0.weight"]) in ids["pretrained_weights"]
    assert id(backbone["conv1.1.weight"]) in ids["pretrained_weights"]  # BN γ (reference)
    assert id(backbone["conv1.1.bias"]) in ids["pretrained_biases"]  # BN β
    names = {id(p): n for n, p in backbone.items()}
    assert all(names[id(p)].endswith(".bias") for p in groups["pretrained_biases"])
    old = model.param_groups(norm_weight_group="biases")
    assert id(backbone["conv1.1.weight"]) in {id(p) for p in old["pretrained_biases"]}
    assert all(p.ndim == 1 for p in old["pretrained_biases"])
    assert all(p.ndim > 1 for p in old["pretrained_weights"])


def test_architecture_rebuilds_the_model() -> None:
    model = CAMClassifier("resnet10t", num_classes=7, output_stride=8)
    arch = model.architecture()
    assert arch == {
        "type": "cam_classifier",
        "backbone": "resnet10t",
        "num_classes": 7,
        "output_stride": 8,
    }


def test_pretrained_offline_raises_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained and "pretrained_cfg_overlay" not in kwargs:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(OfflineError) as info:
        CAMClassifier("resnet10t", num_classes=3, pretrained=True)
    message = str(info.value)
    assert "resnet10t" in message and "model.weights" in message and "pretrained=false" in message


def test_local_weights_file_is_loaded(tmp_path: Path) -> None:
    source = timm.create_model("resnet10t", pretrained=False)
    with torch.no_grad():
        for p in source.parameters():
            p.uniform_(-1, 1)  # distinct from any fresh initialisation
    path = tmp_path / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = CAMClassifier("resnet10t", num_classes=3, weights=str(path))
    assert model.pretrained
    mine, theirs = model.backbone.state_dict(), source.state_dict()
    for key in ("conv1.0.weight", "layer4.0.conv1.weight", "layer2.0.bn2.bias"):
        torch.testing.assert_close(mine[key], theirs[key], rtol=0, atol=0)


def test_missing_weights_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        CAMClassifier("resnet10t", num_classes=3, weights=str(tmp_path / "nope.safetensors"))


def test_unknown_backbone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a timm model"):
        CAMClassifier("resnet_does_not_exist", num_classes=3)


def _randomised_state(name: str) -> dict[str, torch.Tensor]:
    source = timm.create_model(name, pretrained=False)
    with torch.no_grad():
        for p in source.parameters():
            p.uniform_(-1, 1)
    return {k: v.contiguous() for k, v in source.state_dict().items()}


def test_weights_matching_nothing_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"encoder.blocks.0.weight": torch.zeros(3, 3), "fc.weight": torch.zeros(2, 4)}, path)
    with pytest.raises(ConfigError) as info:
        CAMClassifier("resnet10t", num_classes=3, weights=str(path))
    message = str(info.value)
    total = sum(
        not k.endswith("num_batches_tracked") for k in create_backbone("resnet10t").state_dict()
    )
    assert str(path) in message and f"only 0 of the backbone's {total} tensors" in message


def test_weights_covering_half_the_backbone_load_with_a_warning(tmp_path: Path) -> None:
    state = _randomised_state("resnet10t")
    names = [k for k in create_backbone("resnet10t").state_dict() if "num_batches" not in k]
    kept = names[: int(0.6 * len(names))]
    save_file({k: state[k] for k in kept}, tmp_path / "most.safetensors")
    with pytest.warns(UserWarning, match=f"{len(names) - len(kept)} of {len(names)} backbone"):
        model = CAMClassifier("resnet10t", num_classes=3, weights=tmp_path / "most.safetensors")
    mine = model.backbone.state_dict()
    torch.testing.assert_close(mine[kept[-1]], state[kept[-1]], rtol=0, atol=0)
    left_out = [k for k in names[len(kept) :] if k.endswith("conv2.weight")][-1]
    assert not torch.equal(mine[left_out], state[left_out])  # not in the file: initialised

    few = names[: int(0.4 * len(names))]
    save_file({k: state[k] for k in few}, tmp_path / "few.safetensors")
    with pytest.raises(ConfigError, match=f"only {len(few)} of"):
        CAMClassifier("resnet10t", num_classes=3, weights=tmp_path / "few.safetensors")


def test_a_wsss_checkpoint_gives_its_backbone(tmp_path: Path) -> None:
    trained = CAMClassifier("resnet10t", num_classes=4)
    with torch.no_grad():
        for p in trained.parameters():
            p.uniform_(-1, 1)
    path = save_model(tmp_path / "ckpt" / "last", trained, {"classes": list("abcd")})
    model = CAMClassifier("resnet10t", num_classes=2, weights=path)  # a new head, 2 classes
    for key, value in trained.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value, rtol=0, atol=0)
    match = load_backbone_weights(create_backbone("resnet10t"), path)
    assert match.prefix == "backbone." and match.coverage == 1.0
    assert match.unused == ["head.weight"]


def test_flattened_stage_names_map_to_the_timm_model() -> None:
    """ConvNeXt's features_only wrapper renames ``stages.0`` to ``stages_0``."""
    state = _randomised_state("convnext_atto")
    backbone = create_backbone("convnext_atto")
    assert stage_module(backbone) is backbone.stages_3  # timm names it "stages.3"
    match = load_backbone_weights(backbone, state)
    assert match.coverage == 1.0 and match.unused == [
        "head.norm.weight",
        "head.norm.bias",
        "head.fc.weight",
        "head.fc.bias",
    ]
    torch.testing.assert_close(
        backbone.state_dict()["stages_3.blocks.1.conv_dw.weight"],
        state["stages.3.blocks.1.conv_dw.weight"],
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_transformer_backbones_are_a_clear_config_error(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        CAMClassifier(name, num_classes=3)
    message = str(info.value)
    assert name in message and "convolutional" in message and "resnet50" in message
