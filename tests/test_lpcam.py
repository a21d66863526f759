"""LPCAM: the paper's worked example, map math, selection, fitting, prototype files."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from wsss.cli import app
from wsss.data.base import SegmentationDataset
from wsss.data.image_io import write_image, write_mask
from wsss.data.parts import BODY_FAR, BODY_NEAR, CONTEXT_PRESENT, HEAD, OTHER_BACKGROUND
from wsss.data.transforms import normalize, to_tensor
from wsss.diagnostics.prototypes import part_tags, prototype_composition
from wsss.errors import ConfigError, DataError
from wsss.io.maps import ClassMaps, MapStore, load_class_maps, save_class_maps
from wsss.maps.kmeans import cosine_kmeans
from wsss.maps.lpcam import (
    PrototypeConfig,
    Prototypes,
    class_scores,
    fit_prototypes,
    load_prototypes,
    lpcam_map,
    lpcam_maps,
    lpcam_maps_batch,
    save_prototypes,
    select_prototypes,
)
from wsss.maps.methods import create_map_method, get_map_method
from wsss.maps.runner import run_maps
from wsss.models import save_model
from wsss.models.classifier import CAMClassifier

# --- the "bird" example of the LPCAM paper, §3.2 --------------------------------------------
# Three local regions with 3-d features whose dimensions stand for "head", "tail", "sky".
HEAD_F = [30.0, 3.0, 0.0]  # strongly "head"
TAIL_F = [4.0, 11.0, 1.0]  # mostly "tail", below the head's first dimension
SKY_F = [2.0, 1.0, 11.0]  # "sky"
# The classifier learnt from GAP features leans on the head dimension; a second class ("kite")
# likes sky, so sky is a plausible context of "bird" without being a bird feature.
W_BIRD = [4.0, 1.5, 0.0]
W_KITE = [0.0, 0.0, 0.8]


def _bird_images(n: int = 8, seed: int = 0) -> torch.Tensor:
    """``n`` bird "images", each a 1×3 feature map [head, tail, sky] with mild noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([HEAD_F, TAIL_F, SKY_F])
    noise = 1 + 0.05 * torch.randn(n, 3, 3, generator=g)
    return (base * noise).clamp_min(0).permute(0, 2, 1).unsqueeze(2)  # n×D×1×3


def test_bird_worked_example():
    features = torch.tensor([HEAD_F, TAIL_F, SKY_F])
    torch.testing.assert_close(features.mean(dim=0), torch.tensor([12.0, 5.0, 4.0]))
    weights = torch.tensor([W_BIRD, W_KITE])

    # CAM (Eq. 1): the tail gets about a quarter of the head's score.
    cam = torch.relu(features @ weights[0])
    cam = cam / cam.max()
    assert 0.2 < cam[1] < 0.3 and cam[2] < 0.1

    # Clustering over all bird images: CAM > τ = 0.1 keeps head and tail, sky is context.
    images = _bird_images()
    flat = images.flatten(2).permute(0, 2, 1)  # n×3 positions×D
    cams = torch.relu(flat @ weights[0])
    cams = cams / cams.amax(dim=1, keepdim=True)
    fg, ctx = flat[cams > 0.1], flat[cams < 0.1]
    assert len(fg) == 2 * len(images) and len(ctx) == len(images)
    # Reference update: centres are raw member means, in feature space for the classifier.
    fg_centers = cosine_kmeans(fg, 2, update="reference", seed=0).centers
    ctx_centers = cosine_kmeans(ctx, 1, update="reference", seed=0).centers

    selection = select_prototypes(fg_centers, ctx_centers, weights, 0)
    assert sorted(selection.foreground) == [0, 1] and not selection.fallback  # head and tail
    assert selection.context == [0]  # sky, 0.05 < P < 0.9
    protos = Prototypes(
        foreground=[fg_centers[selection.foreground], torch.zeros(0, 3)],
        context=[ctx_centers[selection.context], torch.zeros(0, 3)],
        classes=["bird", "kite"],
    )
    g = features.T.reshape(3, 1, 3)  # the example image: D×1×3
    lp = lpcam_map(g, protos.head([0]))[0, 0]
    lp = lp / lp.max()
    assert lp[0] > 0.8 and lp[1] > 0.8  # head and tail both near the top
    assert lp[2] == 0  # sky removed by the context prototype
    lpf = lpcam_map(g, protos.head([0], context=False))[0, 0]
    lpf = lpf / lpf.max()
    assert lpf[2] > 2 * cam[2]  # without the context term, sky keeps a similarity floor


def _loop_lpcam(features: torch.Tensor, protos: Prototypes, classes, context: bool):
    """Straightforward reference: one cosine map per prototype, averaged, then subtracted."""
    maps = []
    for n in classes:
        fg = protos.foreground[n]
        if len(fg) == 0:
            maps.append(torch.zeros(features.shape[1:]))
            continue
        sims = [F.cosine_similarity(features, q[:, None, None], dim=0, eps=1e-12) for q in fg]
        a = torch.stack(sims).mean(0)
        if context and len(protos.context[n]):
            bg = [
                F.cosine_similarity(features, b[:, None, None], dim=0, eps=1e-12)
                for b in protos.context[n]
            ]
            a = a - torch.stack(bg).mean(0)
        maps.append(torch.relu(a))
    return torch.stack(maps)


def _random_prototypes(d: int = 16, seed: int = 0) -> Prototypes:
    g = torch.Generator().manual_seed(seed)
    counts = [(3, 2), (1, 0), (0, 4), (5, 1)]  # class 1 has no context, class 2 no class proto
    return Prototypes(
        foreground=[torch.rand(f, d, generator=g) for f, _ in counts],
        context=[torch.rand(c, d, generator=g) for _, c in counts],
        classes=["a", "b", "c", "d"],
    )


@pytest.mark.parametrize("context", [True, False])
def test_matrix_product_equals_per_prototype_loop(context):
    protos = _random_prototypes()
    g = torch.Generator().manual_seed(1)
    features = torch.relu(torch.randn(16, 5, 7, generator=g))
    classes = [3, 0, 1, 2]
    fast = lpcam_map(features, protos.head(classes, context=context))
    slow = _loop_lpcam(features, protos, classes, context)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert (fast[3] == 0).all()  # class 2 (no class prototype) gives an empty map
    # A batch dimension gives the same maps per image.
    batched = lpcam_map(torch.stack([features, 2 * features]), protos.head(classes, context))
    torch.testing.assert_close(batched[1], fast, atol=1e-5, rtol=1e-5)


def test_relu_without_context_differs_from_the_reference_on_signed_features():
    protos = _random_prototypes()  # class 1 has no context prototype, classes 0 and 3 do
    g = torch.Generator().manual_seed(2)
    features = torch.randn(16, 5, 7, generator=g)  # signed, unlike post-ReLU ResNet features
    classes = [0, 1, 3]
    assert protos.has_context(classes).tolist() == [True, False, True]
    assert protos.has_context(classes, context=False).tolist() == [False, False, False]
    head = protos.head(classes)
    raw = torch.einsum("kd,dhw->khw", head, F.normalize(features, dim=0))
    fixed = lpcam_map(features, head)  # default: every row rectified
    reference = lpcam_map(features, head, protos.has_context(classes))
    torch.testing.assert_close(fixed, raw.clamp_min(0))
    torch.testing.assert_close(reference[[0, 2]], fixed[[0, 2]])  # with context: same
    torch.testing.assert_close(reference[1], raw[1])  # without: FG alone, no ReLU
    assert (reference[1] < 0).any() and not torch.equal(reference[1], fixed[1])
    # Non-negative features and prototypes (the reference's setting): the two agree.
    positive = features.abs()
    torch.testing.assert_close(
        lpcam_map(positive, head), lpcam_map(positive, head, protos.has_context(classes))
    )


def test_head_rejects_unknown_class():
    with pytest.raises(ConfigError, match="class index 7"):
        _random_prototypes().head([7])


def test_class_scores_softmax_over_classes():
    centers = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    weights = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    p = class_scores(centers, weights)
    expected = torch.softmax(torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), dim=1)
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2))


def test_selection_thresholds_and_fallback():
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Scores of class 0: sigmoid(d0 - d1) for centre (d0, d1).
    logits = torch.tensor([3.0, 1.0, -1.0, -4.0])  # P ≈ 0.953, 0.731, 0.269, 0.018
    centers = torch.stack([logits, torch.zeros(4)], dim=1)
    sel = select_prototypes(centers, centers, weights, 0, mu_f=0.9, mu_b=0.9, mu_low=0.05)
    assert sel.foreground == [0] and not sel.fallback
    assert sel.context == [1, 2]  # 0.953 ≥ mu_b and 0.018 ≤ mu_low are out
    # Nothing passes mu_f = 0.99: the best centre is taken instead of failing.
    sel = select_prototypes(centers[1:], centers[:0], weights, 0, mu_f=0.99)
    assert sel.foreground == [0] and sel.fallback and sel.context == []


# --- fitting on a tiny dataset -------------------------------------------------------------


class _TinyDataset(SegmentationDataset):
    """In-memory dataset: 64×64 images, one square object per image, part annotation."""

    def __init__(self, root: Path, n: int = 6, seed: int = 0, parts: bool = True):
        rng = np.random.default_rng(seed)
        self.root, self.split, self.classes = root, "train", ["cat", "dog"]
        self.ids = [f"img{i}" for i in range(n)]
        self._parts = parts
        self.images, self.masks, self.part_maps, self.labels = {}, {}, {}, {}
        for i, sample_id in enumerate(self.ids):
            cls = i % 2
            image = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
            mask = np.zeros((64, 64), np.uint8)
            part = np.full((64, 64), OTHER_BACKGROUND, np.uint8)
            part[:, 48:] = CONTEXT_PRESENT
            mask[16:48, 16:48] = cls + 1
            part[16:48, 16:48] = BODY_FAR
            part[16:48, 16:32] = BODY_NEAR
            part[16:32, 16:32] = HEAD
            image[mask > 0] = (200, 40, 40) if cls == 0 else (40, 40, 200)
            self.images[sample_id], self.masks[sample_id] = image, mask
            self.part_maps[sample_id] = part
            label = np.zeros(2, np.float32)
            label[cls] = 1
            self.labels[sample_id] = label

    def load_image(self, sample_id):
        return self.images[sample_id]

    def load_label(self, sample_id):
        return self.labels[sample_id]

    def load_mask(self, sample_id):
        return self.masks[sample_id]

    @property
    def has_parts(self):
        return self._parts

    def load_parts(self, sample_id):
        return self.part_maps[sample_id] if self._parts else None


def _write_cams(dataset: _TinyDataset, cam_dir: Path) -> None:
    """CAM files whose maps are 1 on the object and 0 elsewhere."""
    for sample_id in dataset.ids:
        mask = dataset.masks[sample_id]
        cls = int(mask.max())
        hr = (mask == cls).astype(np.float32)[None]
        save_class_maps(
            cam_dir / f"{sample_id}.npz", ClassMaps(keys=[cls], cam=hr[:, ::4, ::4], hr=hr)
        )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    dataset = _TinyDataset(root)
    _write_cams(dataset, root / "cams")
    torch.manual_seed(0)
    model = CAMClassifier("resnet10t", num_classes=2).eval()
    return dataset, root / "cams", model


def test_fit_counts_compositions_and_round_trip(tiny, tmp_path):
    dataset, cams, model = tiny
    config = PrototypeConfig(k=3, init="k-means++", update="normalized", stop="shift", tol=1e-6)
    protos = fit_prototypes(
        model,
        dataset,
        cams,
        config,
        checkpoint="ckpt.safetensors",
        progress=False,
        tags=part_tags(dataset),
    )
    # 64×64 input at output stride 16: a 4×4 grid; the object covers the middle 2×2 cells.
    for n in range(2):
        entry = protos.meta["per_class"][n]
        assert entry["images"] == 3
        assert entry["foreground"]["features"] == 3 * 4
        assert entry["context"]["features"] == 3 * 12
        assert 1 <= len(protos.foreground[n]) <= 3
        assert len(protos.foreground[n]) == entry["foreground"]["selected"]
        assert protos.foreground[n].shape[1] == model.feature_dim
    rows = prototype_composition(protos)
    assert rows, "part annotation present: every selected prototype has a composition"
    for row in rows:
        parts = ["head", "body_near", "body_far", "context_present", "context_absent"]
        total = sum(row[p] for p in [*parts, "background", "other_object", "ignore"])
        assert total == pytest.approx(1.0)
        assert row["body"] == pytest.approx(row["body_near"] + row["body_far"])
        if row["kind"] == "class":  # foreground cells lie on the object: head or body only
            assert row["head"] + row["body"] == pytest.approx(1.0)
        else:
            assert row["head"] + row["body"] == 0

    path = tmp_path / "protos.safetensors"
    save_prototypes(path, protos)
    loaded = load_prototypes(path)
    assert loaded.classes == protos.classes
    assert loaded.meta["checkpoint"] == "ckpt.safetensors"
    assert loaded.meta["config"]["k"] == 3
    for a, b in zip(
        loaded.foreground + loaded.context, protos.foreground + protos.context, strict=True
    ):
        torch.testing.assert_close(a, b)
    assert prototype_composition(loaded) == rows


def test_sampling_with_replacement_repeats_images(tiny):
    dataset, cams, model = tiny
    config = PrototypeConfig(k=2, per_class=5, replace=True, seed=3)
    protos = fit_prototypes(model, dataset, cams, config, progress=False)
    for entry in protos.meta["per_class"]:
        assert entry["images"] == 5
        assert entry["foreground"]["features"] == 5 * 4  # repeats count again
    one = fit_prototypes(model, dataset, cams, PrototypeConfig(k=2, per_class=1), progress=False)
    assert [e["foreground"]["features"] for e in one.meta["per_class"]] == [4, 4]


def test_feature_cap_keeps_a_subsample(tiny):
    dataset, cams, model = tiny
    config = PrototypeConfig(k=2, max_features=5, classes_per_pass=1)
    protos = fit_prototypes(model, dataset, cams, config, progress=False)
    for entry in protos.meta["per_class"]:
        assert entry["context"]["features"] == 36 and entry["context"]["clustered"] == 5
        assert sum(c["members"] for c in entry["context"]["clusters"]) == 5


def test_fallback_is_logged_and_recorded(tiny, caplog):
    dataset, cams, model = tiny
    with caplog.at_level(logging.WARNING, logger="wsss.maps.lpcam"):
        protos = fit_prototypes(
            model, dataset, cams, PrototypeConfig(k=2, mu_f=1.0), progress=False
        )
    assert all(e["fallback"] for e in protos.meta["per_class"])
    assert all(len(f) == 1 for f in protos.foreground)
    assert "mu_f" in caplog.text


def test_class_without_images_gets_no_prototype(tmp_path):
    dataset = _TinyDataset(tmp_path, n=2)
    dataset.classes = ["cat", "dog", "cow"]  # nobody is a cow
    for label in dataset.labels.values():
        label.resize(3, refcheck=False)
    _write_cams(dataset, tmp_path / "cams")
    model = CAMClassifier("resnet10t", num_classes=3)
    protos = fit_prototypes(
        model,
        dataset,
        tmp_path / "cams",
        PrototypeConfig(k=2),
        progress=False,
        tags=part_tags(dataset),
    )
    assert protos.meta["per_class"][2]["images"] == 0
    assert len(protos.foreground[2]) == 0 and len(protos.context[2]) == 0
    assert all(row["class"] != "cow" for row in prototype_composition(protos))
    assert (protos.head([2]) == 0).all()


def test_fit_errors(tiny, tmp_path):
    dataset, cams, model = tiny
    with pytest.raises(DataError, match="CAM folder not found"):
        fit_prototypes(model, dataset, tmp_path / "nope", progress=False)
    empty = tmp_path / "cams"
    save_class_maps(
        empty / "img0.npz", ClassMaps(keys=[2], cam=np.zeros((1, 16, 16)), hr=np.zeros((1, 64, 64)))
    )
    with pytest.raises(DataError, match="no map for class id 1"):
        fit_prototypes(model, dataset, empty, progress=False)
    with pytest.raises(ConfigError, match="3 classes"):
        fit_prototypes(CAMClassifier("resnet10t", num_classes=3), dataset, cams, progress=False)
    with pytest.raises(ConfigError):
        PrototypeConfig(mu_low=0.5, mu_b=0.4)


def test_load_rejects_foreign_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_prototypes(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a wsss prototype file"):
        load_prototypes(bad)


# --- maps ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tiny):
    dataset, cams, model = tiny
    protos = fit_prototypes(model, dataset, cams, PrototypeConfig(k=3, mu_f=0.5), progress=False)
    return dataset, model, protos


def test_single_scale_maps_match_a_direct_computation(fitted):
    dataset, model, protos = fitted
    image = dataset.load_image("img0")[:50, :60]  # not a multiple of 16
    maps = lpcam_maps(model, image, [1, 0], protos, scales=(1.0,), amp=False)
    assert maps.keys.tolist() == [1, 2]
    assert maps.cam.shape == (2, 13, 15) and maps.hr.shape == (2, 50, 60)

    x = normalize(to_tensor(image)).unsqueeze(0)
    with torch.no_grad():
        feats = model(torch.cat([x, x.flip(-1)]), with_features=True).features
    g = feats[0] + feats[1].flip(-1)  # features summed with their un-flipped flip
    a = lpcam_map(g, protos.head([0, 1])).unsqueeze(0)
    hr = F.interpolate(a, (64, 64), mode="bilinear", align_corners=False)[0, :, :50, :60]
    hr = hr / (hr.amax(dim=(1, 2), keepdim=True) + 1e-5)
    np.testing.assert_allclose(maps.hr, hr.numpy(), atol=1e-5)


def test_maps_are_normalised_drop_in_class_maps(fitted):
    dataset, model, protos = fitted
    images = [to_tensor(dataset.load_image(i)) for i in ("img0", "img1")]
    for context in (True, False):
        out = lpcam_maps_batch(
            model,
            images,
            [[0], [0, 1]],
            prototypes=protos,
            context=context,
            scales=(1.0, 0.5),
            amp=False,
        )
        assert [m.keys.tolist() for m in out] == [[1], [1, 2]]
        for m in out:
            assert m.hr.min() >= 0 and m.hr.max() <= 1 and m.cam.max() <= 1
            assert m.cam.shape[1:] == (16, 16) and m.hr.shape[1:] == (64, 64)
            peaks = m.hr.reshape(len(m.keys), -1).max(axis=1)
            assert np.all((peaks > 0.99) | (peaks == 0))
    with_ctx = lpcam_maps(model, images[1], [1], protos, amp=False)
    without = lpcam_maps(model, images[1], [1], protos, context=False, amp=False)
    assert len(protos.context[1]) > 0
    assert not np.allclose(with_ctx.hr, without.hr)


def test_relu_without_context_option_in_maps(fitted):
    dataset, model, protos = fitted
    image = dataset.load_image("img1")
    g = torch.Generator().manual_seed(0)
    signs = torch.where(torch.rand(protos.foreground[1].shape, generator=g) < 0.5, -1.0, 1.0)
    signed = Prototypes(  # class 1: signed class prototypes and no context prototype
        foreground=[protos.foreground[0], protos.foreground[1] * signs],
        context=[protos.context[0], protos.context[1][:0]],
        classes=protos.classes,
    )
    kwargs = dict(scales=(1.0,), amp=False)
    fixed = lpcam_maps(model, image, [0, 1], signed, **kwargs)
    reference = lpcam_maps(model, image, [0, 1], signed, relu_without_context=False, **kwargs)
    assert len(signed.context[0]) > 0
    np.testing.assert_allclose(reference.hr[0], fixed.hr[0], atol=1e-6)  # has context: same
    # Class 1's cosines with signed prototypes are negative here: rectified, its map is empty;
    # the reference keeps FG, and its max normalisation flips the all-negative map's sign.
    assert fixed.hr[1].max() == 0
    assert not np.allclose(reference.hr[1], fixed.hr[1]) and reference.hr[1].min() > 1


def test_runner_writes_lpcam_files(fitted, tmp_path):
    dataset, model, protos = fitted
    result = run_maps(
        "lpcam",
        model,
        dataset,
        {"lpcam": tmp_path / "lpcam"},
        scales=(1.0,),
        amp=False,
        method_options={"prototypes": protos},
        progress=False,
    )
    assert result.complete and result.written == len(dataset)
    maps = load_class_maps(tmp_path / "lpcam" / "img3.npz")
    assert maps.keys.tolist() == [2] and maps.hr.shape == (1, 64, 64)


def test_maps_reject_prototypes_of_another_model(fitted):
    dataset, model, _ = fitted
    narrow = Prototypes(
        foreground=[torch.rand(1, 8), torch.rand(1, 8)],
        context=[torch.zeros(0, 8), torch.zeros(0, 8)],
        classes=["cat", "dog"],
    )
    with pytest.raises(ConfigError, match="fit them with this checkpoint"):
        lpcam_maps(model, dataset.load_image("img0"), [0], narrow)


def _random_prototypes_for(model: CAMClassifier) -> Prototypes:
    d = model.feature_dim
    return Prototypes(
        foreground=[torch.randn(2, d), torch.randn(1, d), torch.randn(3, d)],
        context=[torch.randn(2, d), torch.zeros(0, d), torch.randn(1, d)],  # class 1: none
        classes=["a", "b", "c"],
    )


def test_lpcam_method_equals_two_separate_passes():
    torch.manual_seed(0)
    model = CAMClassifier("resnet10t", num_classes=3, output_stride=8).eval()
    prototypes = _random_prototypes_for(model)
    rng = np.random.default_rng(0)
    images = [
        torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
        for h, w in ((40, 48), (40, 48), (36, 52))
    ]
    classes = [[0, 2], [1], [0, 1, 2]]
    tta = {"scales": (1.0, 0.5), "device": torch.device("cpu"), "amp": True}
    method = create_map_method("lpcam", prototypes=prototypes)
    assert method.outputs == ("lpcam", "lpcam_f")
    with torch.inference_mode():
        pairs = method.compute(model, images, classes, max_pixels=None, **tta)
        full = lpcam_maps_batch(model, images, classes, prototypes=prototypes, **tta)
        free = lpcam_maps_batch(model, images, classes, prototypes=prototypes, context=False, **tta)
        only_f = method.restrict(["lpcam_f"]).compute(
            model, images, classes, max_pixels=None, **tta
        )
    for pair, a, b, f in zip(pairs, full, free, only_f, strict=True):
        assert list(f) == ["lpcam_f"]
        for mine, ref in ((pair["lpcam"], a), (pair["lpcam_f"], b), (f["lpcam_f"], b)):
            assert mine.keys.tolist() == ref.keys.tolist()
            np.testing.assert_allclose(mine.cam, ref.cam, atol=1e-5)
            np.testing.assert_allclose(mine.hr, ref.hr, atol=1e-5)
    # class 1 has no context prototype: its LPCAM is its LPCAM-F
    np.testing.assert_allclose(pairs[1]["lpcam"].hr, pairs[1]["lpcam_f"].hr, atol=1e-5)
    assert not np.allclose(pairs[0]["lpcam"].hr, pairs[0]["lpcam_f"].hr)


def test_lpcam_method_declares_and_checks_its_inputs(fitted):
    _, model, protos = fitted
    cls = get_map_method("lpcam")
    assert set(cls.files) == {"prototypes"} and cls.model_types == ("cam_classifier",)
    assert get_map_method("lpcam_f").outputs == ("lpcam_f",)
    with pytest.raises(ConfigError, match="--input prototypes=PATH"):
        create_map_method("lpcam")
    method = create_map_method("lpcam", prototypes=protos)
    method.check(model, ["cat", "dog"])
    with pytest.raises(ConfigError, match="fit them on this dataset"):
        method.check(model, ["cat", "cow"])
    assert method.settings() == {"prototypes": protos.digest()}
    moved = Prototypes([f + 1 for f in protos.foreground], protos.context, protos.classes)
    assert moved.digest() != protos.digest()


def test_runner_writes_lpcam_and_lpcam_f_from_one_pass(fitted, tmp_path):
    dataset, model, protos = fitted
    out = tmp_path / "maps"
    kwargs = {"scales": (1.0,), "amp": False, "progress": False}
    result = run_maps("lpcam", model, dataset, out, method_options={"prototypes": protos}, **kwargs)
    assert result.outputs == {"lpcam": out / "lpcam", "lpcam_f": out / "lpcam_f"}
    for name, context in (("lpcam", True), ("lpcam_f", False)):
        store = MapStore(out / name)
        assert store.is_complete() and store.manifest()["prototypes"] == protos.digest()
        direct = lpcam_maps(model, dataset.load_image("img3"), [1], protos, context, (1.0,))
        np.testing.assert_allclose(store.load("img3").hr, direct.hr, atol=1e-5)
    # Other prototypes into the same folders would mix maps: refused.
    other = Prototypes([f * 2 + 1 for f in protos.foreground], protos.context, protos.classes)
    with pytest.raises(ConfigError, match="prototypes"):
        run_maps("lpcam", model, dataset, out, method_options={"prototypes": other}, **kwargs)


def test_tags_must_cover_the_image(tiny):
    dataset, cams, model = tiny
    with pytest.raises(DataError, match=r"img0: tags must be an \(64, 64\) array"):
        fit_prototypes(
            model,
            dataset,
            cams,
            PrototypeConfig(k=2),
            progress=False,
            tags=lambda sample_id, n: np.zeros((8, 8), np.uint8),
        )


# --- command line --------------------------------------------------------------------------


def _write_voc(dataset: _TinyDataset, root: Path) -> None:
    """The tiny dataset in VOC layout (labels come from the masks)."""
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(dataset.ids) + "\n")
    (root / "classes.txt").write_text("\n".join(dataset.classes) + "\n")
    for sample_id in dataset.ids:
        write_image(root / "JPEGImages" / f"{sample_id}.png", dataset.images[sample_id])
        write_mask(root / "SegmentationClass" / f"{sample_id}.png", dataset.masks[sample_id])
        write_mask(root / "SegmentationPart" / f"{sample_id}.png", dataset.part_maps[sample_id])


def test_cli_fit_then_maps(tiny, tmp_path):
    dataset, _, model = tiny
    root = tmp_path / "voc"
    _write_voc(dataset, root)
    _write_cams(dataset, tmp_path / "cams")
    ckpt = save_model(tmp_path / "ckpt", model, {"classes": dataset.classes})
    protos = tmp_path / "protos.safetensors"
    common = ["--checkpoint", str(ckpt), "--data", str(root), "--split", "train"]
    runner = CliRunner()
    fit = ["lpcam", "fit", *common, "--cams", str(tmp_path / "cams"), "--out", str(protos)]
    result = runner.invoke(app, [*fit, "--k", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Prototype composition" in result.output  # the VOC reader found the part annotation
    loaded = load_prototypes(protos)
    assert loaded.meta["checkpoint"] == str(ckpt) and loaded.meta["config"]["k"] == 2

    maps = ["lpcam", "maps", *common, "--prototypes", str(protos), "--scales", "1.0"]
    for name, extra in (("lpcam", []), ("lpcam_f", ["--no-context"])):
        result = runner.invoke(app, [*maps, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        written = load_class_maps(tmp_path / name / "img1.npz")
        assert written.keys.tolist() == [2] and 0 <= written.hr.min() <= written.hr.max() <= 1

    # The generic command writes both kinds from one pass, equal to the shortcut's.
    generic = ["maps", "--method", "lpcam", "--input", f"prototypes={protos}", *common]
    both = tmp_path / "both"
    result = runner.invoke(app, [*generic, "--out", str(both), "--scales", "1.0", "--workers", "0"])
    assert result.exit_code == 0, result.output
    for name in ("lpcam", "lpcam_f"):
        assert MapStore(both / name).is_complete()
        one = load_class_maps(tmp_path / name / "img1.npz")
        np.testing.assert_allclose(load_class_maps(both / name / "img1.npz").hr, one.hr, atol=1e-5)

    result = runner.invoke(app, [*fit, "--set", "lpcam.update=mean"])
    assert isinstance(result.exception, ConfigError)


def test_classes_per_pass_only_bounds_memory(tiny):
    # The presets collect a few classes per pass over the images to bound host memory; the
    # prototypes must be those of one pass.
    dataset, cams, model = tiny
    one = fit_prototypes(model, dataset, cams, PrototypeConfig(k=2), progress=False)
    split = fit_prototypes(
        model, dataset, cams, PrototypeConfig(k=2, classes_per_pass=1), progress=False
    )
    for a, b in zip(one.foreground + one.context, split.foreground + split.context, strict=True):
        assert torch.equal(a, b)
