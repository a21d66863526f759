"""DDP training on two CPU processes (gloo): both ranks must end with identical weights."""

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


class _Tiny(SegmentationDataset):
    def __init__(self, n: int = 16, num_classes: int = 3) -> None:
        rng = np.random.default_rng(0)
        self.root, self.split = Path("."), "train"
        self.classes = [f"c{i}" for i in range(num_classes)]
        self.ids = [f"{i:03d}" for i in range(n)]
        self.labels = (rng.random((n, num_classes)) < 0.5).astype(np.float32)
        self.images = rng.integers(0, 256, (n, 36, 40, 3), dtype=np.uint8)

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.images[int(sample_id)]

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.labels[int(sample_id)]


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
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
            "data.crop_size=32",
            "data.resize_long=[32,40]",
            "train.epochs=1",
            "train.batch_size=2",
            "train.accumulate=2",
            "train.lr=0.05",
            "train.momentum=0.9",
            "train.device=cpu",
        ],
    )
    trainer = Trainer(config, Path(out) / "run", _Tiny(), progress=False)
    assert trainer.dist.world_size == world_size and trainer.dist.rank == rank
    assert trainer.steps_per_epoch == 2  # 16 images / 2 ranks / (2 × 2) per step
    init = {k: v.clone() for k, v in trainer.strategy.model.state_dict().items()}
    trainer.fit()
    final = trainer.strategy.model.state_dict()
    save_file({k: v.contiguous() for k, v in final.items()}, f"{out}/rank{rank}.safetensors")
    save_file({k: v.contiguous() for k, v in init.items()}, f"{out}/init{rank}.safetensors")
    distributed.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_process_gloo_training_ends_with_identical_weights(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    w0 = load_file(tmp_path / "rank0.safetensors")
    w1 = load_file(tmp_path / "rank1.safetensors")
    init = load_file(tmp_path / "init0.safetensors")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert not torch.equal(w0["head.weight"], init["head.weight"])  # it did train
    # Only rank 0 writes the run directory.
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").is_file()
