"""The refinement stages of a pipeline: affinity labels → boundary network → random walk."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from wsss.config.sections import RefineSection
from wsss.data.image_io import write_image, write_mask
from wsss.errors import ConfigError
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore
from wsss.models import save_model
from wsss.models.classifier import CAMClassifier
from wsss.pipeline import FunctionStage, Pipeline, RunDir
from wsss.pipeline.refine_stages import boundary_base_config, refine_stages, rw_dir
from wsss.pipeline.stages import DataSpec

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["cat", "dog"]


def _dataset(root):
    voc = root / "voc"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"i{k}" for k in range(5)]
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    (voc / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    for k, sample_id in enumerate(ids):
        image = rng.integers(0, 80, (44, 48, 3), dtype=np.uint8)
        mask = np.zeros((44, 48), np.uint8)
        if k < 4:  # i4 has no foreground label
            mask[8:34, 6 + k : 30 + k] = 1 + k % 2
        image[mask > 0] = 200
        write_image(voc / "JPEGImages" / f"{sample_id}.png", image)
        write_mask(voc / "SegmentationClass" / f"{sample_id}.png", mask)
    return voc, ids


def _fake_upstream(run: RunDir, voc, ids) -> list:
    """Stages standing in for the classifier and its maps (the maps: blurred ground truth)."""

    def train(run):
        torch.manual_seed(0)
        model = CAMClassifier("resnet10t", num_classes=2, output_stride=8)
        save_model(run.checkpoint("cam").with_suffix(""), model, {"classes": CLASSES})

    def maps(run):
        store = MapStore(run.maps_dir("cam"))
        from wsss.data.datasets import build_dataset

        dataset = build_dataset("voc", voc, "train")
        for sample_id in ids:
            gt = dataset.load_mask(sample_id)
            keys = np.flatnonzero(dataset.load_label(sample_id) > 0.5) + 1
            hr = np.zeros((len(keys), *gt.shape), np.float32)
            for j, c in enumerate(keys):
                m = (gt == c).astype(np.float32)
                for _ in range(3):  # blur: a ramp between the two affinity thresholds
                    p = np.pad(m, 1, mode="edge")
                    m = (
                        sum(
                            p[y : y + m.shape[0], x : x + m.shape[1]]
                            for y in range(3)
                            for x in range(3)
                        )
                        / 9
                    )
                hr[j] = m / m.max()
            store.save(sample_id, ClassMaps(keys, hr[:, ::4, ::4].copy(), hr))
        store.finish(len(ids))

    return [
        FunctionStage("train_cam", train, lambda r: [r.checkpoint("cam")]),
        FunctionStage("maps_cam", maps, lambda r: [r.maps_dir("cam") / "maps.json"]),
    ]


def test_refine_stages_write_results_and_skip_when_done(tmp_path):
    voc, ids = _dataset(tmp_path)
    run = RunDir(tmp_path / "run")
    data = DataSpec(voc, "train", "voc")
    base = boundary_base_config("synth-boundary", voc, "train", device="cpu")
    base.data.crop_size = 48
    base.data.resize_long = (44, 52)
    base.train.batch_size = 2
    base.train.num_workers = 0
    base.train.strategy_args = {"radius": 5}
    section = RefineSection(methods=("cam",), epochs=1, exp_times=3, pad_to=None)
    stages = _fake_upstream(run, voc, ids) + refine_stages(section, data, base, device="cpu")
    assert [s.name for s in stages[2:]] == ["affinity_cam", "train_boundary_cam", "rw_cam"]
    reports = Pipeline(stages).run(run)
    assert all(r.status == "ran" for r in reports), reports
    results = run.results()
    aff, rw = results["affinity_cam"], results["rw_cam"]
    assert 0 < aff["ignored"] < 100 and aff["thresholds"] == [0.30, 0.05]
    assert {"miou", "pixel_precision", "fg_precision", "bg_precision"} <= set(aff)
    assert rw["background"] == "irn" and rw["best"]["oracle"] and not rw["oracle"]
    assert MaskStore(rw_dir(run, "cam")).ids() == ids  # every image, i4 all background
    assert (MaskStore(rw_dir(run, "cam")).load("i4") == 0).all()
    assert MapStore(run.maps_dir("rw_cam")).is_complete()

    again = Pipeline(stages).run(run)
    assert all(r.status == "skipped" for r in again)
    # A changed walk setting reruns the walk only.
    section2 = RefineSection(methods=("cam",), epochs=1, exp_times=2, pad_to=None)
    stages2 = _fake_upstream(run, voc, ids) + refine_stages(section2, data, base, device="cpu")
    third = {r.name: r.status for r in Pipeline(stages2).run(run)}
    assert third["rw_cam"] == "ran" and third["train_boundary_cam"] == "skipped"


def test_shared_boundary_network_serves_every_method(tmp_path):
    voc, _ = _dataset(tmp_path)
    data = DataSpec(voc, "train", "voc")
    base = boundary_base_config("synth-boundary", voc, "train")
    section = RefineSection(methods=("cam", "lpcam"), boundary="shared")
    names = [s.name for s in refine_stages(section, data, base)]
    assert names == [
        "affinity_cam",
        "train_boundary_cam",
        "rw_cam",
        "affinity_lpcam",
        "rw_lpcam",
    ]
    walks = [s for s in refine_stages(section, data, base) if s.name.startswith("rw_")]
    assert [w.boundary for w in walks] == ["boundary_cam", "boundary_cam"]
    assert [w.background for w in walks] == ["irn", "lpcam"]  # auto: LPCAM's 0.35 for LPCAM


def test_refine_section_rejects_bad_values():
    with pytest.raises(ConfigError, match="twice"):
        RefineSection(methods=("cam", "cam"))
    with pytest.raises(ConfigError, match=r"refine\.background"):
        RefineSection(background="dark")
    assert RefineSection(background="0.3").background == 0.3


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path):
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_stages_wait_for_the_stage_that_makes_their_maps(tmp_path):
    voc, _ = _dataset(tmp_path)
    data = DataSpec(voc, "train", "voc")
    base = boundary_base_config("synth-boundary", voc, "train")
    section = RefineSection(methods=("lpcam_f",))
    stages = refine_stages(section, data, base, producers={"lpcam_f": "maps_lpcam"})
    requires = {s.name: s.requires for s in stages}
    assert requires["affinity_lpcam_f"] == ("maps_lpcam",)
    assert requires["rw_lpcam_f"] == ("train_boundary_lpcam_f", "maps_lpcam")
    assert requires["train_boundary_lpcam_f"] == ("train_cam", "affinity_lpcam_f")
