"""The demo end to end on a tiny benchmark, its resume, and its configuration."""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from wsss.cli import app
from wsss.config import load_config, result_params
from wsss.data.synthetic import SynthConfig
from wsss.errors import ConfigError
from wsss.maps.lpcam import PrototypeConfig
from wsss.pipeline import PipelineConfig, RunDir, demo_config, demo_pipeline

# A few dozen tiny images, one epoch, one scale: the pipeline's plumbing, not its quality.
TINY = [
    "synth.train=24",
    "synth.val=4",
    "synth.size_min=64",
    "synth.size_max=80",
    "synth.head_size=[10,20]",  # heads must fit a 64-px image (size_min // 3)
    "data.val_split=null",
    "data.crop_size=64",
    "data.resize_long=[64,80]",
    "train.batch_size=4",
    "train.epochs=1",
    "train.num_workers=0",
    "demo.scales=[1.0]",
    "demo.examples=3",
    "lpcam.k=2",
    "demo.ccam=false",  # C²AM stages: tests/test_ccam_demo.py
    "refine.workers=0",  # spawning CRF processes costs more than two dozen tiny images
    "segmentation.train.epochs=1",
    "segmentation.train.batch_size=4",
    "segmentation.train.num_workers=0",
    "segmentation.crop_size=64",
    "segmentation.resize_long=[64,80]",
    "segmentation.infer.scales=[1.0]",
]


def test_tiny_demo_end_to_end_and_resume(tmp_path, monkeypatch):
    # First run with a relative --out, the rerun with the absolute path: same run, all skipped.
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    options = ["--device", "cpu", "--no-progress", *TINY]
    result = CliRunner().invoke(app, ["demo", "--out", "run", *options])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "why: first run" in result.output

    results = json.loads((out / "results.json").read_text())
    assert {"cam", "lpcam", "lpcam_f"} <= set(results)
    skipped = ("affinity_", "rw_", "segmentation")
    seeds = {m: e for m, e in results.items() if not m.startswith(skipped)}
    for method, entry in seeds.items():
        assert entry["threshold"] == 0.3 and entry["oracle"] is False, method
        assert entry["best"]["oracle"] is True
        assert entry["best"]["miou"] >= entry["miou"] - 1e-9  # the oracle picks the best
        for key in ("miou", "fp", "fn", "precision", "recall", "head_recall", "body_recall"):
            value = entry[key]
            assert value is None or 0.0 <= value <= 100.0, (method, key, value)
        assert len(entry["sweep"]) == 16  # the default grid 0.05…0.80
    num_train = 24
    # Refinement of the CAM and LPCAM seeds: affinity labels and random-walk pseudo masks.
    for method, background in (("cam", 0.25), ("lpcam", 0.35)):
        affinity, walk = results[f"affinity_{method}"], results[f"rw_{method}"]
        assert 0.0 <= affinity["ignored"] <= 100.0 and affinity["pixel_precision"] is not None
        assert walk["threshold"] == background and walk["best"]["oracle"] is True
        assert len(list((out / "rw" / method).glob("*.png"))) == num_train
    assert len(list((out / "maps" / "cam").glob("*.npz"))) == num_train
    assert (out / "train" / "cam" / "checkpoints" / "last.safetensors").is_file()
    assert (out / "lpcam" / "prototypes.safetensors").is_file()
    # The segmentation network, trained on the LPCAM pseudo masks, scored on the 4 val images.
    segmentation = results["segmentation"]
    assert segmentation["kind"] == "segmentation" and segmentation["num_images"] == 4
    confusion = segmentation["confusion"]
    assert len(confusion) == 7 and sum(map(sum, confusion)) > 0  # 6 classes + background
    assert sorted(p.stem for p in (out / "segmentation" / "val").glob("*.png")) == sorted(
        (out / "data" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    )

    text = (out / "report.html").read_text()
    HTMLParser().feed(text)
    # threshold curves, training curves, part bars, per-class bars (seeds, affinity labels,
    # pseudo masks, segmentation), the confusion matrices of the segmentation and of the pseudo
    # masks ranking the worst train examples, the fixed and the worst examples of the train
    # split (seeds to prediction) and of the val split (predictions)
    assert text.count("data:image/png;base64,") == 13
    assert f"{results['cam']['miou']:.1f}" in text

    # config.yaml is the resolved pipeline configuration, loadable as such
    saved = load_config(out / "config.yaml", cls=PipelineConfig)
    assert saved == demo_config(TINY, device="cpu", data=out / "data")

    timings = json.loads((out / "timings.json").read_text())["stages"]
    assert {"data", "train_cam", "maps_cam", "eval_cam", "report"} <= set(timings)
    assert "wall time" in result.output and "cam" in result.output

    # Same run again, named by its absolute path: every stage is skipped, nothing is rewritten.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = CliRunner().invoke(app, ["demo", "--out", str(out), *options])
    assert again.exit_code == 0, again.output
    assert "skipped" in again.output and "why:" not in again.output
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    changed = {p.name for p in before if after.get(p) != before[p]}
    assert changed <= {"config.yaml", "run_info.json", "pipeline.log", ".lock"}

    # A changed setting reruns the stages that depend on it, and only those.
    def pending(*extra: str) -> list[str]:
        config = demo_config([*TINY, *extra], device="cpu")
        return demo_pipeline(RunDir(out), config, out / "data").pending(RunDir(out))

    assert pending() == []
    assert pending("train.device=auto", "maps.device=auto") == []  # result-neutral settings
    lpcam_stages = ["lpcam_fit", "maps_lpcam", "eval_lpcam", "eval_lpcam_f"]
    lpcam_refine = ["affinity_lpcam", "train_boundary_lpcam", "rw_lpcam"]
    segmentation = ["train_segmentation", "predict_segmentation", "eval_segmentation"]
    assert pending("lpcam.k=3") == [*lpcam_stages, *lpcam_refine, *segmentation, "report"]
    assert pending("refine.exp_times=7") == ["rw_cam", "rw_lpcam", *segmentation, "report"]
    assert pending("segmentation.infer.flip=false") == [*segmentation[1:], "report"]
    assert pending("eval.threshold=0.25") == ["eval_cam", "eval_lpcam", "eval_lpcam_f", "report"]
    assert pending("train.epochs=2")[0] == "train_cam"
    assert pending("synth.seed=1")[0] == "data"
    why = dict(
        demo_pipeline(RunDir(out), demo_config([*TINY, "lpcam.k=3"], device="cpu")).explain(
            RunDir(out)
        )
    )
    assert why["lpcam_fit"] == "parameters changed: config.k 2 → 3"
    assert why["maps_lpcam"] == "upstream stage ran again: lpcam_fit"
    log = (out / "logs" / "pipeline.log").read_text()
    assert "start train_cam: first run" in log and "skip train_cam (complete)" in log


def test_pnoc_adds_its_classifier_after_the_vanilla_one(tmp_path):
    run = RunDir(tmp_path / "run")
    config = demo_config(TINY, strategy="pnoc", lpcam=False, device="cpu")
    pipeline = demo_pipeline(run, config, tmp_path / "data")
    names = pipeline.names
    assert names[:4] == ["data", "train_cam", "maps_cam", "eval_cam"]
    assert names[4:7] == ["train_pnoc", "maps_pnoc", "eval_pnoc"]
    assert names[-1] == "report" and "lpcam_fit" not in names
    pnoc = pipeline.stages[4].config.train
    assert pnoc.strategy == "pnoc"
    assert pnoc.strategy_args["oc"] == str(run.checkpoint("cam"))
    assert run.path.is_absolute()


def test_overrides_go_to_their_sections():
    config = demo_config(
        ["synth.train=40", "lpcam.k=5", "maps.scales=[1.0, 0.5]", "train.epochs=2"],
        device="cpu",
    )
    assert config.synth.train == 40
    assert config.lpcam.k == 5
    assert config.maps.scales == (1.0, 0.5)
    assert config.train.epochs == 2 and config.train.val_every == 2  # validated once, at the end
    assert config.train.device == config.maps.device == "cpu"
    assert config.model.backbone == "resnet10t"  # from the synth-demo preset
    # the keys of earlier versions still reach their new sections
    old = demo_config(["demo.scales=[0.5]", "demo.threshold=0.2", "demo.examples=2"])
    assert (old.maps.scales, old.eval.threshold, old.report.examples) == ((0.5,), 0.2, 2)
    # the dedicated options are shortcuts onto the same fields; explicit overrides win
    short = demo_config(["demo.lpcam=true"], strategy="pnoc", lpcam=False, data="d")
    assert (short.run.strategy, short.run.lpcam, short.data.root) == ("pnoc", True, "d")


def test_the_demo_resolves_to_the_settings_it_had_before():
    # The values of the previous DemoConfig: the synth-demo classifier validated once after its
    # last epoch, default benchmark and prototypes, scale 1, threshold 0.3, 8 examples.
    config = demo_config()
    classifier = load_config("synth-demo", ["train.val_every=8", "train.device=auto"])
    assert config.classifier == classifier
    assert config.synth == SynthConfig() and config.lpcam == PrototypeConfig()
    assert config.maps.scales == (1.0,) and config.maps.device == "auto"
    assert (config.eval.threshold, config.eval.thresholds, config.report.examples) == (0.3, None, 8)
    assert (config.run.strategy, config.run.lpcam, config.run.split) == (
        "vanilla",
        True,
        "train",
    )


def test_demo_stages_and_their_parameters(tmp_path):
    run = RunDir(tmp_path / "run")
    config = demo_config(strategy="pnoc")
    stages = {s.name: s for s in demo_pipeline(run, config).stages}
    assert list(stages) == [
        *("data", "train_cam", "maps_cam", "eval_cam", "train_pnoc", "maps_pnoc", "eval_pnoc"),
        *("lpcam_fit", "maps_lpcam", "eval_lpcam", "eval_lpcam_f"),
        *("train_c2am", "train_c2am_h", "maps_c2am", "maps_c2am_h"),
        *("eval_saliency_c2am", "eval_saliency_c2am_h", "pseudo_saliency_c2am_h"),
        "eval_cam_saliency",
        *("affinity_cam", "train_boundary_cam", "rw_cam"),
        *("affinity_lpcam", "train_boundary_lpcam", "rw_lpcam"),
        *("train_segmentation", "predict_segmentation", "eval_segmentation", "report"),
    ]
    root = str(run.path / "data")
    data = {"root": root, "split": "train", "format": "voc"}
    classifier = dataclasses.replace(
        config.classifier, data=dataclasses.replace(config.data, root=root)
    )
    assert stages["train_cam"].params() == result_params(classifier)
    assert "device" not in stages["train_cam"].params()["train"]
    assert stages["maps_cam"].params() == {
        "map_method": "cam",
        "classifier": "cam",
        "scales": [1.0],
        "data": data,
    }
    assert stages["eval_lpcam_f"].params() == {"threshold": 0.3, "thresholds": None, "data": data}
    assert stages["report"].params()["examples"] == 8
    assert stages["data"].params() == {"root": root, "synth": SynthConfig().to_dict()}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("synth.nope=1", "nope"),
        ("lpcam.k=many", "lpcam.k"),
        ("maps.scales=[0]", "maps.scales"),
        ("eval.threshold=nan", "eval.threshold"),
        ("eval.threshold=1.5", "eval.threshold"),
        ("train.nope=1", "train.nope"),
        ("demo.synth=1", "demo.synth"),
        ("demo.strategy=magic", "'vanilla', 'puzzle', 'occse', 'poc', 'pnoc'"),
        ("novalue", "key=value"),
    ],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        demo_config([override])


def test_demo_options_are_shortcuts_onto_the_config(monkeypatch, tmp_path):
    import wsss.pipeline.demo

    seen = {}

    def fake_run_demo(out, config, **kwargs):
        seen["out"], seen["config"] = out, config
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(wsss.pipeline.demo, "run_demo", fake_run_demo)
    args = ["demo", "--out", str(tmp_path), "--no-lpcam", "--strategy", "pnoc", "--device", "cpu"]
    args += ["--data", "d", "--set", "maps.scales=[0.5]", "train.epochs=2"]
    CliRunner().invoke(app, args)
    config = seen["config"]
    assert (config.run.lpcam, config.run.strategy, config.data.root) == (False, "pnoc", "d")
    assert config.train.device == config.maps.device == "cpu"
    assert config.maps.scales == (0.5,) and config.train.epochs == config.train.val_every == 2


def test_unknown_strategy_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--strategy", "magic"])
    assert result.exit_code == 2  # a usage error listing the choices
    assert "'vanilla', 'puzzle', 'occse', 'poc', 'pnoc'" in result.output
