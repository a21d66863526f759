"""``wsss masks``, ``wsss affinity`` and ``wsss random-walk`` on a tiny VOC-layout dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wsss.cli import app
from wsss.data.datasets import build_dataset
from wsss.data.image_io import write_image, write_mask
from wsss.data.transforms import normalize, to_tensor
from wsss.errors import ConfigError, DataError
from wsss.evaluate import evaluate
from wsss.evaluate.confident import evaluate_confident
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore
from wsss.models import save_model
from wsss.models.boundary import BoundaryNet
from wsss.models.classifier import CAMClassifier
from wsss.refine.folders import evaluate_affinity_labels
from wsss.refine.pseudo_masks import pseudo_mask
from wsss.refine.random_walk import random_walk_maps
from wsss.refine.walk import run_random_walk

CLASSES = ["cat", "dog"]
SIZES = {"a": (40, 52), "b": (36, 44), "c": (40, 52), "d": (28, 32)}
BOXES = {  # class id → (y0, y1, x0, x1)
    "a": {1: (8, 30, 10, 40)},
    "b": {1: (4, 20, 4, 20), 2: (18, 34, 22, 42)},
    "c": {2: (10, 36, 6, 30)},
    "d": {},  # no foreground label: all background
}

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args):
    return CliRunner().invoke(app, [*map(str, args)])


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("refine")
    voc = root / "voc"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(SIZES) + "\n")
    (voc / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    maps = MapStore(root / "maps")
    for sample_id, (h, w) in SIZES.items():
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        hr = []
        for c, (y0, y1, x0, x1) in BOXES[sample_id].items():
            mask[y0:y1, x0:x1] = c
            image[y0:y1, x0:x1] = 120 + 60 * c
            # A blurry map that overshoots the box, with noise: thresholds matter.
            yy, xx = np.mgrid[:h, :w]
            cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
            m = np.exp(-(((yy - cy) / (y1 - y0)) ** 2 + ((xx - cx) / (x1 - x0)) ** 2) * 1.5)
            m = np.clip(m + rng.normal(0, 0.05, m.shape), 0, None)
            hr.append(m / m.max())
        mask[0, :3] = 255  # a few ignored ground-truth pixels
        write_image(voc / "JPEGImages" / f"{sample_id}.png", image)
        write_mask(voc / "SegmentationClass" / f"{sample_id}.png", mask)
        keys = np.asarray(sorted(BOXES[sample_id]), np.int64)
        hr_arr = np.asarray(hr, np.float32).reshape(len(keys), h, w)
        cam = hr_arr[:, ::4, ::4].copy()
        maps.save(sample_id, ClassMaps(keys, cam, hr_arr))
    torch.manual_seed(0)
    boundary = BoundaryNet("resnet10t").eval()
    ckpt = save_model(root / "boundary", boundary, {"classes": CLASSES})
    classifier = save_model(
        root / "classifier", CAMClassifier("resnet10t", num_classes=2), {"classes": CLASSES}
    )
    return {"voc": voc, "maps": root / "maps", "boundary": ckpt, "classifier": classifier}


def test_seed_masks_evaluate_exactly_like_their_maps(setup, tmp_path):
    voc, maps = setup["voc"], setup["maps"]
    for threshold in (0.3, 0.55):
        out = tmp_path / f"seeds{threshold}"
        result = invoke(
            "masks", "--data", voc, "--maps", maps, "--threshold", threshold, "--out", out
        )
        assert result.exit_code == 0, result.output
        assert "4 masks written" in result.output
        dataset = build_dataset("voc", voc, "train")
        from_maps = evaluate(dataset, maps_dir=maps, threshold=threshold, progress=False)
        from_masks = evaluate(dataset, masks_dir=out, progress=False)
        for key in ("miou", "fp", "fn", "precision", "recall", "per_class"):
            assert from_masks[key] == from_maps[key], key
        assert (MaskStore(out).load("d") == 0).all()
    # The same folder with another threshold is refused; the same one resumes.
    again = invoke("masks", "--data", voc, "--maps", maps, "--threshold", 0.3, "--out", out)
    assert isinstance(again.exception, ConfigError) and "other settings" in str(again.exception)
    same = invoke("masks", "--data", voc, "--maps", maps, "--threshold", 0.55, "--out", out)
    assert same.exit_code == 0 and "0 masks written, 4 already there" in same.output


def test_masks_refuses_ambiguous_background(setup, tmp_path):
    voc, maps = setup["voc"], setup["maps"]
    base = ["masks", "--data", voc, "--maps", maps, "--out", tmp_path / "m"]
    both = invoke(*base, "--threshold", 0.3, "--saliency", maps)
    neither = invoke(*base)
    for result in (both, neither):
        assert isinstance(result.exception, ConfigError)
        assert "exactly one of --threshold" in str(result.exception)


def test_affinity_labels_and_their_scores(setup, tmp_path):
    voc, maps = setup["voc"], setup["maps"]
    out, scores = tmp_path / "aff", tmp_path / "scores.json"
    args = ["affinity", "--data", voc, "--maps", maps, "--out", out, "--no-crf"]
    result = invoke(*args, "--scores", scores)
    assert result.exit_code == 0, result.output
    assert "4 label maps written" in result.output and "unsure" in result.output
    labels = MaskStore(out)
    assert (labels.load("d") == 0).all()
    assert 255 in labels.load("a")  # between the two thresholds
    # The confusion-matrix scores agree with the reference accumulator of wsss.refine.
    dataset = build_dataset("voc", voc, "train")
    reference = evaluate_affinity_labels(dataset, labels)
    written = json.loads(scores.read_text())
    for key in ("fg_precision", "bg_precision", "ignored"):
        assert written[key] == pytest.approx(100 * reference[key])
    assert written["pixel_precision"] == pytest.approx(100 * reference["precision"])
    # The seed metrics count confident pixels only: the labels with 255 → gt equal the gt.
    gt_like = MaskStore(tmp_path / "gt_like")
    for sample_id in dataset.ids:
        gt = dataset.load_mask(sample_id).copy()
        gt[labels.load(sample_id) == 255] = 255
        gt_like.save(sample_id, gt)
    perfect = evaluate_confident(dataset, gt_like.root)
    assert perfect["miou"] == pytest.approx(100) and perfect["pixel_precision"] == 100
    assert perfect["ignored"] == pytest.approx(written["ignored"])
    lpcam = invoke(*args[:-3], "--out", tmp_path / "aff2", "--no-crf", "--preset", "lpcam")
    assert lpcam.exit_code == 0, lpcam.output
    # LPCAM's thresholds (0.45, 0.25) are both higher: fewer unsure pixels here than IRN's.
    assert "unsure" in lpcam.output


def test_affinity_rejects_crossed_thresholds(setup, tmp_path):
    voc, maps = setup["voc"], setup["maps"]
    result = invoke(
        "affinity", "--data", voc, "--maps", maps, "--out", tmp_path, "--high", 0.1, "--low", 0.2
    )
    assert isinstance(result.exception, ConfigError) and "--low" in str(result.exception)


def test_random_walk_masks_for_every_image_match_the_direct_computation(setup, tmp_path):
    voc, maps, ckpt = setup["voc"], setup["maps"], setup["boundary"]
    out, walked = tmp_path / "rw", tmp_path / "rw_maps"
    args = ["random-walk", "--data", voc, "--maps", maps, "--boundary", ckpt, "--out", out]
    args += ["--device", "cpu", "--pad-to", 0, "--exp-times", 3, "--no-progress"]
    result = invoke(*args, "--background", "lpcam", "--maps-out", walked)
    assert result.exit_code == 0, result.output
    assert "4 pseudo masks written" in result.output and "mIoU" in result.output
    store = MaskStore(out)
    assert store.ids() == sorted(SIZES)
    assert (store.load("d") == 0).all()
    record = json.loads((out / "masks.json").read_text())
    assert record["complete"] and record["background"] == 0.35 and record["exp_times"] == 3
    assert MapStore(walked).is_complete()

    dataset = build_dataset("voc", voc, "train")
    model = BoundaryNet("resnet10t")
    model.load_state_dict(_weights(ckpt))
    model.eval()
    for sample_id in ("a", "b"):
        image = dataset.load_image(sample_id)
        seeds = MapStore(maps).load(sample_id)
        with torch.no_grad():
            boundary = model.boundary(normalize(to_tensor(image)), pad_to=None)
        direct = random_walk_maps(seeds, boundary, exp_times=3)
        expected = pseudo_mask(direct.hr, direct.keys, 0.35)
        assert np.array_equal(store.load(sample_id), expected)
        assert np.allclose(MapStore(walked).load(sample_id).hr, direct.hr, atol=1e-6)

    again = invoke(*args, "--background", "lpcam", "--maps-out", walked)
    assert again.exit_code == 0 and "0 pseudo masks written, 4 already there" in again.output
    other = invoke(*args, "--background", "irn")
    assert isinstance(other.exception, ConfigError) and "background" in str(other.exception)


def _weights(ckpt: Path) -> dict:
    from wsss.io.checkpoints import read_checkpoint

    tensors, _, _ = read_checkpoint(ckpt)
    return tensors


def test_random_walk_saliency_background_and_resume_after_a_lost_file(setup, tmp_path):
    voc, maps, ckpt = setup["voc"], setup["maps"], setup["boundary"]
    dataset = build_dataset("voc", voc, "train")
    saliency = MapStore(tmp_path / "sal")
    for sample_id in dataset.ids:
        gt = dataset.load_mask(sample_id)
        sal = ((gt > 0) & (gt < 255)).astype(np.float32)[None]
        saliency.save(sample_id, ClassMaps([1], sal[:, ::4, ::4], sal))
    model = BoundaryNet("resnet10t")
    model.load_state_dict(_weights(ckpt))
    out = MaskStore(tmp_path / "rw")
    kwargs = {"background": saliency, "exp_times": 2, "pad_to": None}
    run = run_random_walk(dataset, MapStore(maps), model, out, **kwargs)
    assert run.written == 4
    # With saliency = ground-truth foreground, background wherever the ground truth says so.
    for sample_id in dataset.ids:
        gt = dataset.load_mask(sample_id)
        assert (out.load(sample_id)[gt == 0] == 0).all()
    out.path("b").unlink()
    again = run_random_walk(dataset, MapStore(maps), model, out, **kwargs)
    assert (again.written, again.skipped) == (1, 3)


def test_random_walk_faults(setup, tmp_path, capsys):
    voc, maps = setup["voc"], setup["maps"]
    base = ["random-walk", "--data", voc, "--maps", maps, "--out", tmp_path / "o"]
    base += ["--device", "cpu", "--no-progress"]
    wrong = invoke(*base, "--boundary", setup["classifier"])
    assert isinstance(wrong.exception, ConfigError)
    assert "not a boundary network" in str(wrong.exception)
    bad_bg = invoke(*base, "--boundary", setup["boundary"], "--background", "dark")
    assert isinstance(bad_bg.exception, ConfigError) and "irn" in str(bad_bg.exception)
    missing = tmp_path / "few"
    missing.mkdir()
    for p in Path(maps).glob("*.npz"):
        if p.stem != "b":
            (missing / p.name).write_bytes(p.read_bytes())
    lost = invoke(*base[:4], missing, *base[5:], "--boundary", setup["boundary"], "--pad-to", 0)
    assert isinstance(lost.exception, DataError) and "b.npz" in str(lost.exception)


def test_propagate_batch_equals_one_image_at_a_time():
    from wsss.refine.random_walk import propagate
    from wsss.refine.walk import propagate_batch

    torch.manual_seed(0)
    shapes = [(2, 9, 13), (1, 12, 7), (3, 10, 10)]
    seeds = [torch.rand(s) for s in shapes]
    boundaries = [torch.rand(s[1:]) * 0.6 for s in shapes]
    together = propagate_batch(seeds, boundaries, exp_times=4)
    for s, b, t in zip(seeds, boundaries, together, strict=True):
        alone = propagate(s, b, exp_times=4)
        assert t.shape == alone.shape and torch.equal(t, alone)


def test_seed_masks_with_a_saliency_background(setup, tmp_path):
    voc, maps = setup["voc"], setup["maps"]
    dataset = build_dataset("voc", voc, "train")
    saliency = MapStore(tmp_path / "sal")
    for sample_id in dataset.ids:
        h, w = dataset.load_mask(sample_id).shape
        sal = np.linspace(0, 1, h * w, dtype=np.float32).reshape(1, h, w)
        saliency.save(sample_id, ClassMaps([1], sal[:, ::4, ::4], sal))
    out = tmp_path / "seeds"
    args = ["masks", "--data", voc, "--maps", maps, "--saliency", saliency.root, "--out", out]
    result = invoke(*args, "--saliency-threshold", 0.5)
    assert result.exit_code == 0, result.output
    seeds = MapStore(maps).load("b")
    sal = saliency.load("b").hr[0]
    expected = pseudo_mask(seeds.hr, seeds.keys, (sal < 0.5).astype(np.float32))
    assert np.array_equal(MaskStore(out).load("b"), expected)
