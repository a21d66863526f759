"""Interop: pytorch-grad-cam on the classifier, timm checkpoints, the reference code's map files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from wsss.cli import app
from wsss.data.datasets import build_dataset
from wsss.data.image_io import write_image, write_mask
from wsss.errors import ConfigError, DataError
from wsss.evaluate import evaluate
from wsss.evaluate.foreign import MAPS_FORMATS, load_maps, read_pickled_npy
from wsss.io.maps import ClassMaps, save_class_maps
from wsss.models import CAMClassifier, cam_classifier_from_timm

pytestmark = pytest.mark.usefixtures("one_thread")


# pytorch-grad-cam ---------------------------------------------------------------------------


def test_as_logits_returns_the_logits_tensor_and_shares_parameters() -> None:
    model = CAMClassifier("resnet10t", num_classes=4).eval()
    view = model.as_logits()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(view(x), model(x).logits, rtol=0, atol=0)
    assert [id(p) for p in view.parameters()] == [id(p) for p in model.parameters()]
    assert model.last_stage() is model.backbone.layer4


def test_grad_cam_runs_on_the_logits_view() -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = CAMClassifier("resnet10t", num_classes=4).eval()
    x = torch.randn(1, 3, 64, 80)
    with pytest.raises(TypeError):  # model(x) is a CAMOutput, not a tensor
        GradCAM(model=model, target_layers=[model.last_stage()])(x, [ClassifierOutputTarget(1)])
    with torch.no_grad():
        maps = model(x, with_maps=True).maps[0]
    c = int(maps.amax(dim=(1, 2)).argmax())  # a class whose CAM is positive somewhere
    cam = GradCAM(model=model.as_logits(), target_layers=[model.last_stage()])
    heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(c)])
    assert heat.shape == (1, 64, 80)
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    # logits = GAP(W·F), so Grad-CAM's weights are W_c / (h·w) and its map is ReLU(CAM_c),
    # min-max scaled, then resized (bilinear, half-pixel centres)
    relu = maps[c].clamp(min=0)
    scaled = (relu - relu.min()) / (relu.max() - relu.min())
    expected = torch.nn.functional.interpolate(scaled[None, None], size=(64, 80), mode="bilinear")
    np.testing.assert_allclose(heat[0], expected[0, 0].numpy(), atol=5e-3)  # cv2 rounding


# timm checkpoints ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_classifier() -> torch.nn.Module:
    torch.manual_seed(1)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("layout", ["pth", "safetensors", "nested"])
def test_timm_checkpoint_becomes_a_cam_classifier(
    tmp_path: Path, timm_classifier: torch.nn.Module, layout: str
) -> None:
    state = {k: v.contiguous() for k, v in timm_classifier.state_dict().items()}
    path = tmp_path / f"timm.{'safetensors' if layout == 'safetensors' else 'pth'}"
    if layout == "safetensors":
        save_file(state, path)
    else:  # timm's train.py nests the weights under state_dict
        torch.save({"state_dict": state, "epoch": 3} if layout == "nested" else state, path)

    model, meta = cam_classifier_from_timm(path, "resnet10t", output_stride=32)
    assert meta["architecture"]["num_classes"] == 3 and meta["source"] == str(path)
    torch.testing.assert_close(model.head.weight.flatten(1), state["fc.weight"], rtol=0, atol=0)
    assert meta["head_bias"] == pytest.approx(state["fc.bias"].tolist())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = timm_classifier(x) - state["fc.bias"]  # the CAM head has no bias
        torch.testing.assert_close(model(x).logits, expected, rtol=1e-4, atol=1e-5)


def test_timm_checkpoint_at_output_stride_16_keeps_the_weights(
    tmp_path: Path, timm_classifier: torch.nn.Module
) -> None:
    torch.save(timm_classifier.state_dict(), tmp_path / "timm.pth")
    model, meta = cam_classifier_from_timm(
        tmp_path / "timm.pth", "resnet10t", classes=["a", "b", "c"]
    )
    assert meta["classes"] == ["a", "b", "c"] and model.output_stride == 16
    reference = timm_classifier.state_dict()
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), with_maps=True)
    assert out.maps.shape == (1, 3, 4, 4)


def test_timm_checkpoint_errors(tmp_path: Path, timm_classifier: torch.nn.Module) -> None:
    torch.save(timm_classifier.state_dict(), tmp_path / "timm.pth")
    with pytest.raises(ConfigError, match=r"\(3, 512\).*for 5 classes needs \(5, 512\)"):
        cam_classifier_from_timm(tmp_path / "timm.pth", "resnet10t", num_classes=5)
    backbone_only = {k: v for k, v in timm_classifier.state_dict().items() if "fc" not in k}
    torch.save(backbone_only, tmp_path / "no_head.pth")
    with pytest.raises(ConfigError, match="no classifier weights"):
        cam_classifier_from_timm(tmp_path / "no_head.pth", "resnet10t")
    # ConvNeXt normalises the pooled features before its fc, EfficientNet adds a 1×1 conv and a
    # BN after its last stage: neither classifier is a CAM head.
    for name, layer in (("convnext_atto", r"head\.norm\.weight"), ("efficientnet_b0", "conv_head")):
        torch.save(timm.create_model(name, num_classes=3).state_dict(), tmp_path / "c.pth")
        with pytest.raises(ConfigError, match=f"layers between its last stage.*{layer}"):
            cam_classifier_from_timm(tmp_path / "c.pth", name)


# the reference code's map files -------------------------------------------------------------

IDS = ["a", "b"]


def _gt_mask(i: int) -> np.ndarray:
    mask = np.zeros((20, 24), np.uint8)
    mask[3:12, 4:14] = 1
    mask[12:18, 14:22] = 2 + i  # image a: classes 1, 2; image b: classes 1, 3
    mask[0, :] = 255
    return mask


def _maps_of(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation ids present and their maps: 0.8 on the class, 0.1 elsewhere."""
    keys = np.unique(mask[(mask > 0) & (mask < 255)]).astype(np.int64)
    hr = np.stack([np.where(mask == k, 0.8, 0.1) for k in keys]).astype(np.float32)
    return keys, hr


def _save_irn(path: Path, keys: np.ndarray, hr: np.ndarray) -> None:
    """As IRN's make_cam.py / LPCAM's make_lpcam.py save them: keys 0-based, torch tensors."""
    valid_cat = torch.from_numpy(keys - 1)
    np.save(path, {"keys": valid_cat, "cam": torch.from_numpy(hr[:, ::4, ::4]), "high_res": hr})


def _save_puzzle(path: Path, keys: np.ndarray, hr: np.ndarray) -> None:
    """As Puzzle-CAM's and P-NOC's inference save them: keys [0, k₁+1, …], cam a tensor."""
    padded = np.pad(torch.from_numpy(keys - 1) + 1, (1, 0), mode="constant")
    np.save(path, {"keys": padded, "cam": torch.from_numpy(hr[:, ::4, ::4]), "hr_cam": hr})


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(IDS) + "\n")
    (root / "classes.txt").write_text("cat\ndog\nbird\n")
    rng = np.random.default_rng(0)
    for i, sample_id in enumerate(IDS):
        mask = _gt_mask(i)
        write_image(root / "JPEGImages" / f"{sample_id}.jpg", rng.integers(0, 255, (20, 24, 3)))
        write_mask(root / "SegmentationClass" / f"{sample_id}.png", mask)
        keys, hr = _maps_of(mask)
        hr[:, 5:8, 16:20] = 0.85  # a wrong region so that scores are not all 100
        save_class_maps(
            tmp_path / "wsss" / f"{sample_id}.npz", ClassMaps(keys, hr[:, ::4, ::4], hr)
        )
        for name, save in (("irn", _save_irn), ("puzzle", _save_puzzle)):
            (tmp_path / name).mkdir(exist_ok=True)
            save(tmp_path / name / f"{sample_id}.npy", keys, hr)
    return tmp_path


@pytest.mark.parametrize("fmt", ["irn", "puzzle"])
def test_reference_map_files_read_as_class_maps(voc: Path, fmt: str) -> None:
    maps = load_maps(voc / fmt / "b.npy", fmt)
    keys, hr = _maps_of(_gt_mask(1))
    hr[:, 5:8, 16:20] = 0.85
    assert maps.keys.tolist() == [1, 3] == keys.tolist()
    np.testing.assert_array_equal(maps.hr, hr)
    np.testing.assert_array_equal(maps.cam, hr[:, ::4, ::4])


@pytest.mark.parametrize("fmt", ["irn", "puzzle"])
def test_evaluating_reference_files_equals_evaluating_wsss_files(voc: Path, fmt: str) -> None:
    dataset = build_dataset("voc", voc / "voc", "train")
    mine = evaluate(dataset, maps_dir=voc / "wsss", sweep=True, progress=False)
    theirs = evaluate(dataset, maps_dir=voc / fmt, sweep=True, maps_format=fmt, progress=False)
    assert 50 < mine["miou"] < 100
    assert {k: v for k, v in theirs.items() if k != "source"} == {
        k: v for k, v in mine.items() if k != "source"
    }


def test_eval_cli_maps_format(voc: Path) -> None:
    out = voc / "res.json"
    args = ["eval", "--data", voc / "voc", "--split", "train", "--maps", voc / "puzzle"]
    result = CliRunner().invoke(app, [*map(str, args), "--maps-format", "puzzle", "--out", out])
    assert result.exit_code == 0, result.output
    mine = evaluate(build_dataset("voc", voc / "voc", "train"), maps_dir=voc / "wsss")
    assert json.loads(out.read_text())["miou"] == pytest.approx(mine["miou"])
    # without the option the .npz files are looked for, and the error says which
    result = CliRunner().invoke(app, list(map(str, args)))
    assert isinstance(result.exception, DataError) and "a.npz" in str(result.exception)
    result = CliRunner().invoke(app, [*map(str, args), "--maps-format", "caffe"])
    assert result.exit_code != 0 and "irn" in result.output and "puzzle" in result.output
    assert set(MAPS_FORMATS) == {"wsss", "irn", "puzzle"}


def test_wrong_format_names_the_file_and_the_option(voc: Path) -> None:
    with pytest.raises(DataError, match=r"a\.npy: no 'hr_cam'.*--maps-format"):
        load_maps(voc / "irn" / "a.npy", "puzzle")
    with pytest.raises(DataError, match="start with the background 0"):
        np.save(voc / "bad.npy", {"keys": np.array([1, 2]), "hr_cam": np.zeros((1, 2, 2))})
        load_maps(voc / "bad.npy", "puzzle")
    with pytest.raises(ConfigError, match="unknown maps format"):
        load_maps(voc / "irn" / "a.npy", "caffe")


class _Planted:
    """A pickle that would create a file when unpickled by np.load(allow_pickle=True)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_foreign_pickles_never_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    np.save(tmp_path / "evil.npy", {"keys": _Planted(marker), "high_res": np.zeros((0, 2, 2))})
    with pytest.raises(DataError, match="refusing to load pathlib"):
        read_pickled_npy(tmp_path / "evil.npy")
    assert not marker.exists()
    np.load(tmp_path / "evil.npy", allow_pickle=True)  # what a plain reader would do
    assert marker.exists()


def test_only_dicts_of_arrays_are_accepted(tmp_path: Path) -> None:
    np.save(tmp_path / "plain.npy", np.zeros((2, 4, 4), np.float32))
    with pytest.raises(DataError, match="not a dict of maps"):
        read_pickled_npy(tmp_path / "plain.npy")
    np.save(tmp_path / "list.npy", np.array([{"keys": 1}, {"keys": 2}], dtype=object))
    with pytest.raises(DataError, match="not a dict of maps"):
        read_pickled_npy(tmp_path / "list.npy")
    np.save(tmp_path / "str.npy", {"keys": np.array([0]), "note": "made by me"})
    with pytest.raises(DataError, match="'note' is a str"):
        read_pickled_npy(tmp_path / "str.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "str.npy").read_bytes()[:90])
    with pytest.raises(DataError, match="unreadable"):
        read_pickled_npy(tmp_path / "cut.npy")
