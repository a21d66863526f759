"""P-NOC under DDP on two CPU processes (gloo): both ranks must end with identical weights.

A P-NOC step has several forward passes, two optimisers, and (``noc_grad="reference"``) the
generator's backward leaving gradients on the NOC outside its DDP wrapper. The ranks see
different images, so they agree only if every one of those gradients is reduced.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from wsss.data.base import SegmentationDataset

CLASSES = ["a", "b", "c"]


class _Tiny(SegmentationDataset):
    def __init__(self, n: int = 8) -> None:
        rng = np.random.default_rng(0)
        self.root, self.split = Path("."), "train"
        self.classes = list(CLASSES)
        self.ids = [f"{i:03d}" for i in range(n)]
        self.labels = (rng.random((n, 3)) < 0.5).astype(np.float32)
        self.labels[:, 0] = 1
        self.images = rng.integers(0, 256, (n, 36, 40, 3), dtype=np.uint8)

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.images[int(sample_id)]

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.labels[int(sample_id)]


def _worker(rank: int, world_size: int, port: int, out: str, oc: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from wsss.config import load_config
    from wsss.runtime import distributed
    from wsss.train.engine import Trainer

    config = load_config(
        None,
        [
            "model.backbone=resnet10t",
            "model.output_stride=8",
            "data.crop_size=32",
            "data.resize_long=[32,40]",
            "train.epochs=1",
            "train.batch_size=2",
            "train.accumulate=2",
            "train.device=cpu",
            "train.val_every=0",
            "train.strategy=pnoc",
            f"train.strategy_args.oc={oc}",
        ],
    )
    trainer = Trainer(config, Path(out) / "run", _Tiny(), progress=False)
    trainer.fit()
    for name in ("model", "noc"):
        state = getattr(trainer.strategy, name).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, f"{out}/{name}{rank}.safetensors")
    distributed.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pnoc_ddp_ranks_end_identical(tmp_path: Path) -> None:
    from wsss.models import save_model
    from wsss.models.classifier import CAMClassifier

    torch.manual_seed(1)
    oc = save_model(
        tmp_path / "oc", CAMClassifier("resnet10t", 3, output_stride=8), {"classes": CLASSES}
    )
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), str(oc)), nprocs=2, join=True)
    for name in ("model", "noc"):
        a = load_file(tmp_path / f"{name}0.safetensors")
        b = load_file(tmp_path / f"{name}1.safetensors")
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k}"
    noc = load_file(tmp_path / "noc0.safetensors")
    oc_weights = load_file(oc)
    assert not torch.equal(noc["head.weight"], oc_weights["head.weight"])  # the NOC trained
