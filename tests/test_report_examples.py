"""The example grids of a run's report, built from the files of a (fake) full pipeline run."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from report_sample import SampleDataset
from wsss.data.base import IGNORE_INDEX, SegmentationDataset
from wsss.data.datasets import build_dataset
from wsss.errors import ConfigError
from wsss.io.maps import ClassMaps, save_class_maps
from wsss.io.masks import MaskStore, save_mask_png
from wsss.maps.segment import segment_split
from wsss.models import create_model, save_model
from wsss.pipeline.refine_stages import affinity_dir, rw_dir
from wsss.pipeline.report_examples import report_files_dir, run_example_sets
from wsss.pipeline.rundir import RunDir
from wsss.pipeline.segmentation import SegmentationStage
from wsss.pipeline.stages import write_run_report
from wsss.report import ExampleColumn, ExampleSet, html, render_html
from wsss.report.examples import choose_examples, example_grid, image_iou, usable_ids

pytestmark = pytest.mark.usefixtures("one_thread")

BAD_TRAIN = (3, 6)  # train images whose pseudo masks miss every object
BAD_VAL = 1  # the val image whose prediction misses every object
INFER = {"scales": [1.0], "flip": True, "crf": False, "amp": False, "device": "cpu"}


class Subset(SegmentationDataset):
    def __init__(self, dataset: SegmentationDataset, ids: list[str]) -> None:
        self.parent, self.ids = dataset, ids
        self.root, self.split, self.classes = dataset.root, dataset.split, dataset.classes

    def load_image(self, sample_id):
        return self.parent.load_image(sample_id)

    def load_label(self, sample_id):
        return self.parent.load_label(sample_id)


def _maps(mask: np.ndarray, keys: np.ndarray, shift: int) -> ClassMaps:
    hr = np.stack([np.roll(mask == k, shift, axis=1) for k in keys]).astype(np.float32)
    return ClassMaps(keys, hr, hr)


def _clean(mask: np.ndarray) -> np.ndarray:
    return np.where(mask == IGNORE_INDEX, 0, mask).astype(np.uint8)


def make_run(root: Path, synth: Path, *, seeds=("cam", "pnoc", "lpcam", "lpcam_f"),
             saliency=True, refine=True, segmentation=True) -> RunDir:  # fmt: skip
    """A run folder holding the files of every stage the flags ask for."""
    run = RunDir(root)
    train = build_dataset("voc", synth, "train")
    results: dict = {}
    for shift, method in enumerate(seeds):
        results[method] = {"split": "train", "miou": 50.0}
        for sample_id in train.ids:
            keys = np.flatnonzero(train.load_label(sample_id)) + 1
            maps = _maps(train.load_mask(sample_id), keys, shift)
            save_class_maps(run.maps_dir(method) / f"{sample_id}.npz", maps)
    if "pnoc" in seeds:
        run.train_dir("pnoc").mkdir(parents=True)  # a trained classifier: the strategy's
    if saliency:
        results["saliency_c2am_h"] = {"kind": "saliency", "miou": 60.0, "maps": "c2am_h"}
        for sample_id in train.ids:
            sal = (_clean(train.load_mask(sample_id)) > 0).astype(np.float32)[None]
            save_class_maps(run.maps_dir("c2am_h") / f"{sample_id}.npz", ClassMaps([1], sal, sal))
    if refine:
        for method in ("cam", "lpcam"):
            results[f"affinity_{method}"] = {"miou": 55.0}
            results[f"rw_{method}"] = {"miou": 65.0}
            for i, sample_id in enumerate(train.ids):
                mask = train.load_mask(sample_id)
                save_mask_png(affinity_dir(run, method) / f"{sample_id}.png", mask)
                pseudo = _clean(mask)
                if method == "lpcam" and i in BAD_TRAIN:
                    pseudo[:] = 0
                save_mask_png(rw_dir(run, method) / f"{sample_id}.png", pseudo)
    config: dict = {"data": {"format": "voc", "split": "train"}}
    if segmentation:
        val = build_dataset("voc", synth, "val")
        classes = len(train.classes) + 1
        torch_seed(0)
        model = create_model("deeplabv3plus", backbone="resnet10t", num_classes=classes,
                             decoder_channels=16, pretrained=False)  # fmt: skip
        stem = run.checkpoint("segmentation").with_suffix("")
        save_model(stem, model, {"classes": train.classes})
        masks = {"train": {"strategy_args": {"masks": str(rw_dir(run, "lpcam"))}}}
        (run.train_dir("segmentation") / "config.yaml").write_text(yaml.safe_dump(masks))
        for i, sample_id in enumerate(val.ids):
            pred = _clean(val.load_mask(sample_id))
            if i == BAD_VAL:
                pred[:] = 0
            save_mask_png(SegmentationStage.folder(run, "val") / f"{sample_id}.png", pred)
        results["segmentation"] = {"kind": "segmentation", "split": "val", "miou": 70.0}
        config["segmentation"] = {"split": "val", "infer": INFER}
    run.update_results(results)
    run.write_config(config)
    return run


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


@pytest.fixture(scope="module")
def full_run(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return make_run(tmp_path_factory.mktemp("full") / "run", synth)


def _titles(example_set: ExampleSet) -> list[tuple[str, str, bool]]:
    return [(c.title, c.kind, c.required) for c in example_set.columns]


def test_a_full_run_shows_every_stage_then_the_val_predictions(full_run: RunDir, synth: Path):
    train = build_dataset("voc", synth, "train")
    sets = run_example_sets(full_run, train, examples=4)
    assert [s.title for s in sets] == ["train split", "val split: segmentation"]
    first, second = sets
    assert _titles(first) == [
        ("cam heat map", "heat", True),
        ("cam seed", "seed", True),
        ("pnoc heat map", "heat", True),  # the run's trained classifier before LPCAM
        ("pnoc seed", "seed", True),
        ("lpcam heat map", "heat", True),
        ("lpcam seed", "seed", True),  # lpcam_f left out: three methods at most
        ("saliency (c2am_h)", "saliency", True),
        ("affinity labels (lpcam)", "mask", True),  # those of the pseudo masks' method
        ("pseudo mask (lpcam)", "mask", True),  # the segmentation network's training masks
        ("prediction", "mask", False),
    ]
    assert first.columns[-1].folder == report_files_dir(full_run) / "segmentation" / "train"
    assert first.ranking_column().title == "pseudo mask (lpcam)"
    assert (first.fixed, first.worst) == (2, 2)
    assert _titles(second) == [("prediction", "mask", True)]
    assert (
        second.dataset.split == "val"
        and Path(second.columns[0].folder).parent.name == "segmentation"
    )
    assert first.columns[1].threshold == 0.3


def test_the_worst_images_are_the_lowest_iou_ones(full_run: RunDir, synth: Path):
    train = build_dataset("voc", synth, "train")
    first, second = run_example_sets(full_run, train, examples=4)
    choice = choose_examples(first)
    assert choice.fixed == [train.ids[0], train.ids[-1]]  # spread over the split
    assert set(choice.worst) == {train.ids[i] for i in BAD_TRAIN}
    ious = {i: image_iou(train.load_mask(i), MaskStore(rw_dir(full_run, "lpcam")).load(i))
            for i in train.ids}  # fmt: skip
    assert ious[choice.worst[0]] <= ious[choice.worst[1]] < 100.0
    assert all(ious[i] == 100.0 for i in train.ids if i not in choice.worst)
    val = second.dataset
    val_choice = choose_examples(second)
    assert val_choice.fixed == [val.ids[0], val.ids[-1]]
    assert val_choice.worst[0] == val.ids[BAD_VAL]
    assert val_choice.scores[val.ids[BAD_VAL]] < 100.0


def test_predictions_are_the_networks_on_the_chosen_images_only(
    full_run: RunDir, synth: Path, tmp_path: Path
):
    train = build_dataset("voc", synth, "train")
    first = run_example_sets(full_run, train, examples=4)[0]
    choice = choose_examples(first)
    chosen = [*choice.fixed, *choice.worst]
    store = MaskStore(first.columns[-1].folder)
    assert sorted(store.ids()) == sorted(chosen)
    from wsss.models import load_model

    model, _ = load_model(full_run.checkpoint("segmentation"))
    expected = MaskStore(tmp_path / "expected")
    segment_split(model, Subset(train, chosen), expected.root, scales=INFER["scales"],
                  flip=INFER["flip"], device="cpu", progress=False)  # fmt: skip
    for sample_id in chosen:
        np.testing.assert_array_equal(store.load(sample_id), expected.load(sample_id))


def test_predictions_are_kept_until_the_checkpoint_changes(synth: Path, tmp_path: Path):
    run = make_run(tmp_path / "run", synth, saliency=False)
    train = build_dataset("voc", synth, "train")
    column = run_example_sets(run, train, examples=4)[0].columns[-1]
    sample_id = choose_examples(run_example_sets(run, train, examples=4)[0]).fixed[0]
    made = MaskStore(column.folder).load(sample_id)
    marked = np.full_like(made, 255)
    save_mask_png(column.path(sample_id), marked)
    run_example_sets(run, train, examples=4)
    np.testing.assert_array_equal(MaskStore(column.folder).load(sample_id), marked)  # kept
    later = column.path(sample_id).stat().st_mtime + 10
    os.utime(run.checkpoint("segmentation"), (later, later))  # a retrained network
    run_example_sets(run, train, examples=4)
    np.testing.assert_array_equal(MaskStore(column.folder).load(sample_id), made)


@pytest.mark.parametrize(
    ("flags", "expected", "ranked_by"),
    [
        (  # the demo without refinement, saliency or segmentation
            {"seeds": ("cam",), "saliency": False, "refine": False, "segmentation": False},
            [["cam heat map", "cam seed"]],
            "cam seed",
        ),
        (  # a segmentation network trained on ground truth: no pseudo masks
            {"seeds": ("cam",), "saliency": False, "refine": False},
            [["cam heat map", "cam seed", "prediction"], ["prediction"]],
            "cam seed",  # not the prediction made for the chosen images
        ),
        (
            {"seeds": ("cam", "lpcam"), "segmentation": False},
            [
                [
                    "cam heat map",
                    "cam seed",
                    "lpcam heat map",
                    "lpcam seed",
                    "saliency (c2am_h)",
                    "affinity labels (cam)",  # without the training masks: the first method's
                    "pseudo mask (cam)",
                ]
            ],
            "pseudo mask (cam)",
        ),
    ],
)
def test_partial_runs_leave_out_what_they_lack(synth, tmp_path, flags, expected, ranked_by):
    run = make_run(tmp_path / "run", synth, **flags)
    train = build_dataset("voc", synth, "train")
    sets = run_example_sets(run, train, examples=4)
    assert [[c.title for c in s.columns] for s in sets] == expected
    assert sets[0].ranking_column().title == ranked_by
    assert run_example_sets(run, None) == []
    assert run_example_sets(run, train, examples=0) == []


def test_the_report_of_a_full_run_draws_both_sets(full_run: RunDir, synth: Path):
    train = build_dataset("voc", synth, "train")
    text = write_run_report(full_run, train, examples=4).read_text()
    headings = re.findall(r"<h3>([^<]*)</h3>", text)
    assert "train split" in headings and "val split: segmentation" in headings
    assert "pseudo mask (lpcam)" in text and "ignore (255)" in text  # ranking column, legend
    # the confusion matrices of the ranking columns: the train pseudo masks and the val
    # predictions (results.json holds no matrix of the latter here)
    assert text.count('alt="confusion matrix of') == 2
    assert text.count('alt="train split: examples"') == 1
    assert text.count('alt="train split: worst examples"') == 1
    assert text.count('alt="val split: segmentation: worst examples"') == 1
    assert text.count("data:image/png;base64,") == 6  # four grids, two matrices


def test_optional_columns_neither_restrict_nor_rank(full_run: RunDir, synth: Path):
    train = build_dataset("voc", synth, "train")
    first = run_example_sets(full_run, train, examples=4)[0]
    optional = first.columns[-1]
    assert len(usable_ids(train.ids, first.columns)) == len(train.ids)
    assert usable_ids(train.ids, [ExampleColumn("p", optional.folder, "mask")]) != train.ids
    with pytest.raises(ConfigError, match="optional"):
        ExampleSet(train, first.columns, rank_by="prediction").ranking_column()
    only = ExampleSet(train, [optional])
    assert only.ranking_column() is None


def test_a_val_confusion_equal_to_the_results_one_is_drawn_once(full_run: RunDir, synth: Path):
    val = build_dataset("voc", synth, "val")
    column = ExampleColumn("prediction", SegmentationStage.folder(full_run, "val"), "mask")
    example_set = ExampleSet(val, [column], "val", 2, 2)
    counts = choose_examples(example_set).confusion
    n = counts.shape[0]
    results = {"segmentation": {"kind": "segmentation", "confusion": counts[:, :n].tolist()}}
    matrices = 'alt="confusion matrix of'
    assert render_html(results, examples=[example_set]).count(matrices) == 1
    other = counts[:, :n].copy()
    other[0, 0] += 1
    results = {"segmentation": {"kind": "segmentation", "confusion": other.tolist()}}
    assert render_html(results, examples=[example_set]).count(matrices) == 2


def test_wide_grids_fit_the_page_and_their_images_never_touch(
    full_run: RunDir, synth: Path, tmp_path: Path
):
    train = build_dataset("voc", synth, "train")
    columns = run_example_sets(full_run, train, examples=4)[0].columns
    fig, _ = example_grid(train, train.ids[:2], columns)  # twelve columns
    assert fig.get_size_inches()[0] <= 12.0  # inches at 100 dpi: the page's content width
    # 48×64 images with three-line row labels: tight_layout alone leaves no gap between them
    val = SampleDataset("val", 24, seed=1)
    for sample_id in val.ids:
        save_mask_png(tmp_path / f"{sample_id}.png", _clean(val.load_mask(sample_id)))
    ids = ["val_004", "val_007", "val_013", "val_016"]
    notes = {i: "IoU 25.0" for i in ids}
    fig, _ = example_grid(val, ids, [ExampleColumn("prediction", tmp_path)], notes)
    fig.canvas.draw()
    row = [ax.get_window_extent() for ax in fig.axes[:3]]  # drawn boxes
    assert min(b.x0 - a.x1 for a, b in itertools.pairwise(row)) >= 2  # pixels between images
    assert html.GRID_MIN_SCALE >= 0.8  # at 80 % of its size a grid scrolls instead


def test_the_eval_stages_matrix_is_not_drawn_twice(full_run: RunDir, synth: Path, tmp_path: Path):
    from wsss.pipeline.segmentation import _confusion

    val = build_dataset("voc", synth, "val")
    run = RunDir(tmp_path / "run")
    run.update_results(full_run.results())
    entry = {**full_run.results()["segmentation"]}
    entry["confusion"] = _confusion(val, SegmentationStage.folder(full_run, "val")).tolist()
    (run.path / "segmentation").symlink_to(full_run.path / "segmentation")
    run.update_results({"segmentation": entry})
    text = write_run_report(run, val, examples=4).read_text()
    assert "val split: segmentation" in text
    assert re.findall(r'alt="confusion matrix of ([^"]*)"', text) == ["segmentation"]
