"""The random walk over a split under torch.distributed (2 gloo processes): sharded, complete,
and a failure on one rank stops both instead of leaving one waiting."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from wsss.data.image_io import write_image, write_mask
from wsss.io.maps import ClassMaps, MapStore

IDS = [f"i{k}" for k in range(5)]


def _worker(rank: int, port: int, root: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    from wsss.data.datasets import build_dataset
    from wsss.io.masks import MaskStore
    from wsss.models.boundary import BoundaryNet
    from wsss.refine.walk import run_random_walk
    from wsss.runtime import distributed

    distributed.init_distributed()
    dataset = build_dataset("voc", f"{root}/voc", "train")
    torch.manual_seed(0)
    model = BoundaryNet("resnet10t")
    result = {}
    run = run_random_walk(
        dataset, MapStore(f"{root}/maps"), model, MaskStore(f"{root}/rw"), exp_times=2,
        pad_to=None,
    )  # fmt: skip
    result["written"] = run.written
    if rank == 1:
        os.remove(f"{root}/maps/i3.npz")  # rank 1 walks i1 and i3
    distributed.barrier()
    try:
        run_random_walk(
            dataset, MapStore(f"{root}/maps"), model, MaskStore(f"{root}/rw2"), exp_times=2,
            pad_to=None,
        )  # fmt: skip
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    with open(f"{root}/rank{rank}.json", "w") as f:
        json.dump(result, f)
    distributed.cleanup()


@pytest.mark.timeout(120)
def test_walk_is_sharded_and_a_failure_stops_every_rank(tmp_path):
    voc = tmp_path / "voc"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(IDS) + "\n")
    (voc / "classes.txt").write_text("cat\ndog\n")
    rng = np.random.default_rng(0)
    maps = MapStore(tmp_path / "maps")
    for sample_id in IDS:
        mask = np.zeros((24, 28), np.uint8)
        mask[4:18, 4:20] = 1
        write_image(voc / "JPEGImages" / f"{sample_id}.png", rng.integers(0, 255, (24, 28, 3)))
        write_mask(voc / "SegmentationClass" / f"{sample_id}.png", mask)
        hr = rng.random((1, 24, 28)).astype(np.float32)
        maps.save(sample_id, ClassMaps([1], hr[:, ::4, ::4], hr))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(port, str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["written"] for r in ranks] == [3, 2]  # i0 i2 i4 / i1 i3
    record = json.loads((tmp_path / "rw" / "masks.json").read_text())
    assert record["complete"] and record["count"] == 5
    assert "i3.npz" in ranks[1]["error"] and "another rank failed" in ranks[0]["error"]
    assert not json.loads((tmp_path / "rw2" / "masks.json").read_text())["complete"]
