"""C²AM vs C²AM-H on the synthetic benchmark: saliency, pseudo-saliency, detector, seeds, direction.

Given the benchmark and a trained CAM classifier (the demo's ``synth-demo`` run), this script:

1. writes the CAMs of the train split (scale 1 + flip) — the C²AM-H hints and the seeds;
2. trains C²AM with ``--seeds`` seeds (direction from the border prior each time) and C²AM-H
   with hints from those CAMs (``synth-ccam`` preset; backbone from the CAM classifier);
3. writes their saliency maps of the train split (TTA ``--scales``) and scores them against the
   ground truth (binary protocol at 0.2 and the oracle sweep; P-NOC Table 6 ``priors``);
4. checks the stored direction: is the saliency mIoU at 0.2 of the oriented map above that of
   the flipped one (a wrong direction swaps objects and background)?
5. makes pseudo-saliency masks from C²AM-H (threshold 0.2 + CRF), scores them, trains the
   saliency detector on them and scores its maps;
6. scores CAM seed masks with a constant background (0.3) and with a saliency background.

One training at a time, one thread. Every number goes to ``--out`` (JSON) and is printed.

    .venv/bin/python benchmarks/saliency_synth.py --data DATA \
        --cam RUN/checkpoints/last.safetensors --work /tmp/sal \
        --out benchmarks/results/saliency_synth.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wsss.config import load_config
from wsss.data.datasets import build_dataset
from wsss.evaluate import evaluate
from wsss.evaluate.saliency_split import evaluate_saliency, evaluate_saliency_seeds
from wsss.io.atomic import atomic_write_json
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore
from wsss.maps.cam import cam_maps_batch
from wsss.maps.saliency import saliency_maps_batch
from wsss.maps.tta import as_image_tensor
from wsss.models import load_model
from wsss.refine.saliency import make_pseudo_saliency
from wsss.train.engine import Trainer, train


def _cams(dataset, checkpoint: Path, out: Path) -> Path:
    store = MapStore(out)
    if store.root.is_dir() and len(store.ids()) == len(dataset):
        return out
    store.root.mkdir(parents=True, exist_ok=True)
    model, _ = load_model(checkpoint, "cpu")
    model.eval()
    for sample_id in dataset.ids:
        classes = list(np.flatnonzero(dataset.load_label(sample_id) > 0.5))
        image = as_image_tensor(dataset.load_image(sample_id))
        store.save(sample_id, cam_maps_batch(model, [image], [classes], scales=[1.0])[0])
    return out


def _saliency(dataset, checkpoint: Path, out: Path, scales: list[float], flipped: bool = False):
    store = MapStore(out)
    store.root.mkdir(parents=True, exist_ok=True)
    model, _ = load_model(checkpoint, "cpu")
    model.eval()
    if flipped:
        model.set_direction(-int(model.direction))
    for sample_id in dataset.ids:
        image = as_image_tensor(dataset.load_image(sample_id))
        store.save(sample_id, saliency_maps_batch(model, [image], scales=scales)[0])
    return out


def _train(config_overrides: list[str], run: Path) -> tuple[Path, float]:
    """Train as ``wsss train`` does (the preset's ``data.max_samples`` applies)."""
    config = load_config("synth-ccam", config_overrides)
    start = time.perf_counter()
    checkpoint = train(config, run, progress=False)
    return checkpoint, time.perf_counter() - start


def _short(r: dict) -> dict:
    keys = ("miou", "precision", "recall", "threshold")
    out = {k: r.get(k) for k in keys}
    if "best" in r:
        out["best"] = {k: r["best"].get(k) for k in (*keys, "oracle")}
    return out


def _f(value: float | None) -> str:
    return "   —" if value is None else f"{value:5.1f}"


def summary(doc: dict) -> str:
    """The tables of docs/saliency.md, from a result document."""
    lines = [
        f"{doc['settings']['images']} train images, TTA scales {doc['settings']['scales']}",
        "",
        "saliency (binary: background vs any class; % ; fixed threshold 0.2, oracle = best)",
        f"{'maps':14} {'mIoU':>5} {'P':>5} {'R':>5} | {'oracle':>6} {'t':>4} | "
        f"{'Table6':>6} {'oracle':>6} | direction (border / interior; flipped mIoU)",
    ]

    def row(name: str, e: dict) -> str:
        s, p = e["saliency"], e.get("saliency_priors")
        text = (
            f"{name:14} {_f(s['miou'])} {_f(s['precision'])} {_f(s['recall'])} | "
            f"{_f(s['best']['miou']):>6} {s['best']['threshold']:4.2f} | "
        )
        text += f"{_f(p['miou']):>6} {_f(p['best']['miou']):>6} | " if p else f"{'':>13} | "
        d = e.get("direction")
        if d:
            text += (
                f"stored {d['value']:+d} ({d['source']}), detected {d['detected']:+d} "
                f"({d['border']:.3f} / {d['interior']:.3f}; flipped {_f(e['flipped_miou'])}) "
                f"{'right' if e['direction_right'] else 'WRONG'}"
            )
        return text

    for name, entry in doc["runs"].items():
        lines.append(row(name, entry))
    pseudo = doc["pseudo_saliency"]
    lines.append(
        f"{'pseudo (c2am_h)':14} {_f(pseudo['miou'])} {_f(pseudo['precision'])} "
        f"{_f(pseudo['recall'])} |  (masks: threshold 0.2 + CRF)"
    )
    if "detector" in doc:
        lines.append(row("detector", doc["detector"]))
    lines += [
        "",
        "CAM seed masks (train split, %)",
        f"{'background':28} {'mIoU':>5} {'P':>5} {'R':>5}",
    ]
    for name, e in doc["seeds"].items():
        lines.append(f"{name:28} {_f(e['miou'])} {_f(e['precision'])} {_f(e['recall'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summarize", type=Path, default=None, help="print a result file")
    if parser.parse_known_args(argv)[0].summarize is not None:
        print(summary(json.loads(parser.parse_known_args(argv)[0].summarize.read_text())))
        return 0
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cam", type=Path, required=True, help="CAM classifier checkpoint")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scales", default="1.0", help="TTA scales of the saliency maps")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--skip-detector", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scales = [float(s) for s in args.scales.split(",")]
    work = args.work
    dataset = build_dataset("voc", args.data, "train")
    base = [f"data.root={args.data}", f"model.weights={args.cam}", *args.sets]
    doc: dict = {"settings": {"scales": scales, "overrides": base, "images": len(dataset)}}

    cams = _cams(dataset, args.cam, work / "cams")
    doc["cam_seeds"] = _short(evaluate(dataset, maps_dir=cams, threshold=0.3, progress=False))

    runs = {f"c2am_seed{s}": [f"train.seed={s}"] for s in range(args.seeds)}
    runs["c2am_h"] = ["train.seed=0", f"train.strategy_args.hints={cams}"]
    doc["runs"] = {}
    for name, extra in runs.items():
        checkpoint, seconds = _train([*base, *extra], work / name)
        meta = json.loads(checkpoint.with_suffix(".json").read_text())
        sal = _saliency(dataset, checkpoint, work / f"{name}_sal", scales)
        flipped = _saliency(dataset, checkpoint, work / f"{name}_flipped", scales, flipped=True)
        binary = evaluate_saliency(dataset, sal, progress=False)
        other = evaluate_saliency(dataset, flipped, progress=False)
        priors = evaluate_saliency(dataset, sal, "priors", progress=False)
        entry = {
            "train_seconds": seconds,
            "direction": meta["direction"],
            "saliency": _short(binary),
            "saliency_priors": _short(priors),
            "flipped_miou": other["miou"],
            "direction_right": binary["miou"] > other["miou"],
        }
        doc["runs"][name] = entry
        print(name, json.dumps(entry), flush=True)

    sal_h = work / "c2am_h_sal"
    pseudo = MaskStore(work / "pseudo")
    start = time.perf_counter()
    make_pseudo_saliency(dataset, MapStore(sal_h), pseudo, workers=0)
    doc["pseudo_seconds"] = time.perf_counter() - start
    pseudo_maps = MapStore(work / "pseudo_maps")
    pseudo_maps.root.mkdir(parents=True, exist_ok=True)
    for sample_id in dataset.ids:  # the masks as 0/1 maps, to score them like maps
        m = (pseudo.load(sample_id) == 255).astype(np.float32)[None]
        pseudo_maps.save(sample_id, ClassMaps([0], m[:, ::4, ::4], m))
    doc["pseudo_saliency"] = _short(evaluate_saliency(dataset, pseudo_maps.root, progress=False))
    print("pseudo", json.dumps(doc["pseudo_saliency"]), flush=True)

    if not args.skip_detector:
        config = load_config(
            "synth-saliency",
            [*base, f"train.strategy_args.masks={pseudo.root}"],
        )
        start = time.perf_counter()
        trainer = Trainer(config, work / "detector", dataset, progress=False)
        trainer.fit()
        seconds = time.perf_counter() - start
        det = _saliency(dataset, trainer.state_dir / "last.safetensors", work / "det_sal", scales)
        doc["detector"] = {
            "train_seconds": seconds,
            "saliency": _short(evaluate_saliency(dataset, det, progress=False)),
            "saliency_priors": _short(evaluate_saliency(dataset, det, "priors", progress=False)),
        }
        print("detector", json.dumps(doc["detector"]), flush=True)

    seeds = {"cam_constant_0.3": doc["cam_seeds"]}
    sources = {"c2am_seed0": work / "c2am_seed0_sal", "c2am_h": sal_h}
    if not args.skip_detector:
        sources["detector"] = work / "det_sal"
    for name, folder in sources.items():
        soft = evaluate_saliency_seeds(dataset, cams, folder, progress=False)
        hard = evaluate_saliency_seeds(
            dataset, cams, folder, saliency_threshold=0.2, progress=False
        )
        seeds[f"cam_bg_{name}"] = _short(soft)
        seeds[f"cam_bg_{name}_t0.2"] = _short(hard)
    doc["seeds"] = seeds
    print("seeds", json.dumps(seeds), flush=True)
    print(summary(doc))
    if args.out:
        atomic_write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
