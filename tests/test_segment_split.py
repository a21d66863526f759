"""Segmentation inference over a split: masks on disk, settings record, resume, shards, eval."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from test_segmentation_task import Squares
from wsss.errors import ConfigError, WsssError
from wsss.evaluate import evaluate
from wsss.io.masks import MaskStore
from wsss.maps import segmentation_infer
from wsss.maps.segment import ProbabilityStore, segment_split
from wsss.maps.segmentation_infer import DEEPLAB_V2_CRF, CRFParams, predict_segmentation

pytestmark = pytest.mark.usefixtures("one_thread")


class ColourNet(nn.Module):
    """Per-pixel logits: class k + 1 scores 4·(channel k), background a constant 4·1.0.

    On the squares (pure colour on dark noise) the argmax is exactly the ground truth.
    """

    def __init__(self, record: Path | None = None) -> None:
        super().__init__()
        self.num_classes = 4
        self.conv = nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            for k in range(3):
                self.conv.weight[k + 1, k] = 4.0
            self.conv.bias[0] = 4.0
        self.record = record
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record is not None:  # the settings are on disk before any image is computed
            assert json.loads(self.record.read_text())["complete"] is False
        self.calls += 1
        return self.conv(x)


def test_masks_are_the_predictions_and_the_folder_records_its_settings(tmp_path: Path) -> None:
    data = Squares(5)
    model = ColourNet(record=tmp_path / "out/masks.json")
    result = segment_split(
        model, data, tmp_path / "out", save_probs=True, checkpoint="c.safetensors"
    )
    assert (result.written, result.skipped, result.complete) == (5, 0, True)
    assert model.calls == 4 * 5  # one forward per scale, image and flip pair
    model.record = None
    store, probs = MaskStore(tmp_path / "out"), ProbabilityStore(tmp_path / "out/probs")
    for i, sample_id in enumerate(data.ids):
        expected = predict_segmentation(model, [data.images[i]])[0]
        np.testing.assert_array_equal(store.load(sample_id), expected.mask)
        p = probs.load(sample_id)
        np.testing.assert_allclose(p, expected.probs, atol=1e-3)  # float16 on disk
        assert p.shape == (4, 36, 40)
    record = json.loads((tmp_path / "out/masks.json").read_text())
    assert record == {
        "checkpoint": "c.safetensors",
        "scales": [0.5, 1.0, 1.5, 2.0],
        "flip": True,
        "crf": None,
        "split": "train",
        "classes": ["background", "red", "green", "blue"],
        "complete": True,
        "count": 5,
    }
    assert json.loads((tmp_path / "out/probs/probs.json").read_text())["complete"] is True


def test_reruns_resume_and_other_settings_are_refused(tmp_path: Path) -> None:
    data = Squares(4)
    segment_split(ColourNet(), data, tmp_path, scales=(1.0,))
    MaskStore(tmp_path).path("im2").unlink()
    model = ColourNet()
    result = segment_split(model, data, tmp_path, scales=(1.0,))
    assert (result.written, result.skipped, model.calls) == (1, 3, 1)
    with pytest.raises(ConfigError, match=r"other settings \(scales: \[1\.0\] → \[0\.5, 1\.0\]"):
        segment_split(ColourNet(), data, tmp_path, scales=(0.5, 1.0))
    result = segment_split(ColourNet(), data, tmp_path, scales=(0.5, 1.0), restart=True)
    assert result.written == 4


def test_shards_take_every_world_th_image_and_the_last_one_completes(tmp_path: Path) -> None:
    data = Squares(5)
    first = segment_split(ColourNet(), data, tmp_path, scales=(1.0,), rank=1, world_size=2)
    assert (first.written, first.complete) == (2, False)
    assert MaskStore(tmp_path).ids() == ["im1", "im3"]
    assert MaskStore(tmp_path).is_complete() is False
    second = segment_split(ColourNet(), data, tmp_path, scales=(1.0,), rank=0, world_size=2)
    assert (second.written, second.complete) == (3, True)
    assert MaskStore(tmp_path).is_complete()


def test_the_masks_evaluate_against_the_ground_truth(tmp_path: Path) -> None:
    data = Squares(3)
    segment_split(ColourNet(), data, tmp_path, scales=(1.0,))
    result = evaluate(data, masks_dir=tmp_path, progress=False)
    assert result["miou"] == pytest.approx(100.0) and result["num_images"] == 3


def test_the_crf_runs_with_the_deeplab_v2_parameters(tmp_path: Path, monkeypatch) -> None:
    # A stand-in for pydensecrf that records its inputs and moves every pixel to class 2.
    seen = []

    def fake_crf(image: np.ndarray, probs: np.ndarray, params) -> np.ndarray:
        seen.append((image.copy(), probs.copy(), params))
        out = np.zeros_like(probs)
        out[2] = 1.0
        return out

    monkeypatch.setattr(segmentation_infer, "_dense_crf", fake_crf)
    data = Squares(2)
    segment_split(ColourNet(), data, tmp_path, scales=(1.0,), crf=True)
    assert [p for _, _, p in seen] == [DEEPLAB_V2_CRF] * 2
    assert (
        CRFParams(
            iterations=10,
            gaussian_sxy=1.0,
            gaussian_compat=3.0,
            bilateral_sxy=67.0,
            bilateral_srgb=3.0,
            bilateral_compat=4.0,
        )
        == DEEPLAB_V2_CRF
    )
    np.testing.assert_array_equal(seen[1][0], data.images[1])  # the RGB image, H×W×3
    np.testing.assert_allclose(seen[1][1].sum(0), 1.0, rtol=1e-5)  # softmax probabilities
    assert (MaskStore(tmp_path).load("im1") == 2).all()
    crf = json.loads((tmp_path / "masks.json").read_text())["crf"]
    assert crf == {
        "iterations": 10,
        "gaussian_sxy": 1.0,
        "gaussian_compat": 3.0,
        "bilateral_sxy": 67.0,
        "bilateral_srgb": 3.0,
        "bilateral_compat": 4.0,
    }


def test_a_model_for_another_dataset_is_refused(tmp_path: Path) -> None:
    model = ColourNet()
    model.num_classes = 21
    with pytest.raises(
        ConfigError, match=r"predicts 21 classes but dataset .* has 3 \+ background"
    ):
        segment_split(model, Squares(2), tmp_path)
    assert not (tmp_path / "masks.json").exists()


def _two_ranks(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from wsss.runtime import distributed

    distributed.init_distributed()
    seen: dict[str, object] = {}
    result = segment_split(ColourNet(), Squares(5), Path(out) / "shared", progress=False)
    seen["result"] = [result.written, result.skipped, result.complete]
    try:
        segment_split(ColourNet(), Squares(5), Path(out) / "shared", scales=(1.0,))
    except WsssError as e:
        seen["error"] = f"{type(e).__name__}: {e}"
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    distributed.cleanup()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ranks_write_the_same_masks_as_one_process(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_ranks, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert seen[0]["result"] == [3, 0, True] and seen[1]["result"] == [2, 0, True]
    # Rank 0 refuses the folder (other settings); rank 1 learns of it instead of hanging.
    assert seen[0]["error"].startswith("ConfigError") and "other settings" in seen[0]["error"]
    assert seen[1]["error"] == "WsssError: another rank refused the output folder (see its message)"
    segment_split(ColourNet(), Squares(5), tmp_path / "single", progress=False)
    shared, single = MaskStore(tmp_path / "shared"), MaskStore(tmp_path / "single")
    assert shared.is_complete() and shared.ids() == single.ids()
    for sample_id in single.ids():
        np.testing.assert_array_equal(shared.load(sample_id), single.load(sample_id))
