"""Writing the maps of a dataset: files, manifest, resume, sharding, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError, DataError
from wsss.io.maps import ClassMaps, MapStore, load_class_maps, save_class_maps
from wsss.maps.cam import cam_maps_batch, predicted_classes
from wsss.maps.methods import AGNOSTIC_KEY, MapMethod
from wsss.maps.runner import MANIFEST_NAME, default_batch_size, is_complete_map_file, run_maps
from wsss.models.classifier import CAMClassifier

SCALES = (1.0, 0.5)


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyDataset(SegmentationDataset):
    """In-memory images and labels; ``bad`` ids fail to decode, ``labels=False`` has none."""

    def __init__(self, sizes, labels, num_classes=3, bad=(), has_labels=True):
        rng = np.random.default_rng(0)
        self.root = Path("memory")
        self.split = "train"
        self.classes = [f"c{i}" for i in range(num_classes)]
        self.ids = [f"img{i}" for i in range(len(sizes))]
        self.images = {
            i: rng.integers(0, 256, (*s, 3), dtype=np.uint8)
            for i, s in zip(self.ids, sizes, strict=True)
        }
        self.labels = {}
        for sample_id, present in zip(self.ids, labels, strict=True):
            label = np.zeros(num_classes, dtype=np.float32)
            label[list(present)] = 1
            self.labels[sample_id] = label
        self.bad, self.has_labels = set(bad), has_labels

    def load_image(self, sample_id):
        if sample_id in self.bad:
            raise DataError(f"{sample_id}.jpg: truncated image")
        return self.images[sample_id]

    def load_label(self, sample_id):
        if not self.has_labels:
            raise DataError(f"{sample_id}: no label file")
        return self.labels[sample_id]


@pytest.fixture(scope="module")
def model() -> CAMClassifier:
    torch.manual_seed(0)
    net = CAMClassifier("resnet10t", num_classes=3, output_stride=16).eval()
    with torch.no_grad():
        net.head.weight.mul_(1e4)
    return net


@pytest.fixture
def dataset() -> TinyDataset:
    sizes = [(37, 53), (24, 32), (37, 53), (30, 20)]
    return TinyDataset(sizes, labels=[[0, 2], [1], [], [0, 1, 2]])


class CountingCam:
    """The CAM method, recording which images it was asked for."""

    __name__ = "cam"

    def __init__(self):
        self.calls = 0
        self.shapes = []

    def __call__(self, model, images, class_indices, **kwargs):
        self.calls += len(images)
        self.shapes += [tuple(im.shape) for im in images]
        return cam_maps_batch(model, images, class_indices, **kwargs)


def test_writes_one_valid_file_per_image_and_a_manifest(model, dataset, tmp_path):
    result = run_maps(
        "cam", model, dataset, tmp_path, scales=SCALES, batch_size=3, checkpoint="ck.safetensors"
    )
    assert (result.written, result.skipped, result.complete) == (4, 0, True)
    for sample_id in dataset.ids:
        maps = load_class_maps(tmp_path / f"{sample_id}.npz")
        expected = np.flatnonzero(dataset.labels[sample_id]) + 1
        np.testing.assert_array_equal(maps.keys, expected)
        h, w = dataset.images[sample_id].shape[:2]
        assert maps.hr.shape == (len(expected), h, w)
        assert maps.cam.shape == (len(expected), -(-h // 4), -(-w // 4))
        if len(expected) == 0:
            continue
        for arr in (maps.cam, maps.hr):
            assert arr.min() >= 0 and arr.max() <= 1
            peaks = arr.max(axis=(1, 2))
            assert np.all((peaks == 0) | (np.abs(peaks - 1) < 1e-4)), peaks
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest == {
        "method": "cam",
        "checkpoint": "ck.safetensors",
        "scales": [1.0, 0.5],
        "classes": "gt",
        "split": "train",
        "count": 4,
        "complete": True,
    }


def test_resume_recomputes_only_missing_or_damaged_files(model, dataset, tmp_path):
    run_maps("cam", model, dataset, tmp_path, scales=SCALES, progress=False)
    kept = {i: (tmp_path / f"{i}.npz").read_bytes() for i in ("img0", "img3")}
    (tmp_path / "img1.npz").unlink()
    (tmp_path / "img2.npz").write_bytes(b"truncated")
    assert not is_complete_map_file(tmp_path / "img2.npz")
    method = CountingCam()
    result = run_maps(method, model, dataset, tmp_path, scales=SCALES, progress=False)
    assert method.calls == 2 and sorted(method.shapes) == [(3, 24, 32), (3, 37, 53)]
    assert (result.written, result.skipped, result.complete) == (2, 2, True)
    for sample_id, data in kept.items():
        assert (tmp_path / f"{sample_id}.npz").read_bytes() == data
    assert load_class_maps(tmp_path / "img2.npz").keys.shape == (0,)
    assert (tmp_path / MANIFEST_NAME).is_file()
    again = CountingCam()
    run_maps(again, model, dataset, tmp_path, scales=SCALES, progress=False)
    assert again.calls == 0


def test_shards_take_every_world_th_image(model, dataset, tmp_path):
    result = run_maps(
        "cam", model, dataset, tmp_path, scales=SCALES, rank=1, world_size=2, progress=False
    )
    assert sorted(p.stem for p in tmp_path.glob("*.npz")) == ["img1", "img3"]
    assert not result.complete and not MapStore(tmp_path).is_complete()
    result = run_maps(
        "cam", model, dataset, tmp_path, scales=SCALES, rank=0, world_size=2, progress=False
    )
    assert result.complete and MapStore(tmp_path).is_complete()


def test_predicted_classes_need_no_labels(model, tmp_path):
    unlabelled = TinyDataset([(20, 28), (26, 18)], labels=[[], []], has_labels=False)
    with pytest.raises(DataError, match="no label file"):
        run_maps("cam", model, unlabelled, tmp_path / "gt", scales=SCALES, progress=False)
    run_maps("cam", model, unlabelled, tmp_path, scales=SCALES, classes="predicted", progress=False)
    images = [torch.from_numpy(unlabelled.images[i]).permute(2, 0, 1) for i in unlabelled.ids]
    expected = predicted_classes(model, images)
    for sample_id, classes in zip(unlabelled.ids, expected, strict=True):
        keys = load_class_maps(tmp_path / f"{sample_id}.npz").keys
        np.testing.assert_array_equal(keys, np.array(classes, dtype=np.int64) + 1)


def test_changed_settings_in_a_finished_folder_are_refused(model, dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "ck.safetensors"
    run_maps("cam", model, dataset, tmp_path, scales=SCALES, checkpoint=ckpt, progress=False)
    with pytest.raises(ConfigError, match="scales"):
        run_maps("cam", model, dataset, tmp_path, scales=(1.0,), checkpoint=ckpt)
    with pytest.raises(ConfigError, match="checkpoint"):
        run_maps("cam", model, dataset, tmp_path, scales=SCALES, checkpoint="other.safetensors")
    # The same checkpoint named by a relative path is the same setting.
    result = run_maps(
        "cam", model, dataset, tmp_path, scales=SCALES, checkpoint="ck.safetensors", progress=False
    )
    assert result.written == 0 and result.complete


def test_configuration_errors(model, dataset, tmp_path):
    with pytest.raises(ConfigError, match="3 classes but dataset"):
        run_maps("cam", model, TinyDataset([(8, 8)], [[0]], num_classes=5), tmp_path)
    with pytest.raises(ConfigError, match="unknown map method 'nope'"):
        run_maps("nope", model, dataset, tmp_path)
    with pytest.raises(ConfigError, match="'gt' or 'predicted'"):
        run_maps("cam", model, dataset, tmp_path, classes="all")


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_stops_with_its_message(model, tmp_path, workers):
    broken = TinyDataset([(16, 16), (16, 16)], [[0], [1]], bad={"img1"})
    with pytest.raises(DataError, match=r"img1\.jpg: truncated image"):
        run_maps("cam", model, broken, tmp_path, scales=(1.0,), num_workers=workers, progress=False)
    assert (tmp_path / "img0.npz").is_file()  # finished work is kept


class Interrupted(Exception):
    pass


class StopAfter(CountingCam):
    """The CAM method, interrupted once it has been asked for ``n`` images."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def __call__(self, model, images, class_indices, **kwargs):
        if self.calls >= self.n:
            raise Interrupted
        return super().__call__(model, images, class_indices, **kwargs)


def test_settings_are_recorded_before_the_first_map(model, dataset, tmp_path):
    with pytest.raises(Interrupted):
        run_maps(StopAfter(2), model, dataset, tmp_path, scales=SCALES, progress=False)
    store = MapStore(tmp_path)
    assert len(store.ids()) == 2 and not store.is_complete()
    assert store.manifest()["scales"] == list(SCALES)
    # A rerun with other scales would mix maps: refused, and nothing is written.
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.npz")}
    with pytest.raises(ConfigError, match="scales"):
        run_maps("cam", model, dataset, tmp_path, scales=(1.0,), progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.npz")} == before
    # restart=True starts the folder over with the new settings.
    method = CountingCam()
    result = run_maps(method, model, dataset, tmp_path, scales=(1.0,), restart=True)
    assert method.calls == 4 and result.complete and store.manifest()["scales"] == [1.0]
    direct = cam_maps_batch(
        model, [torch.from_numpy(dataset.images["img0"]).permute(2, 0, 1)], [[0, 2]], scales=(1.0,)
    )[0]
    np.testing.assert_allclose(store.load("img0").hr, direct.hr, atol=1e-5)


def test_maps_without_a_settings_record_are_refused(model, dataset, tmp_path):
    foreign = ClassMaps(keys=[1], cam=np.zeros((1, 10, 14)), hr=np.zeros((1, 37, 53)))
    save_class_maps(tmp_path / "img0.npz", foreign)
    with pytest.raises(ConfigError, match="no settings record"):
        run_maps("cam", model, dataset, tmp_path, scales=SCALES, progress=False)
    result = run_maps("cam", model, dataset, tmp_path, scales=SCALES, restart=True)
    assert result.written == 4 and load_class_maps(tmp_path / "img0.npz").keys.tolist() == [1, 3]


class TwoOutputs(MapMethod):
    """CAM maps and their square, from one call per batch."""

    name = "pair"
    outputs = ("plain", "squared")

    def __init__(self):
        self.calls = 0

    def compute(self, model, images, class_indices, **tta):
        self.calls += len(images)
        out = []
        for m in cam_maps_batch(model, images, class_indices, **tta):
            squared = ClassMaps(keys=m.keys, cam=m.cam**2, hr=m.hr**2)
            out.append({"plain": m, "squared": squared})
        return out


def test_a_method_writes_all_its_outputs_in_one_pass(model, dataset, tmp_path):
    method = TwoOutputs()
    result = run_maps(method, model, dataset, tmp_path, scales=SCALES, batch_size=2)
    assert method.calls == 4 and result.complete
    assert result.outputs == {"plain": tmp_path / "plain", "squared": tmp_path / "squared"}
    for name in method.outputs:
        store = MapStore(tmp_path / name)
        assert store.is_complete() and store.manifest()["method"] == name
        assert store.ids() == dataset.ids
    plain = load_class_maps(tmp_path / "plain" / "img3.npz")
    squared = load_class_maps(tmp_path / "squared" / "img3.npz")
    np.testing.assert_allclose(squared.hr, plain.hr**2)
    # An image missing one of its outputs is computed again; the others are not.
    (tmp_path / "squared" / "img1.npz").unlink()
    again = TwoOutputs()
    result = run_maps(again, model, dataset, tmp_path, scales=SCALES, progress=False)
    assert again.calls == 1 and (result.written, result.skipped) == (1, 3)
    # A mapping chooses the folders (here: one output only).
    only = run_maps(TwoOutputs(), model, dataset, {"squared": tmp_path / "sq"}, scales=SCALES)
    assert only.outputs == {"squared": tmp_path / "sq"} and MapStore(tmp_path / "sq").is_complete()
    with pytest.raises(ConfigError, match="has outputs"):
        run_maps(TwoOutputs(), model, dataset, {"cam": tmp_path / "x"}, scales=SCALES)


class Saliency(MapMethod):
    """A class-agnostic method: one channel, key 0, the channel mean of the CAMs."""

    name = "saliency"
    outputs = ("saliency",)
    class_agnostic = True

    def compute(self, model, images, class_indices, **tta):
        assert all(c is None for c in class_indices)
        out = []
        for m in cam_maps_batch(model, images, [[0, 1, 2]] * len(images), **tta):
            cam, hr = m.cam.mean(0, keepdims=True), m.hr.mean(0, keepdims=True)
            out.append({"saliency": ClassMaps(keys=[AGNOSTIC_KEY], cam=cam, hr=hr)})
        return out


def test_a_class_agnostic_method_reads_no_labels(model, tmp_path):
    unlabelled = TinyDataset([(20, 28), (26, 18)], labels=[[], []], has_labels=False)
    result = run_maps(Saliency(), model, unlabelled, tmp_path, scales=SCALES, progress=False)
    assert result.complete and MapStore(tmp_path).manifest()["classes"] == "agnostic"
    maps = load_class_maps(tmp_path / "img1.npz")
    assert maps.keys.tolist() == [0] and maps.hr.shape == (1, 26, 18)


def test_an_image_over_the_size_cap_is_refused_before_any_work(model, dataset, tmp_path):
    method = CountingCam()
    with pytest.raises(DataError, match=r"img0: image of 53×37 pixels is 106×74 .* GB"):
        run_maps(method, model, dataset, tmp_path, max_input_megapixels=0.005, progress=False)
    assert method.calls == 0
    small = tmp_path / "scale1"
    result = run_maps(method, model, dataset, small, scales=(1.0,), max_input_megapixels=0.005)
    assert result.complete  # 53×37 at scale 1 is under 5000 pixels


def test_a_method_refuses_another_kind_of_model(dataset, tmp_path):
    class Other(MapMethod):
        name = "other"
        outputs = ("other",)
        model_types = ("saliency_net",)

    net = CAMClassifier("resnet10t", num_classes=3)
    with pytest.raises(ConfigError, match=r"runs a saliency_net model.*'cam_classifier'"):
        run_maps(Other(), net, dataset, tmp_path)


def test_default_batch_is_one_image_on_cpu_and_eight_on_gpu():
    assert default_batch_size("cpu") == 1 and default_batch_size("cuda:0") == 8


def _shard_worker(rank: int, world_size: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        torch.manual_seed(0)
        net = CAMClassifier("resnet10t", num_classes=3, output_stride=16).eval()
        sizes = [(24, 32), (20, 28), (24, 32), (16, 20), (30, 18)]
        data = TinyDataset(sizes, labels=[[0], [1, 2], [], [2], [0, 1]])
        result = run_maps("cam", net, data, out, scales=SCALES, progress=False)
        assert result.written == len(range(rank, len(sizes), world_size))
        assert result.complete
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_share_the_images(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_shard_worker, args=(2, port, str(tmp_path / "dist")), nprocs=2, join=True)

    torch.manual_seed(0)
    net = CAMClassifier("resnet10t", num_classes=3, output_stride=16).eval()
    sizes = [(24, 32), (20, 28), (24, 32), (16, 20), (30, 18)]
    data = TinyDataset(sizes, labels=[[0], [1, 2], [], [2], [0, 1]])
    run_maps("cam", net, data, tmp_path / "single", scales=SCALES, progress=False)
    assert json.loads((tmp_path / "dist" / MANIFEST_NAME).read_text())["count"] == 5
    for sample_id in data.ids:
        a = load_class_maps(tmp_path / "dist" / f"{sample_id}.npz")
        b = load_class_maps(tmp_path / "single" / f"{sample_id}.npz")
        np.testing.assert_array_equal(a.keys, b.keys)
        np.testing.assert_allclose(a.hr, b.hr, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.cam, b.cam, rtol=0, atol=1e-5)


def _refusing_worker(rank: int, world_size: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        net = CAMClassifier("resnet10t", num_classes=3, output_stride=16).eval()
        data = TinyDataset([(16, 20), (16, 20)], labels=[[0], [1]])
        try:
            run_maps("cam", net, data, out, scales=(1.0,), progress=False)
        except Exception as e:  # every rank must fail, none may wait forever
            Path(out, f"rank{rank}.txt").write_text(f"{type(e).__name__}: {e}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_refused_folder_stops_every_rank(model, tmp_path):
    import socket

    import torch.multiprocessing as mp

    data = TinyDataset([(16, 20), (16, 20)], labels=[[0], [1]])
    run_maps("cam", model, data, tmp_path, scales=SCALES, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_refusing_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "rank0.txt").read_text().startswith("ConfigError: ")
    assert "scales" in (tmp_path / "rank0.txt").read_text()
    assert "another rank refused" in (tmp_path / "rank1.txt").read_text()
