"""The pipeline under torch.distributed (2 gloo processes): one owner, one decision, no hang."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tiny_settings import TINY_BENCHMARK
from wsss.errors import DataError, WsssError
from wsss.pipeline import Pipeline, RunDir, Stage


class Marker(Stage):
    """Leaves ``<name>.rank<r>`` for every rank that runs it; rank 0 writes the output."""

    def __init__(self, name: str, distributed: bool, fail: bool = False) -> None:
        self.name, self.distributed, self.fail = name, distributed, fail

    def outputs(self, run: RunDir) -> list[Path]:
        return [run.path / f"{self.name}.done"]

    def run(self, run: RunDir) -> None:
        import torch.distributed as dist

        rank = dist.get_rank()
        (run.path / f"{self.name}.rank{rank}").write_text("")
        if self.fail:
            raise DataError("planted failure")
        if rank == 0:
            (run.path / f"{self.name}.done").write_text("")


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from wsss.runtime import distributed

    stages = [Marker("prep", False), Marker("work", True), Marker("report", False)]
    seen = {"first": [], "second": []}
    started: list[str] = []
    for key in seen:
        reports = Pipeline(stages).run(
            RunDir(out), on_start=lambda stage, why: started.append(f"{stage.name}: {why}")
        )
        seen[key] = [r.status for r in reports]
    try:
        Pipeline([Marker("bad", False, fail=True)]).run(RunDir(Path(out) / "bad"))
    except WsssError as e:
        seen["error"] = f"{type(e).__name__}: {e}"
    seen["started"] = started
    Path(out, f"seen{rank}.json").write_text(json.dumps(seen))
    distributed.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_ranks_share_one_run_directory(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    seen = [json.loads((tmp_path / f"seen{r}.json").read_text()) for r in range(2)]
    for s in seen:  # no "in use" error, the same decisions on both ranks
        assert s["first"] == ["ran"] * 3 and s["second"] == ["skipped"] * 3
    # single-process stages ran on rank 0 only, the distributed one on both
    assert sorted(p.name for p in tmp_path.glob("*.rank*")) == [
        "prep.rank0",
        "report.rank0",
        "work.rank0",
        "work.rank1",
    ]
    # rank 0 alone logs, records and calls back
    assert seen[0]["started"] == ["prep: first run", "work: first run", "report: first run"]
    assert seen[1]["started"] == []
    log = (tmp_path / "logs" / "pipeline.log").read_text()
    assert log.count("start prep") == 1 and log.count("skip prep") == 1
    # a failure on rank 0 reaches both ranks instead of leaving one waiting
    assert seen[0]["error"] == "DataError: planted failure"
    assert seen[1]["error"] == "WsssError: stage 'bad' failed on another process (see its output)"


# A tiny pipeline (data, 8 training steps, CAM maps, evaluation, report). The backbone has no
# batch statistics (ConvNeXt: LayerNorm), so two processes with one image each per step and one
# process accumulating two images compute the same gradients: the results must be the same.
TINY = [
    *TINY_BENCHMARK,
    "synth.train=16",
    "synth.val=0",
    "model.backbone=convnext_atto",
    "train.batch_size=1",
    "demo.lpcam=false",
    "run.ccam=false",
    "refine.methods=[]",
    "run.segmentation=false",  # the whole graph on two ranks: tests/test_run_ranks.py
    "maps.scales=[1.0]",
    "report.examples=2",
]


def _demo_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from wsss.pipeline import demo_config, run_demo
    from wsss.runtime import distributed

    run_demo(out, demo_config([*TINY, "train.accumulate=1"], device="cpu"), progress=False)
    distributed.cleanup()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_tiny_pipeline_on_two_ranks_gives_the_results_of_one_process(tmp_path: Path) -> None:
    from wsss.pipeline import demo_config, run_demo

    two = tmp_path / "two"
    mp.spawn(_demo_worker, args=(2, _free_port(), str(two)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_demo(
            tmp_path / "one",
            demo_config([*TINY, "train.accumulate=2"], device="cpu"),
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    results = json.loads((two / "results.json").read_text())
    assert set(results) == set(one.results) == {"cam"}
    for entry in (results["cam"], one.results["cam"], results["cam"]["best"]):
        assert entry.pop("source")["path"].endswith("maps/cam")  # each run's own folder
    one.results["cam"]["best"].pop("source")
    assert results == one.results
    assert 0.0 < results["cam"]["miou"] < 100.0
    assert len(list((two / "maps" / "cam").glob("*.npz"))) == 16
    assert (two / "report.html").is_file()
    info = json.loads((two / "run_info.json").read_text())
    assert info["world_size"] == 2
