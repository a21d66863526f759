"""Pseudo masks: background plane, keys, ignore, CRF, and the folder writer."""

from __future__ import annotations

import numpy as np
import pytest

from wsss.data.base import SegmentationDataset
from wsss.errors import DataError
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore
from wsss.refine.crf import crf_labels
from wsss.refine.folders import make_pseudo_masks
from wsss.refine.pseudo_masks import label_keys, pseudo_mask, saliency_background


def test_argmax_with_a_constant_background_by_hand():
    scores = np.array([[[0.5, 0.25, 0.1, 0.9]], [[0.2, 0.1, 0.3, 0.95]]], np.float32)
    mask = pseudo_mask(scores, [7, 15], 0.25)
    # 0.25 ties with the background plane: background wins.
    np.testing.assert_array_equal(mask, [[7, 0, 15, 15]])
    assert mask.dtype == np.uint8
    ignore = np.array([[False, True, False, False]])
    np.testing.assert_array_equal(
        pseudo_mask(scores, [7, 15], 0.25, ignore=ignore), [[7, 255, 15, 15]]
    )


def test_background_plane_and_saliency():
    scores = np.array([[[0.5, 0.5, 0.5]]], np.float32)
    sal = np.array([[0.9, 0.4, 0.6]], np.float32)
    bg = saliency_background(sal)
    np.testing.assert_allclose(bg, [[0.1, 0.6, 0.4]], rtol=1e-6)
    np.testing.assert_array_equal(pseudo_mask(scores, [3], bg), [[3, 0, 3]])
    np.testing.assert_array_equal(saliency_background(sal[None], threshold=0.5), [[0, 1, 0]])
    with pytest.raises(DataError, match="background plane"):
        pseudo_mask(scores, [3], np.zeros((2, 3)))


def test_no_foreground_label_is_all_background():
    mask = pseudo_mask(np.zeros((0, 3, 4)), [], 0.25)
    assert mask.shape == (3, 4) and (mask == 0).all()
    assert label_keys(np.array([0, 1, 0, 1.0])).tolist() == [2, 4]
    assert label_keys(np.zeros(5)).tolist() == []


def test_crf_refines_the_argmax():
    pytest.importorskip("pydensecrf.densecrf")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(12, 14, 3), dtype=np.uint8)
    scores = rng.random((2, 12, 14)).astype(np.float32)
    idx = np.concatenate([np.full((1, 12, 14), 0.3, np.float32), scores]).argmax(0)
    expected = np.array([0, 4, 6])[crf_labels(img, idx, 3, "rw")]
    np.testing.assert_array_equal(pseudo_mask(scores, [4, 6], 0.3, image=img, crf="rw"), expected)
    with pytest.raises(DataError, match="needs the image"):
        pseudo_mask(scores, [4, 6], 0.3, crf="rw")


class TinySet(SegmentationDataset):
    def __init__(self, labels, size=(9, 11)):
        self.classes = ["a", "b", "c"]
        self.ids = [f"im{i}" for i in range(len(labels))]
        self.split = "train"
        self._labels = labels
        self._size = size

    def load_image(self, sample_id):
        rng = np.random.default_rng(int(sample_id[2:]))
        return rng.integers(0, 255, size=(*self._size, 3), dtype=np.uint8)

    def load_label(self, sample_id):
        label = np.zeros(3, np.float32)
        for key in self._labels[int(sample_id[2:])]:
            label[key - 1] = 1
        return label


def _store(tmp_path, dataset, extra_channel=False):
    store = MapStore(tmp_path / "maps")
    for i, sample_id in enumerate(dataset.ids):
        keys = list(dataset._labels[i]) + ([3] if extra_channel else [])
        if not dataset._labels[i]:
            continue
        rng = np.random.default_rng(100 + i)
        hr = rng.random((len(keys), 9, 11)).astype(np.float32)
        store.save(sample_id, ClassMaps(keys, np.zeros((len(keys), 3, 3), np.float32), hr))
    return store


def test_folder_writer_drops_unlabelled_channels_and_resumes(tmp_path):
    dataset = TinySet([[1], [1, 2], []])
    maps = _store(tmp_path, dataset, extra_channel=True)
    out = MaskStore(tmp_path / "masks")
    run = make_pseudo_masks(dataset, maps, out, background=0.4)
    assert (run.written, run.skipped) == (3, 0)
    m = maps.load("im1")
    np.testing.assert_array_equal(out.load("im1"), pseudo_mask(m.hr[:2], [1, 2], 0.4))
    assert 3 not in out.load("im0")  # the extra channel of an unlabelled class is dropped
    assert (out.load("im2") == 0).all()
    again = make_pseudo_masks(dataset, maps, out, background=0.4)
    assert (again.written, again.skipped) == (0, 3)


def test_folder_writer_with_saliency_crf_and_processes(tmp_path):
    pytest.importorskip("pydensecrf.densecrf")
    dataset = TinySet([[2], [1, 3], [3]])
    maps = _store(tmp_path, dataset)
    sal = MapStore(tmp_path / "sal")
    for i, sample_id in enumerate(dataset.ids):
        s = np.random.default_rng(7 + i).random((1, 9, 11)).astype(np.float32)
        sal.save(sample_id, ClassMaps([1], np.zeros((1, 3, 3), np.float32), s))
    loop, pool = MaskStore(tmp_path / "loop"), MaskStore(tmp_path / "pool")
    make_pseudo_masks(dataset, maps, loop, background=sal, crf="rw")
    make_pseudo_masks(dataset, maps, pool, background=sal, crf="rw", workers=2)
    for sample_id in dataset.ids:
        m = maps.load(sample_id)
        bg = 1 - sal.load(sample_id).hr[0]
        expected = pseudo_mask(m.hr, m.keys, bg, image=dataset.load_image(sample_id), crf="rw")
        np.testing.assert_array_equal(loop.load(sample_id), expected)
        np.testing.assert_array_equal(pool.load(sample_id), expected)


def test_missing_maps_name_the_file(tmp_path):
    dataset = TinySet([[1], [2]])
    maps = _store(tmp_path, dataset)
    (tmp_path / "maps" / "im1.npz").unlink()
    out = MaskStore(tmp_path / "masks")
    with pytest.raises(DataError, match=r"im1\.npz"):
        make_pseudo_masks(dataset, maps, out)
    assert out.has("im0")  # what was done before the error stays
