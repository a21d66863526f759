"""Loader workers pass user errors back unchanged; verify_files finds missing images up front."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.data import FolderDataset, SegmentationDataset, verify_files
from wsss.data.image_io import write_image
from wsss.data.loader import ClassificationDataset, SeededSampler, build_train_loader
from wsss.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


class Broken(SegmentationDataset):
    """Eight in-memory samples; loading ``s5`` raises a DataError."""

    def __init__(self) -> None:
        self.split = "train"
        self.classes = ["cat"]
        self.ids = [f"s{i}" for i in range(8)]

    def load_image(self, sample_id):
        if sample_id == "s5":
            raise DataError("s5.jpg: unreadable image", path="s5.jpg", kind="unreadable image")
        return np.zeros((4, 4, 3), np.uint8)

    def load_label(self, sample_id):
        return np.ones(1, np.float32)


def transform(image, mask, seed):
    return torch.from_numpy(image).permute(2, 0, 1).float(), None


@pytest.mark.parametrize("workers", [0, 1])
def test_worker_error_is_raised_as_it_was(workers):
    data = ClassificationDataset(Broken(), transform)
    loader = build_train_loader(data, SeededSampler(8, seed=0), batch_size=2, num_workers=workers)
    error = None
    try:
        for batch in loader:
            assert batch.images.shape == (2, 3, 4, 4)
    except DataError as e:
        # Drop the traceback: its frames would keep the loader in a reference cycle, and
        # workers shut down by the garbage collector wait out torch's 5 s join timeout.
        error = e.with_traceback(None)
    assert isinstance(error, DataError)
    assert str(error) == "s5.jpg: unreadable image"
    assert (error.path, error.kind) == ("s5.jpg", "unreadable image")


def test_direct_access_still_raises():
    with pytest.raises(DataError, match=r"s5\.jpg"):
        ClassificationDataset(Broken(), transform)[5]


def test_verify_files_names_split_count_and_first_ids(tmp_path):
    root = tmp_path / "d"
    ids = [f"i{k}" for k in range(10)]
    for sample_id in ids[:3]:
        write_image(root / "images" / f"{sample_id}.png", np.zeros((2, 2, 3), np.uint8))
    (root / "classes.txt").write_text("cat\n")
    (root / "labels.csv").write_text("".join(f"{i},cat\n" for i in ids))
    dataset = FolderDataset(root)
    with pytest.raises(DataError) as info:
        verify_files(dataset)
    message = str(info.value)
    assert message.startswith(
        "split 'all': 7 of 10 ids have no image file ('i3', 'i4', 'i5', 'i6', 'i7', ...)"
    )
    assert f"{root / 'images' / 'i3'}.{{jpg|" in message
    assert info.value.kind == "missing image"
    for sample_id in ids[3:]:
        write_image(root / "images" / f"{sample_id}.jpg", np.zeros((2, 2, 3), np.uint8))
    verify_files(dataset)  # complete: no error
    verify_files(Broken())  # no image_path: nothing to look up
