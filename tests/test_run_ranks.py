"""`torchrun -m wsss run` on 2 gloo ranks: every inference stage sharded, results of one process.

The run trains its networks with DDP on both ranks (training equivalence under DDP is
tests/test_train_ddp.py's and tests/test_pipeline_ranks.py's: networks with batch statistics
cannot give one process's weights from two). Here the trained networks of the two-rank run are
kept, and every other stage (maps, LPCAM, saliency maps, affinity labels, random walk,
segmentation inference, evaluations) is run again in one process: the files and scores must be
the same.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny_settings import TINY_BENCHMARK, TINY_SEGMENTATION
from wsss.pipeline import RunDir
from wsss.pipeline.runner import stored_pipeline
from wsss.pipeline.stages import PrototypeStage, SynthStage, TrainStage

TINY = [
    *TINY_BENCHMARK,
    *TINY_SEGMENTATION,
    "synth.train=40",  # the boundary network takes batches of 16 per process
    "synth.val=4",
    "train.batch_size=2",
    "maps.scales=[1.0,0.5]",
    "report.examples=2",
    "lpcam.k=2",
    "refine.methods=[cam,lpcam]",
    "refine.workers=0",
    "saliency.train=[train.batch_size=4, data.crop_size=64, 'data.resize_long=[64,72]', "
    "train.strategy_args.direction_images=8]",
    "segmentation.train.batch_size=2",
    "segmentation.infer.scales=[1.0,0.5]",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plain(entry: dict, run: Path) -> dict:
    """A results entry with the run's own folder written ``RUN`` (each run has its own)."""
    return json.loads(json.dumps(entry, sort_keys=True).replace(str(run), "RUN"))


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_torchrun_wsss_run_shards_every_inference_stage(tmp_path: Path) -> None:
    two = tmp_path / "two"
    args = [f"--set={item}" for item in TINY]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "wsss",
        "run",
        "synth-full",
        "--out",
        str(two),
        "--data",
        str(tmp_path / "data"),
        "--device",
        "cpu",
        "--no-progress",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    info = json.loads((two / "run_info.json").read_text())
    assert info["world_size"] == 2
    pipeline, _ = stored_pipeline(RunDir(two))
    log = (two / "logs" / "pipeline.log").read_text()
    assert all(f"done {name}" in log for name in pipeline.names)  # every stage, once
    results_two = json.loads((two / "results.json").read_text())
    assert {"cam", "lpcam", "saliency_c2am_h", "rw_cam", "rw_lpcam", "segmentation"} <= set(
        results_two
    )

    # One process, the same trained networks and prototypes: every other stage again.
    one = tmp_path / "one"
    shutil.copytree(two / "train", one / "train")
    shutil.copytree(two / "lpcam", one / "lpcam")
    shutil.copy(two / "config.yaml", one / "config.yaml")
    run = RunDir(one)
    pipeline, _ = stored_pipeline(run)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for stage in pipeline.stages:
            if not isinstance(stage, (TrainStage, PrototypeStage, SynthStage)):
                stage.run(run)
    finally:
        torch.set_num_threads(threads)
    results_one = run.results()
    assert set(results_one) == set(results_two)
    for key in results_two:
        assert _plain(results_one[key], one) == _plain(results_two[key], two), key
    for folder in ("affinity", "rw", "segmentation", "pseudo_saliency"):
        names = _files(two / folder)
        assert names and names == _files(one / folder), folder
        _, mismatch, errors = filecmp.cmpfiles(two / folder, one / folder, names, False)
        assert not mismatch and not errors, (folder, mismatch[:3], errors[:3])
