"""VOC reader: splits, labels from XML or masks, mask folders, parts, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsss.data import DATASETS, VOC_CLASSES, Sample, VOCDataset, build_dataset, voc_palette
from wsss.data.image_io import write_image, write_mask
from wsss.data.voc import check_ids
from wsss.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def write_xml(path, names):
    objects = "".join(
        f"<object><name> {n} </name><part><name>head</name></part></object>" for n in names
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>x.jpg</filename>{objects}</annotation>")


def write_split(root, split, ids):
    path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def add_image(root, sample_id, size=(6, 8), suffix=".jpg"):
    image = RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
    write_image(root / "JPEGImages" / f"{sample_id}{suffix}", image)
    return image


@pytest.fixture
def voc(tmp_path):
    """A VOC layout: train a (XML), b (.png image, no XML: labels from mask); val c; test d."""
    root = tmp_path / "VOC2012"
    masks = {
        "a": np.array([[0, 15, 15, 0], [255, 12, 12, 0], [0, 0, 0, 0]], dtype=np.uint8),
        "b": np.array([[0, 1, 1, 0], [0, 20, 255, 0], [0, 0, 0, 0]], dtype=np.uint8),
        "c": np.zeros((3, 4), dtype=np.uint8),
    }
    for sample_id, mask in masks.items():
        add_image(root, sample_id, size=(3, 4), suffix=".png" if sample_id == "b" else ".jpg")
        write_mask(root / "SegmentationClass" / f"{sample_id}.png", mask)
    add_image(root, "d", size=(5, 5))
    write_xml(root / "Annotations" / "a.xml", ["person", "dog", "person"])
    write_xml(root / "Annotations" / "c.xml", ["cat"])
    write_xml(root / "Annotations" / "d.xml", ["tvmonitor"])
    write_split(root, "train", ["a", "b"])
    write_split(root, "val", ["c"])
    write_split(root, "test", ["d"])
    return root, masks


def onehot(*names, classes=VOC_CLASSES):
    label = np.zeros(len(classes), dtype=np.float32)
    for n in names:
        label[classes.index(n)] = 1
    return label


def test_train_split_labels_masks_and_images(voc):
    root, masks = voc
    ds = VOCDataset(root, "train")
    assert ds.ids == ["a", "b"] and ds.classes == list(VOC_CLASSES)
    assert ds.class_names[0] == "background" and len(ds.class_names) == 21
    np.testing.assert_array_equal(ds.load_label("a"), onehot("person", "dog"))
    # b has no XML: its label is the set of classes in its mask (ids 1 and 20).
    np.testing.assert_array_equal(ds.load_label("b"), onehot("aeroplane", "tvmonitor"))
    np.testing.assert_array_equal(ds.load_mask("a"), masks["a"])
    sample = ds[1]
    assert isinstance(sample, Sample) and sample.id == "b"
    assert sample.image.shape == (3, 4, 3) and sample.image.dtype == np.uint8
    np.testing.assert_array_equal(sample.image, np.asarray(Image.open(root / "JPEGImages/b.png")))
    np.testing.assert_array_equal(sample.mask, masks["b"])
    assert not ds.has_parts and ds.load_parts("a") is None


def test_label_is_a_copy(voc):
    ds = VOCDataset(voc[0], "train")
    ds.load_label("a")[:] = 7
    np.testing.assert_array_equal(ds.load_label("a"), onehot("person", "dog"))


def test_test_split_has_no_masks(voc):
    ds = VOCDataset(voc[0], "test")
    assert ds.load_mask("d") is None
    np.testing.assert_array_equal(ds.load_label("d"), onehot("tvmonitor"))


def test_train_aug_prefers_sbd_masks_and_root_list(voc):
    root, masks = voc
    aug = np.array([[0, 8, 8, 0], [0, 8, 8, 0], [0, 0, 0, 0]], dtype=np.uint8)
    write_mask(root / "SegmentationClassAug" / "a.png", aug)
    (root / "train_aug.txt").write_text("/JPEGImages/a.jpg /SegmentationClassAug/a.png\nb\n")
    ds = VOCDataset(root, "train_aug")
    assert ds.ids == ["a", "b"]
    np.testing.assert_array_equal(ds.load_mask("a"), aug)
    np.testing.assert_array_equal(ds.load_mask("b"), masks["b"])  # not in SBD: falls back
    np.testing.assert_array_equal(VOCDataset(root, "train").load_mask("a"), masks["a"])


def test_rgb_coloured_masks_decoded(voc):
    root, masks = voc
    Image.fromarray(voc_palette()[masks["a"]], mode="RGB").save(root / "SegmentationClass/a.png")
    np.testing.assert_array_equal(VOCDataset(root, "train").load_mask("a"), masks["a"])


def test_masks_option(voc):
    root, _ = voc
    other = np.full((3, 4), 3, dtype=np.uint8)
    write_mask(root / "Pseudo" / "a.png", other)
    np.testing.assert_array_equal(VOCDataset(root, "train", masks="Pseudo").load_mask("a"), other)
    assert VOCDataset(root, "train", masks=None).load_mask("a") is None
    with pytest.raises(DataError, match=r"Nowhere: mask folder not found"):
        VOCDataset(root, "train", masks="Nowhere")


def test_classes_txt_and_classes_argument(voc):
    root, _ = voc
    names = [f"shape{i}" for i in range(20)]
    (root / "classes.txt").write_text("\n".join(names) + "\n\n")
    ds = VOCDataset(root, "train")
    assert ds.classes == names
    np.testing.assert_array_equal(ds.load_label("b"), onehot("shape0", "shape19", classes=names))
    with pytest.raises(DataError, match=r"a\.xml.*unknown class 'person'"):
        ds.load_label("a")
    assert VOCDataset(root, "train", classes=VOC_CLASSES).classes == list(VOC_CLASSES)
    with pytest.raises(DataError, match=r"duplicate"):
        VOCDataset(root, "train", classes=["x", "x"])
    with pytest.raises(DataError, match=r"background"):
        VOCDataset(root, "train", classes=["background", "x"])


def test_parts(voc):
    root, _ = voc
    parts = np.array([[0, 1, 2, 3], [4, 5, 255, 0], [0, 0, 0, 0]], dtype=np.uint8)
    write_mask(root / "SegmentationPart" / "a.png", parts)
    ds = VOCDataset(root, "train")
    assert ds.has_parts
    np.testing.assert_array_equal(ds.load_parts("a"), parts)
    with pytest.raises(DataError, match=r"b\.png: part annotation not found"):
        ds.load_parts("b")
    write_mask(root / "SegmentationPart" / "b.png", np.full((3, 4), 9, dtype=np.uint8))
    with pytest.raises(DataError, match=r"unknown part codes \[9\]"):
        ds.load_parts("b")


def test_unknown_xml_class_names_file_and_class(voc):
    root, _ = voc
    write_xml(root / "Annotations" / "a.xml", ["person", "unicorn"])
    with pytest.raises(DataError, match=r"a\.xml: 'a' has unknown class 'unicorn'") as info:
        VOCDataset(root, "train").load_label("a")
    assert info.value.kind == "unknown class"
    (root / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"malformed XML"):
        VOCDataset(root, "train").load_label("a")


def test_mask_size_mismatch_names_both_files_and_sizes(voc):
    root, _ = voc
    write_mask(root / "SegmentationClass" / "a.png", np.zeros((2, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"a\.png: mask is 2×4 .* image .*a\.jpg is 3×4") as info:
        VOCDataset(root, "train").load_mask("a")
    assert info.value.kind == "size mismatch"


def test_class_id_out_of_range(voc):
    root, _ = voc
    write_mask(root / "SegmentationClass" / "a.png", np.full((3, 4), 21, dtype=np.uint8))
    with pytest.raises(DataError, match=r"a\.png: mask has class ids \[21\] outside 0\.\.20"):
        VOCDataset(root, "train").load_mask("a")


def test_missing_image_and_missing_label(voc):
    root, _ = voc
    (root / "JPEGImages" / "a.jpg").unlink()
    ds = VOCDataset(root, "train")
    with pytest.raises(DataError, match=r"image of 'a' not found") as info:
        ds.load_image("a")
    assert info.value.kind == "missing image"
    ds.load_mask("a")  # the size check is skipped; the missing image is reported once
    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(DataError, match=r"b\.xml: no labels for 'b'") as info:
        ds.load_label("b")
    assert info.value.kind == "missing label"


def test_split_errors(voc):
    root, _ = voc
    with pytest.raises(DataError, match=r"split 'nope': no list file .*nope\.txt") as info:
        VOCDataset(root, "nope")
    assert info.value.kind == "missing split"
    write_split(root, "empty", [])
    with pytest.raises(DataError, match=r"empty\.txt: split 'empty' is empty") as info:
        VOCDataset(root, "empty")
    assert info.value.kind == "empty split"
    with pytest.raises(DataError, match=r"dataset root not found"):
        VOCDataset(root / "missing", "train")


def test_build_dataset_registry(voc):
    root, _ = voc
    assert {"voc", "coco", "folder"} <= set(DATASETS.names())
    ds = build_dataset("voc", root, "val", masks=None)
    assert isinstance(ds, VOCDataset) and ds.ids == ["c"] and ds.load_mask("c") is None
    with pytest.raises(ConfigError, match=r"unknown dataset format 'kitti'.*voc"):
        build_dataset("kitti", root, "val")
    with pytest.raises(ConfigError, match=r"'voc'.*crowd"):
        build_dataset("voc", root, "val", crowd="ignore")


def test_check_ids_accepts_plain_names_only(tmp_path):
    source = tmp_path / "train.txt"
    plain = ["2007_000032", "a b", "x.y", "ünï", "-a", ".hidden"]
    assert check_ids(plain, source, "train") == plain
    for bad in ["", ".", "..", "a/b", "/a", "a\\b", "a\0b"]:
        with pytest.raises(DataError, match=r"train\.txt: id .* is not a plain file name"):
            check_ids(["ok", bad], source, "train")
    with pytest.raises(DataError, match=r"train\.txt: .* more than once in split 'train': 'b'$"):
        check_ids(["a", "b", "c", "b"], source, "train")


def test_list_paths_give_their_stem_and_bom_is_ignored(voc):
    root, _ = voc
    path = root / "ImageSets" / "Segmentation" / "aug.txt"
    path.write_text("\ufeff/JPEGImages/a.jpg /SegmentationClassAug/a.png\nb\n", encoding="utf-8")
    assert VOCDataset(root, "aug").ids == ["a", "b"]
    (root / "classes.txt").write_text("\ufeffcat\ndog\n", encoding="utf-8")
    assert VOCDataset(root, "aug").classes == ["cat", "dog"]
