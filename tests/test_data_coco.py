"""COCO reader: category mapping, rasterised masks (polygons, crowd RLE), labels, cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from wsss.data import COCODataset, build_dataset
from wsss.data.image_io import read_mask, write_image, write_mask
from wsss.errors import ConfigError, DataError

SPLIT = "train2014"
H, W = 6, 8


def rect(x0, y0, x1, y1):
    """Polygon of the pixels x0..x1-1, y0..y1-1 (pycocotools' pixel-corner convention)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(binary):
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = binary.ravel(order="F").astype(np.int64)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.r_[0, changes, flat.size]
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"counts": counts, "size": list(binary.shape)}


def ann(ann_id, image_id, category_id, segmentation, crowd=0):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": crowd,
        "segmentation": segmentation,
        "bbox": [0, 0, 1, 1],
    }


def stem(i):
    return f"COCO_{SPLIT}_{i:012d}"


@pytest.fixture
def coco(tmp_path):
    """Three images; categories 18 'dog', 1 'person', 3 'car' (listed out of order)."""
    root = tmp_path / "coco"
    crowd = np.zeros((H, W), dtype=bool)
    crowd[3:6, 0:3] = True
    images = [{"id": i, "file_name": f"{stem(i)}.jpg", "height": H, "width": W} for i in (9, 2, 5)]
    annotations = [
        # image 2: a person, then a dog overlapping it (painted later), then a car crowd.
        ann(1, 2, 1, rect(1, 1, 5, 4)),
        ann(2, 2, 18, rect(3, 2, 7, 5)),
        ann(3, 2, 3, uncompressed_rle(crowd), crowd=1),
        # image 5: only a crowd of people, so no label.
        ann(4, 5, 1, uncompressed_rle(crowd), crowd=1),
        # image 9: a car and a box-only person (labelled, nothing to paint).
        ann(5, 9, 3, rect(0, 0, 2, 2)),
        ann(6, 9, 1, []),
    ]
    categories = [
        {"id": 18, "name": "dog", "supercategory": "animal"},
        {"id": 1, "name": "person", "supercategory": "person"},
        {"id": 3, "name": "car", "supercategory": "vehicle"},
    ]
    (root / "annotations").mkdir(parents=True)
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / f"instances_{SPLIT}.json").write_text(json.dumps(data))
    rng = np.random.default_rng(0)
    for img in images:
        write_image(root / SPLIT / img["file_name"], rng.integers(0, 256, (H, W, 3), np.uint8))
    return root, crowd


def expected_mask_2(crowd, crowd_value):
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[1:4, 1:5] = 1  # person: category 1, the first in id order
    mask[2:5, 3:7] = 3  # dog: category 18, the third; painted over the person
    if crowd_value is not None:
        mask[crowd] = crowd_value
    return mask


def test_classes_ids_and_empty_images(coco):
    root, _ = coco
    ds = COCODataset(root, SPLIT)
    assert ds.classes == ["person", "car", "dog"]  # sorted by category id: 1, 3, 18
    assert ds.ids == [stem(2), stem(5), stem(9)]  # sorted by image id, file stems
    assert ds.empty_ids == {stem(5)}


def test_labels_from_non_crowd_annotations(coco):
    ds = COCODataset(coco[0], SPLIT)
    np.testing.assert_array_equal(ds.load_label(stem(2)), [1, 0, 1])  # car only as crowd
    np.testing.assert_array_equal(ds.load_label(stem(5)), [0, 0, 0])
    np.testing.assert_array_equal(ds.load_label(stem(9)), [1, 1, 0])


def test_masks_painted_in_order_with_crowd_ignored(coco):
    root, crowd = coco
    ds = COCODataset(root, SPLIT)
    np.testing.assert_array_equal(ds.load_mask(stem(2)), expected_mask_2(crowd, 255))
    only_crowd = np.where(crowd, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(ds.load_mask(stem(5)), only_crowd)
    car = np.zeros((H, W), dtype=np.uint8)
    car[0:2, 0:2] = 2
    np.testing.assert_array_equal(ds[2].mask, car)


def test_crowd_as_background(coco):
    root, crowd = coco
    ds = build_dataset("coco", root, SPLIT, crowd="background")
    np.testing.assert_array_equal(ds.load_mask(stem(2)), expected_mask_2(crowd, None))
    np.testing.assert_array_equal(ds.load_mask(stem(5)), np.zeros((H, W), dtype=np.uint8))
    assert ds.cache_dir == root / "masks_cache" / f"{SPLIT}_crowd_background"
    with pytest.raises(ConfigError, match="crowd='skip'"):
        COCODataset(root, SPLIT, crowd="skip")


def test_masks_cached_as_palette_png(coco):
    root, crowd = coco
    ds = COCODataset(root, SPLIT)
    cached = root / "masks_cache" / SPLIT / f"{stem(2)}.png"
    assert not cached.exists()
    ds.load_mask(stem(2))
    with Image.open(cached) as img:
        assert img.mode == "P"
    np.testing.assert_array_equal(read_mask(cached), expected_mask_2(crowd, 255))
    # A second load reads the cache: a planted cache entry is what comes back.
    planted = np.ones((H, W), dtype=np.uint8)
    write_mask(cached, planted)
    np.testing.assert_array_equal(COCODataset(root, SPLIT).load_mask(stem(2)), planted)
    # A damaged entry is rebuilt.
    cached.write_bytes(b"garbage")
    np.testing.assert_array_equal(ds.load_mask(stem(2)), expected_mask_2(crowd, 255))


def test_custom_cache_dir(coco, tmp_path):
    ds = COCODataset(coco[0], SPLIT, cache_dir=tmp_path / "cache")
    ds.load_mask(stem(9))
    assert (tmp_path / "cache" / f"{stem(9)}.png").is_file()


def test_bad_inputs(coco):
    root, _ = coco
    ann_file = root / "annotations" / f"instances_{SPLIT}.json"
    (root / SPLIT / f"{stem(9)}.jpg").unlink()
    write_image(root / SPLIT / f"{stem(5)}.jpg", np.zeros((H + 1, W, 3), np.uint8))
    data = json.loads(ann_file.read_text())
    data["annotations"][0]["category_id"] = 99
    ann_file.write_text(json.dumps(data))
    ds = COCODataset(root, SPLIT)
    with pytest.raises(DataError, match=rf"{stem(9)}\.jpg: image not found"):
        ds.load_image(stem(9))
    with pytest.raises(DataError, match=r"annotated as 6×8 .* is 7×8") as info:
        ds.load_mask(stem(5))
    assert info.value.kind == "size mismatch"
    with pytest.raises(DataError, match=r"instances_train2014\.json: .*unknown category id 99"):
        ds.load_label(stem(2))
    with pytest.raises(DataError, match=r"instances_val2014\.json: annotation file .* not found"):
        COCODataset(root, "val2014")
    ann_file.write_text("{not json")
    with pytest.raises(DataError, match="not a COCO instances file"):
        COCODataset(root, SPLIT)


@pytest.mark.parametrize(
    ("file_names", "message"),
    [
        (["a/x.jpg", "b/x.jpg"], r"1 id\(s\) listed more than once .*'x'"),
        (["../x.jpg", "y.jpg"], r"file_name '\.\./x\.jpg' leaves the image folder"),
    ],
)
def test_file_names_that_collide_or_escape_are_refused(tmp_path, file_names, message):
    images = [
        {"id": i, "file_name": name, "height": H, "width": W} for i, name in enumerate(file_names)
    ]
    data = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / SPLIT).mkdir()
    (tmp_path / "annotations" / f"instances_{SPLIT}.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        COCODataset(tmp_path, SPLIT)
