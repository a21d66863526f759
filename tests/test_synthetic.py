"""The synthetic benchmark: determinism, VOC layout, annotation consistency, statistics."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wsss.cli import app
from wsss.data import parts as P
from wsss.data.image_io import read_image
from wsss.data.synthetic import (
    SynthConfig,
    SynthStats,
    generate_synthetic,
    load_synth_meta,
    render_sample,
)
from wsss.data.synthetic.scene import partner
from wsss.data.synthetic.stats import ImageRecord, summarize
from wsss.data.voc import VOCDataset
from wsss.errors import ConfigError

SMALL = SynthConfig(seed=3, train=14, val=6)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _render(config: SynthConfig, n: int, split: str = "train") -> list:
    return [render_sample(config, split, i) for i in range(n)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, SynthStats]:
    root = tmp_path_factory.mktemp("synth")
    return root, generate_synthetic(root, SMALL, progress=False)


@pytest.fixture(scope="module")
def many() -> list:
    """Enough default-config images for rate estimates (about 3 s)."""
    return _render(SynthConfig(seed=11), 360)


def test_same_seed_same_bytes_for_any_worker_count(dataset, tmp_path):
    root, _ = dataset
    generate_synthetic(tmp_path / "again", SMALL, progress=False, workers=2)
    assert _files(tmp_path / "again") == _files(root)


def test_other_seed_other_images(dataset, tmp_path):
    root, _ = dataset
    other = SynthConfig(seed=4, train=SMALL.train, val=SMALL.val)
    generate_synthetic(tmp_path / "other", other, progress=False)
    images = [n for n in _files(root) if n.startswith("JPEGImages")]
    differ = [_files(root)[n] != _files(tmp_path / "other")[n] for n in images]
    assert all(differ)


def test_voc_layout_and_reader(dataset):
    root, stats = dataset
    assert (root / "classes.txt").read_text().split() == list(SMALL.names)
    train_aug = (root / "ImageSets/Segmentation/train_aug.txt").read_text()
    assert train_aug == (root / "ImageSets/Segmentation/train.txt").read_text()
    for split, n in SMALL.split_sizes().items():
        ds = VOCDataset(root, split)
        assert len(ds) == n == stats.images[split]
        assert ds.classes == list(SMALL.names) and ds.has_parts
        for i in range(len(ds)):
            s = ds[i]
            rendered = render_sample(SMALL, split, i)
            assert s.id == rendered.id
            np.testing.assert_array_equal(s.mask, rendered.mask)
            np.testing.assert_array_equal(ds.load_parts(s.id), rendered.parts)
            assert s.image.shape == (*rendered.mask.shape, 3)
            # JPEG (quality 95, no chroma subsampling) only perturbs the fine noise: the mean
            # body colour, which carries the faint class tint, survives to within a level
            image, original = s.image.astype(float), rendered.image.astype(float)
            assert np.abs(image - original).mean() < 3.5
            body = np.isin(rendered.parts, [P.BODY_NEAR, P.BODY_FAR])
            assert np.abs(image[body].mean(0) - original[body].mean(0)).max() < 1.5
            # labels (from the XML) are exactly the classes painted in the mask
            in_mask = np.unique(s.mask[(s.mask > 0) & (s.mask < 255)]) - 1
            np.testing.assert_array_equal(np.flatnonzero(s.label), in_mask)


def test_xml_lists_every_object_with_box_inside_image(dataset):
    root, _ = dataset
    sample = render_sample(SMALL, "train", 5)
    tree = ET.parse(root / "Annotations" / f"{sample.id}.xml").getroot()
    h, w = sample.mask.shape
    assert (int(tree.findtext("size/width")), int(tree.findtext("size/height"))) == (w, h)
    objects = tree.findall("object")
    assert [o.findtext("name") for o in objects] == [SMALL.names[o.cls] for o in sample.objects]
    for node, obj in zip(objects, sample.objects, strict=True):
        x0, y0, x1, y1 = (
            int(node.findtext(f"bndbox/{k}")) - 1 for k in ("xmin", "ymin", "xmax", "ymax")
        )
        assert 0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h
        # the head centre lies inside its object's box
        assert x0 <= obj.head[1] <= x1 + 1 and y0 <= obj.head[0] <= y1 + 1


def test_png_images_are_lossless(tmp_path):
    config = SynthConfig(seed=1, train=3, val=0, image_format="png")
    generate_synthetic(tmp_path, config, progress=False)
    for i in range(3):
        sample = render_sample(config, "train", i)
        np.testing.assert_array_equal(
            read_image(tmp_path / "JPEGImages" / f"{sample.id}.png"), sample.image
        )


def test_parts_agree_with_mask(many):
    c = SynthConfig().num_classes
    for s in many:
        obj = np.isin(s.parts, [P.HEAD, P.BODY_NEAR, P.BODY_FAR])
        assert np.all((s.mask[obj] >= 1) & (s.mask[obj] <= c))
        bg = np.isin(s.parts, [P.OTHER_BACKGROUND, P.CONTEXT_PRESENT, P.CONTEXT_ABSENT])
        assert np.all(s.mask[bg] == 0)
        np.testing.assert_array_equal(s.parts == P.IGNORE, s.mask == 255)
        assert np.all(obj | bg | (s.parts == P.IGNORE))


def test_every_labelled_object_keeps_its_whole_head(many):
    for s in many:
        for cls in s.labels:
            assert np.any((s.parts == P.HEAD) & (s.mask == cls + 1)), s.id
        for o in s.objects:
            # heads are never occluded: only the ignore band along their rim is lost
            r = o.head_radius
            assert math.pi * (r - 2) ** 2 <= o.head_px <= math.pi * (r + 1) ** 2, s.id


def test_ignore_band_is_every_pixel_near_another_instance(many):
    width = SynthConfig().ignore_width
    for s in many[:60]:
        # a pixel is in the band iff its (2w+1)² window holds more than one instance
        padded = np.pad(s.instances, width, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * width + 1,) * 2)
        mixed = windows.max(axis=(2, 3)) != windows.min(axis=(2, 3))
        np.testing.assert_array_equal(s.mask == 255, mixed)
        classes = np.array([0] + [o.cls + 1 for o in s.objects])[s.instances]
        np.testing.assert_array_equal(s.mask[~mixed], classes[~mixed])
        # so no two 8-neighbours outside the band carry different labels
        m = s.mask.astype(int)
        pairs = [(m[1:], m[:-1]), (m[:, 1:], m[:, :-1])]
        pairs += [(m[1:, 1:], m[:-1, :-1]), (m[1:, :-1], m[:-1, 1:])]
        for a, b in pairs:
            assert not np.any((a != b) & (a != 255) & (b != 255)), s.id


def test_near_and_far_split_at_near_distance():
    config = SynthConfig(seed=5, objects_probs=(1.0,), near_distance=12.0, context_classes=())
    for s in _render(config, 25):
        (o,) = s.objects
        yy, xx = np.mgrid[0 : s.mask.shape[0], 0 : s.mask.shape[1]]
        gap = np.hypot(yy - o.head[0], xx - o.head[1]) - o.head_radius
        assert gap[s.parts == P.BODY_NEAR].max() <= 12.0
        assert gap[s.parts == P.BODY_FAR].min() > 12.0
        assert o.near_px > 0 and o.far_px > 0
        assert o.reach == pytest.approx(gap[np.isin(s.parts, [P.BODY_NEAR, P.BODY_FAR])].max())


def test_context_rates_match_configuration(many):
    config = SynthConfig(seed=11)
    stats = summarize([ImageRecord.of("train", s) for s in many], config)
    for k in config.context_classes:
        name = config.names[k]
        n_with = stats.class_occurrence[name]
        n_without = len(many) - n_with
        tol_with = 4 * math.sqrt(config.context_rate * (1 - config.context_rate) / n_with)
        tol_without = 4 * math.sqrt(
            config.context_absent_rate * (1 - config.context_absent_rate) / n_without
        )
        assert abs(stats.context_with_class[name] - config.context_rate) < tol_with
        assert abs(stats.context_without_class[name] - config.context_absent_rate) < tol_without
    # the part map marks a drawn context as present or absent according to the labels
    for s in many:
        codes = set(np.unique(s.parts).tolist())
        drawn_with = any(s.context[k] and k in s.labels for k in config.context_classes)
        drawn_without = any(s.context[k] and k not in s.labels for k in config.context_classes)
        if not drawn_with:
            assert P.CONTEXT_PRESENT not in codes
        if not drawn_without:
            assert P.CONTEXT_ABSENT not in codes
        if drawn_with and not drawn_without:  # nothing can paint over a lone context
            assert P.CONTEXT_PRESENT in codes


def test_cooccurrence_matches_configuration():
    k = 6
    config = SynthConfig(seed=2, objects_probs=(0.0, 1.0), cooccurrence=0.7, context_classes=())
    stats = summarize([ImageRecord.of("train", s) for s in _render(config, 200)], config)
    assert stats.objects_per_image == pytest.approx(2.0, abs=0.02)
    # the 2nd object is the partner with prob. c + (1 - c) / K, the same class with (1 - c) / K
    expected_partner = 0.7 + 0.3 / k
    tol = 4 * math.sqrt(expected_partner * (1 - expected_partner) / 200)
    assert abs(stats.partner_rate - expected_partner) < tol
    assert abs(stats.multi_label_rate - (1 - 0.3 / k)) < tol


def test_partners_are_symmetric_and_differ_from_body_pairs():
    for k in (2, 5, 6, 7):
        for c in range(k):
            p = partner(c, k)
            if p is not None:
                assert partner(p, k) == c and p != c
                if k > 2:
                    assert p // 2 != c // 2  # a partner never shares the body texture
    assert partner(0, 5) is None and partner(0, 6) == 5


def test_stats_agree_with_part_maps_and_knobs(many):
    config = SynthConfig(seed=11)
    stats = summarize([ImageRecord.of("train", s) for s in many], config)
    ratios, near, body = [], 0, 0
    for s in many:
        for o in s.objects:
            ratios.append(o.head_px / max(o.near_px + o.far_px, 1))
        near += int((s.parts == P.BODY_NEAR).sum())
        body += int(np.isin(s.parts, [P.BODY_NEAR, P.BODY_FAR]).sum())
    assert stats.head_body_ratio == pytest.approx(np.mean(ratios), abs=1e-4)
    assert stats.near_share == pytest.approx(near / body, abs=1e-4)
    lo, hi = config.size_min, config.size_max
    assert lo <= stats.height_range[0] <= stats.height_range[1] <= hi
    assert stats.height_range[1] - stats.height_range[0] > (hi - lo) // 2
    # bodies reach several stride-8 feature cells beyond their head
    assert stats.body_reach["p50"] >= 5 * 8
    assert stats.body_reach["max"] <= config.body_length[1] + config.body_width[1]
    # the head-size knob moves the head/body ratio by roughly the squared size ratio
    small = SynthConfig(seed=11, head_size=(8, 10))
    large = SynthConfig(seed=11, head_size=(18, 22))
    r_small = summarize([ImageRecord.of("train", s) for s in _render(small, 40)], small)
    r_large = summarize([ImageRecord.of("train", s) for s in _render(large, 40)], large)
    assert r_large.head_body_ratio > 3 * r_small.head_body_ratio


def test_class_scales_make_size_groups():
    config = SynthConfig(seed=6, class_scales=(0.6, 1.0, 1.0, 1.0, 1.0, 1.4), context_classes=())
    sizes: dict[int, list[float]] = {0: [], 5: []}
    for s in _render(config, 80):
        for o in s.objects:
            if o.cls in sizes:
                sizes[o.cls].append(o.area_px / s.mask.size)
    assert len(sizes[0]) > 5 and len(sizes[5]) > 5
    # area grows with the square of the scale; fitting long bodies into the image caps it
    assert np.mean(sizes[5]) > 2.5 * np.mean(sizes[0])


def test_body_tint_moves_body_colour_towards_class_colour():
    base = SynthConfig(seed=8, objects_probs=(1.0,), context_classes=(), body_tint=0.0)
    tinted = SynthConfig(seed=8, objects_probs=(1.0,), context_classes=(), body_tint=0.5)
    for a, b in zip(_render(base, 5), _render(tinted, 5), strict=True):
        body = np.isin(a.parts, [P.BODY_NEAR, P.BODY_FAR])
        np.testing.assert_array_equal(a.mask, b.mask)  # same geometry, only colour changes
        colour = b.image[a.parts == P.HEAD].mean(0)  # head ≈ class colour (+ symbol)
        diff = b.image[body].astype(float).mean(0) - a.image[body].astype(float).mean(0)
        assert np.dot(diff, colour - a.image[body].mean(0)) > 0


def test_same_config_is_kept_and_completed(dataset, tmp_path):
    root = tmp_path / "d"
    stats = generate_synthetic(root, SMALL, progress=False)
    image = root / "JPEGImages" / "train_000002.jpg"
    before = image.read_bytes()
    image.unlink()
    again = generate_synthetic(root, SMALL, progress=False)
    assert image.read_bytes() == before and again == stats
    assert load_synth_meta(root) == (SMALL, stats)
    image.write_bytes(b"damaged")  # complete but damaged: only force rewrites it
    generate_synthetic(root, SMALL, progress=False)
    assert image.read_bytes() == b"damaged"
    generate_synthetic(root, SMALL, progress=False, force=True)
    assert image.read_bytes() == before


def test_refuses_to_overwrite_other_data_without_force(tmp_path):
    generate_synthetic(tmp_path / "a", SynthConfig(seed=0, train=6, val=2), progress=False)
    smaller = SynthConfig(seed=1, train=3, val=1)
    with pytest.raises(ConfigError, match=r"seed 0 → 1"):
        generate_synthetic(tmp_path / "a", smaller, progress=False)
    generate_synthetic(tmp_path / "a", smaller, force=True, progress=False)
    assert len(list((tmp_path / "a" / "JPEGImages").iterdir())) == 4  # leftovers removed
    meta = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert meta["complete"] and meta["config"]["seed"] == 1

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        generate_synthetic(tmp_path / "b", smaller, progress=False)
    generate_synthetic(tmp_path / "b", smaller, force=True, progress=False)
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"  # foreign files are kept


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("size_min", 40),
        ("num_classes", 0),
        ("class_names", ("a", "a", "b", "c", "d", "e")),
        ("context_classes", (0, 9)),
        ("body_tint", 1.5),
        ("head_size", (20, 10)),
        ("objects_probs", (0.0, 0.0)),
        ("class_scales", (1.0, 0.1, 1.0, 1.0, 1.0, 1.0)),
        ("image_format", "gif"),
    ],
)
def test_bad_config_names_the_setting(knob, value):
    with pytest.raises(ConfigError, match=knob):
        SynthConfig(**{knob: value})


def test_config_round_trips_through_json():
    config = SynthConfig(seed=9, class_names=("a", "b", "c"), num_classes=3, context_classes=(1,))
    assert SynthConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown"):
        SynthConfig.from_dict({"sed": 1})


def test_cli_writes_dataset_and_refuses_other_data(tmp_path):
    runner = CliRunner()
    args = ["synth", str(tmp_path / "d"), "--train", "4", "--val", "2", "--workers", "1"]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "train 4, val 2" in result.output and "context with" in result.output
    assert len(VOCDataset(tmp_path / "d", "val")) == 2
    result = runner.invoke(app, [*args, "--seed", "1"])
    assert isinstance(result.exception, ConfigError)
    result = runner.invoke(app, [*args, "--seed", "1", "--force", "--no-progress"])
    assert result.exit_code == 0, result.output
