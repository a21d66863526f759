"""`wsss run PRESET`, `wsss status RUN`, `wsss report RUN` and the pipeline presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tiny_settings import TINY_BENCHMARK, TINY_SEGMENTATION
from wsss.cli import app
from wsss.errors import ConfigError
from wsss.pipeline import RunDir
from wsss.pipeline.config import pipeline_presets
from wsss.pipeline.graph import build_pipeline
from wsss.pipeline.refine_stages import AffinityStage, RandomWalkStage
from wsss.pipeline.runner import run_config, stored_pipeline
from wsss.pipeline.segmentation import SegmentationStage
from wsss.pipeline.stages import EvalStage, MapsStage, TrainStage

pytestmark = pytest.mark.usefixtures("one_thread")

# The demo's pipeline shrunk to a few dozen tiny images and one epoch per network.
TINY = [
    *TINY_BENCHMARK,
    *TINY_SEGMENTATION,
    "synth.train=16",
    "synth.val=4",
    "train.batch_size=4",
    "report.examples=2",
    "lpcam.k=2",
    "run.ccam=false",
    "refine.methods=[cam]",
    "run.pseudo_masks=cam",
    "refine.workers=0",
    "segmentation.train.batch_size=4",
    "segmentation.infer.scales=[1.0]",
]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _stages(preset: str, *overrides: str, root: str = "/data/VOC2012") -> dict:
    config = run_config(preset, list(overrides), {"data.root": root})
    run = RunDir("/tmp/wsss-graph-test")
    return {s.name: s for s in build_pipeline(run, config).stages}


def test_the_issue_presets_are_shipped():
    assert {"synth-full", "voc12-pnoc", "voc12-lpcam-irn", "coco14-lpcam-irn"} <= set(
        pipeline_presets()
    )


def test_voc12_pnoc_is_the_p_noc_recipe():
    stages = _stages("voc12-pnoc")
    assert list(stages) == [
        *("train_cam", "maps_cam", "eval_cam", "train_pnoc", "maps_pnoc", "eval_pnoc"),
        *("train_c2am", "train_c2am_h", "maps_c2am", "maps_c2am_h"),
        *("eval_saliency_c2am", "eval_saliency_c2am_h", "eval_pnoc_saliency"),
        *("affinity_pnoc", "train_boundary_pnoc", "rw_pnoc"),
        *("train_segmentation", "predict_segmentation", "eval_segmentation", "report"),
    ]
    run = RunDir("/tmp/wsss-graph-test")
    oc, pnoc = stages["train_cam"].config, stages["train_pnoc"].config
    assert (oc.train.strategy, oc.model.backbone) == ("vanilla", "resnest269e")
    assert (oc.data.split, oc.train.batch_size, oc.train.accumulate) == ("train_aug", 16, 2)
    # P-NOC's NOC starts from the OC: same backbone; the batch of the paper's RS269 runs
    assert pnoc.model == oc.model and (pnoc.train.batch_size, pnoc.train.accumulate) == (16, 2)
    # the strategy's own preset (label smoothing, colour jitter, k_noc ...), the OC is `cam`
    assert (pnoc.train.strategy, pnoc.train.label_smoothing) == ("pnoc", 0.1)
    assert pnoc.train.augment.color_jitter and pnoc.train.strategy_args["k_noc"] == 1
    assert pnoc.train.strategy_args["oc"] == str(run.checkpoint("cam"))
    assert pnoc.data.root == "/data/VOC2012" and pnoc.data.split == "train_aug"
    assert stages["train_pnoc"].requires == ("train_cam",)
    # maps on train_aug, scored on train
    assert isinstance(stages["maps_pnoc"], MapsStage)
    assert stages["maps_pnoc"].data.split == "train_aug"
    assert stages["maps_pnoc"].scales == (1.0, 0.5, 1.5, 2.0)
    assert isinstance(stages["eval_pnoc"], EvalStage) and stages["eval_pnoc"].data.split == "train"
    # C²AM from ImageNet weights (voc12-ccam), C²AM-H hinted by the P-NOC CAMs
    c2am_h = stages["train_c2am_h"].config
    assert c2am_h.train.task == "ccam" and c2am_h.model.weights is None
    assert c2am_h.model.pretrained and c2am_h.data.crop_size == 448
    assert (c2am_h.model.backbone, c2am_h.train.batch_size) == ("resnest269e", 32)
    assert c2am_h.train.strategy_args["hints"] == str(run.maps_dir("pnoc"))
    assert "maps_pnoc" in stages["train_c2am_h"].requires
    # saliency-aware affinity labels; the walk's background is P-NOC's constant 0.30
    affinity, walk = stages["affinity_pnoc"], stages["rw_pnoc"]
    assert isinstance(affinity, AffinityStage) and affinity.saliency == "maps/c2am_h"
    assert "maps_c2am_h" in affinity.requires and "maps_c2am_h" in walk.requires
    assert isinstance(walk, RandomWalkStage) and walk.saliency is None
    assert walk.background == "pnoc" and walk.crf is True
    assert walk.eval_data.split == "train" and walk.data.split == "train_aug"
    # DeepLabV3+ on the P-NOC pseudo masks, scored on val
    seg = stages["train_segmentation"].config
    assert seg.train.strategy_args["architecture"] == "deeplabv3plus"
    assert seg.train.strategy_args["masks"] == str(Path("/tmp/wsss-graph-test/rw/pnoc").resolve())
    assert (seg.train.optimizer, seg.train.nesterov, seg.train.lr) == ("sgd", True, 0.007)
    assert stages["train_segmentation"].requires == ("rw_pnoc",)
    assert isinstance(stages["predict_segmentation"], SegmentationStage)
    assert stages["predict_segmentation"].data.split == "val"


def test_voc12_lpcam_irn_is_the_lpcam_recipe():
    stages = _stages("voc12-lpcam-irn")
    assert "train_pnoc" not in stages and "train_c2am" not in stages
    assert [n for n in stages if n.startswith(("affinity_", "rw_"))] == [
        "affinity_lpcam",
        "rw_lpcam",
    ]
    assert stages["affinity_lpcam"].thresholds == "lpcam"
    assert stages["rw_lpcam"].background == "lpcam" and stages["rw_lpcam"].crf is False
    seg = stages["train_segmentation"].config
    assert seg.train.strategy_args["architecture"] == "deeplabv2"
    assert (seg.model.backbone, seg.model.output_stride) == ("resnet101", 8)
    assert stages["predict_segmentation"].infer.crf is True
    coco = _stages("coco14-lpcam-irn", root="/data/coco")
    cam = coco["train_cam"].config
    assert (cam.data.format, cam.data.split, cam.train.lr) == ("coco", "train", 0.05)
    assert coco["eval_cam"].data.split == "train" and coco["eval_segmentation"].data.split == "val"
    assert coco["train_segmentation"].config.train.strategy_args["architecture"] == "deeplabv2"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["refine.methods=[magic]"], "refine.methods: no run makes seeds"),
        (["run.pseudo_masks=pnoc"], "run.pseudo_masks='pnoc' is not among refine.methods"),
        (["refine.methods=[]"], "is not among refine.methods []"),
        (["refine.methods=[]", "run.pseudo_masks=null"], "set refine.methods"),
        (["saliency.hints=lpcam_f", "run.lpcam=false"], "saliency.hints: the run makes no maps"),
        (["run.split=val"], "run.ccam needs run.split"),
        (["run.ccam=false", "refine.saliency=maps/c2am_h"], "refine.saliency: the run makes"),
        (["run.strategy=magic"], "run.strategy"),
        (["train.strategy=pnoc"], "set run.strategy=pnoc"),
    ],
)
def test_settings_that_do_not_fit_together_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        _stages("synth-full", *overrides)


def test_a_given_dataset_needs_its_folder(tmp_path):
    result = CliRunner().invoke(app, ["run", "voc12-lpcam-irn", "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, ConfigError)
    assert "data.root is not set" in str(result.exception) and "--data" in str(result.exception)
    unknown = CliRunner().invoke(app, ["run", "no-such-preset", "--out", str(tmp_path / "r")])
    assert "synth-full" in str(unknown.exception)  # lists the presets


def test_run_status_report_end_to_end(tmp_path):
    out = tmp_path / "run"
    args = ["run", "synth-full", "--out", str(out), "--device", "cpu", "--no-progress"]
    plan = CliRunner().invoke(app, [*args, "--dry-run", *_sets(TINY)])
    assert plan.exit_code == 0, plan.output
    assert "train_segmentation: first run" in plan.output and not out.exists()

    result = CliRunner().invoke(app, [*args, *_sets(TINY)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads((out / "results.json").read_text())
    assert {"cam", "lpcam", "lpcam_f", "affinity_cam", "rw_cam", "segmentation"} <= set(results)
    assert results["segmentation"]["num_images"] == 4
    saved = (out / "config.yaml").read_text()
    assert "preset: synth-full" in saved and "segmentation: true" in saved

    status = CliRunner().invoke(app, ["status", str(out)])
    assert status.exit_code == 0, status.output
    names = [s.name for s in stored_pipeline(RunDir(out))[0].stages]
    assert f"{len(names)} done" in status.output and "resume" not in status.output

    # A setting changed by hand in config.yaml: its stage is stale and says why; later ones
    # follow; a missing record is pending.
    (out / "config.yaml").write_text(saved.replace("  k: 2\n", "  k: 3\n"))
    RunDir(out).stages_dir.joinpath("report.json").unlink()
    status = CliRunner().invoke(app, ["status", str(out)], terminal_width=200)
    lines = {line.split()[0]: line for line in status.output.splitlines() if line.strip()}
    assert "stale" in lines["lpcam_fit"] and "k 2 → 3" in lines["lpcam_fit"]
    assert "stale" in lines["eval_lpcam"] and "upstream stage ran again" in lines["eval_lpcam"]
    assert "done" in lines["rw_cam"]  # the CAM's branch does not read the prototypes
    assert "pending" in lines["report"]
    # Started from Python (here: pytest), the run resumes from the settings it recorded; that
    # command would rerun exactly the stages the status calls stale or pending.
    resume = f"wsss run {out / 'config.yaml'} --out {out}"
    assert f"resume: {resume}" in status.output
    plan = CliRunner().invoke(app, [*resume.split()[1:], "--dry-run"], terminal_width=200)
    planned = [line.split(":")[0] for line in plan.output.splitlines() if ": " in line]
    not_done = [name for name, line in lines.items() if "stale" in line or "pending" in line]
    assert planned == [n for n in names if n in not_done] and len(planned) == 5

    # The report is rebuilt from the files alone.
    (out / "report.html").unlink()
    report = CliRunner().invoke(app, ["report", str(out), "--examples", "1"])
    assert report.exit_code == 0, report.output
    html = (out / "report.html").read_text()
    assert "Segmentation" in html and f"{results['segmentation']['miou']:.1f}" in html


def test_maps_on_one_split_scored_on_a_subset(tmp_path):
    # VOC's papers compute on train_aug and score on train: here maps on train, scored on the
    # first half of its images, listed as split "half".
    from wsss.data.synthetic import SynthConfig, generate_synthetic

    root = tmp_path / "data"
    generate_synthetic(
        root,
        SynthConfig(train=16, val=0, size_min=64, size_max=72, head_size=(10, 20)),
        progress=False,
    )
    sets = root / "ImageSets" / "Segmentation"
    ids = (sets / "train.txt").read_text().split()
    (sets / "half.txt").write_text("\n".join(ids[: len(ids) // 2]) + "\n")
    overrides = [
        *TINY,
        "run.synthetic=false",
        "run.lpcam=false",
        "run.segmentation=false",
        "run.eval_split=half",
        "data.format=voc",
    ]
    config = run_config("synth-full", overrides, {"data.root": str(root), "train.device": "cpu"})
    run = RunDir(tmp_path / "run")
    pipeline = build_pipeline(run, config, progress=False)
    assert "data" not in pipeline.names and isinstance(pipeline.stages[0], TrainStage)
    pipeline.run(run)
    results = run.results()
    assert results["cam"]["num_images"] == len(ids) // 2
    assert results["rw_cam"]["num_images"] == len(ids) // 2
    assert len(list(run.maps_dir("cam").glob("*.npz"))) == len(ids)  # computed on all
    assert len(list((run.path / "rw" / "cam").glob("*.png"))) == len(ids)


def test_status_and_report_refuse_a_folder_that_is_not_a_run(tmp_path):
    for command in ("status", "report"):
        result = CliRunner().invoke(app, [command, str(tmp_path)])
        assert isinstance(result.exception, ConfigError)
        assert "no config.yaml" in str(result.exception)
        missing = CliRunner().invoke(app, [command, str(tmp_path / "nope")])
        assert "no such run directory" in str(missing.exception)


@pytest.mark.parametrize(
    ("argv", "runs", "expected"),
    [
        (["/venv/bin/wsss", "demo", "--out", "r x"], None, "wsss demo --out 'r x'"),
        (["/src/wsss/__main__.py", "run", "synth-full"], None, "wsss run synth-full"),
        (["/venv/bin/pytest", "-q"], None, "wsss run {run}/config.yaml --out {run}"),
        (
            ["/venv/bin/python"],
            {"cam": {}, "occse": {}},
            "wsss demo --compare --out {run} --runs cam,occse",
        ),
    ],
)
def test_the_resume_line_is_the_command_that_made_the_run(tmp_path, argv, runs, expected):
    from wsss.cli.run_cmds import _resume_line

    run = RunDir(tmp_path / "run")
    run.write_config({"runs": runs} if runs else {}, {}, extra={"command": argv})
    assert _resume_line(run) == expected.format(run=run.path)
