"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsss.data.synthetic import SynthConfig, generate_synthetic


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: tiny inputs gain nothing from more, and spinning threads
    crawl on a shared machine. Modules opt in with ``pytestmark``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic benchmark (8 train, 4 val images of 64-72 px), generated once per run.

    Read-only: a test that damages a dataset copies it first.
    """
    root = tmp_path_factory.mktemp("synth")
    config = SynthConfig(
        seed=1,
        train=8,
        val=4,
        size_min=64,
        size_max=72,
        head_size=(8, 12),
        body_length=(20, 30),
        body_width=(6, 10),
    )
    generate_synthetic(root, config, progress=False)
    return root
