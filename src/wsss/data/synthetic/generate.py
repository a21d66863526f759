"""Writing the synthetic benchmark as a VOC-layout dataset."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from wsss.data import parts as P
from wsss.data.image_io import write_mask
from wsss.data.synthetic.config import SynthConfig
from wsss.data.synthetic.scene import SPLITS, SynthSample, render_sample, sample_id
from wsss.data.synthetic.stats import ImageRecord, SynthStats, summarize
from wsss.errors import ConfigError
from wsss.io.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text

META_FILE = "synth.json"
DATA_DIRS = ("JPEGImages", "SegmentationClass", P.PARTS_DIRNAME, "Annotations")
_FORMAT_VERSION = 1


def part_palette() -> np.ndarray:
    """``256×3`` colours for viewing part PNGs (codes from ``wsss.data.parts``)."""
    palette = np.zeros((256, 3), np.uint8)
    palette[P.HEAD] = (230, 30, 30)
    palette[P.BODY_NEAR] = (250, 160, 20)
    palette[P.BODY_FAR] = (110, 110, 110)
    palette[P.CONTEXT_PRESENT] = (20, 190, 230)
    palette[P.CONTEXT_ABSENT] = (120, 40, 200)
    palette[P.IGNORE] = (255, 255, 255)
    return palette


def generate_synthetic(
    root: str | os.PathLike,
    config: SynthConfig | None = None,
    progress: bool = True,
    *,
    force: bool = False,
    workers: int = 1,
) -> SynthStats:
    """Write the synthetic benchmark under ``root`` and return its statistics.

    Layout (read by the VOC reader unchanged): ``JPEGImages/{id}.jpg`` (or ``.png``),
    ``SegmentationClass/{id}.png``, ``SegmentationPart/{id}.png``, ``Annotations/{id}.xml``,
    ``ImageSets/Segmentation/{train,train_aug,val}.txt``, ``classes.txt`` and ``synth.json``
    (config and statistics, written last). Every file is written atomically and depends only
    on ``(config, split, index)``, so any number of workers gives the same bytes.

    A folder already holding this exact dataset is returned as is (a dataset interrupted
    halfway is completed); a non-empty folder holding anything else is refused unless
    ``force``, which rewrites every file and, if that folder was a synthetic dataset, removes
    its leftover images.

    Args:
        root: Output folder.
        config: Generator settings; defaults when None.
        progress: Show a progress bar.
        force: Overwrite a folder holding something else.
        workers: Processes rendering images (1 = in this process).

    Raises:
        ConfigError: ``root`` is not empty and holds something else, without ``force``.
    """
    root = Path(root)
    config = config or SynthConfig()
    ids = {s: [sample_id(s, i) for i in range(n)] for s, n in config.split_sizes().items()}
    was_synthetic, stored = _check_target(root, config, force)
    if stored is not None and not force and _files_complete(root, config, ids):
        return stored

    atomic_write_json(root / META_FILE, _meta(config, None))
    tasks = [(s, i) for s in SPLITS for i in range(config.split_sizes()[s])]
    write = partial(_write_sample, root, config)
    bar = tqdm(total=len(tasks), desc="synth", unit="img", disable=not progress)
    records: list[ImageRecord] = []
    if workers > 1 and len(tasks) > 1:
        chunk = max(1, min(64, len(tasks) // (4 * workers)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for record in pool.map(write, tasks, chunksize=chunk):
                records.append(record)
                bar.update()
    else:
        for task in tasks:
            records.append(write(task))
            bar.update()
    bar.close()

    sets = root / "ImageSets" / "Segmentation"
    for split, names in {**ids, "train_aug": ids["train"]}.items():
        atomic_write_text(sets / f"{split}.txt", "".join(f"{n}\n" for n in names))
    atomic_write_text(root / "classes.txt", "".join(f"{n}\n" for n in config.names))
    if force and was_synthetic:
        _remove_leftovers(root, config, ids)
    stats = summarize(records, config)
    atomic_write_json(root / META_FILE, _meta(config, stats))
    return stats


def load_synth_meta(root: str | os.PathLike) -> tuple[SynthConfig, SynthStats | None]:
    """Config and statistics (None if generation did not finish) stored in ``synth.json``."""
    path = Path(root) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        config = SynthConfig.from_dict(meta["config"])
        stats = SynthStats.from_dict(meta["stats"]) if meta.get("complete") else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a readable synthetic dataset description ({e})") from e
    return config, stats


def _meta(config: SynthConfig, stats: SynthStats | None) -> dict:
    meta = {"format": _FORMAT_VERSION, "complete": stats is not None, "config": config.to_dict()}
    if stats is not None:
        meta["stats"] = stats.to_dict()
    return meta


def _check_target(root: Path, config: SynthConfig, force: bool) -> tuple[bool, SynthStats | None]:
    """Whether ``root`` held a synthetic dataset, and its stats if it is this one, complete."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: exists and is not a folder")
    if not root.exists() or not any(root.iterdir()):
        return False, None
    if not (root / META_FILE).is_file():
        if force:
            return False, None
        raise ConfigError(
            f"{root}: folder is not empty and holds no synthetic dataset; "
            "choose an empty folder or pass --force to write into it"
        )
    try:
        old, stats = load_synth_meta(root)
    except ConfigError:
        if force:
            return True, None
        raise
    if old == config:
        return True, stats
    if force:
        return True, None
    new = config.to_dict()
    diff = ", ".join(f"{k} {v} → {new[k]}" for k, v in old.to_dict().items() if new[k] != v)
    raise ConfigError(
        f"{root}: holds a different synthetic dataset ({diff}); pass --force to replace it"
    )


def _files_complete(root: Path, config: SynthConfig, ids: dict[str, list[str]]) -> bool:
    suffixes = (config.image_format, "png", "png", "xml")
    return all(
        (root / d / f"{n}.{suffix}").is_file()
        for names in ids.values()
        for n in names
        for d, suffix in zip(DATA_DIRS, suffixes, strict=True)
    )


def _remove_leftovers(root: Path, config: SynthConfig, ids: dict[str, list[str]]) -> None:
    """Delete files of a previous synthetic dataset that this one did not write."""
    stems = {n for names in ids.values() for n in names}
    suffixes = (f".{config.image_format}", ".png", ".png", ".xml")
    for d, suffix in zip(DATA_DIRS, suffixes, strict=True):
        folder = root / d
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and (path.stem not in stems or path.suffix != suffix):
                    path.unlink()


def _write_sample(root: Path, config: SynthConfig, task: tuple[str, int]) -> ImageRecord:
    split, index = task
    sample = render_sample(config, split, index)
    _write_image(root / "JPEGImages" / f"{sample.id}.{config.image_format}", sample.image, config)
    write_mask(root / "SegmentationClass" / f"{sample.id}.png", sample.mask)
    write_mask(root / P.PARTS_DIRNAME / f"{sample.id}.png", sample.parts, part_palette())
    atomic_write_bytes(root / "Annotations" / f"{sample.id}.xml", voc_xml(sample, config))
    return ImageRecord.of(split, sample)


def _write_image(path: Path, image: np.ndarray, config: SynthConfig) -> None:
    img = Image.fromarray(image, mode="RGB")
    with atomic_path(path) as tmp:
        if config.image_format == "jpg":
            # 4:4:4 keeps the heads' colour edges and the faint body tint intact
            img.save(tmp, format="JPEG", quality=config.jpeg_quality, subsampling=0)
        else:
            img.save(tmp, format="PNG")


def voc_xml(sample: SynthSample, config: SynthConfig) -> bytes:
    """A VOC ``Annotations`` file: image size and one ``<object>`` per object, with its box."""
    h, w = sample.mask.shape
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "wsss-synthetic"
    ET.SubElement(ann, "filename").text = f"{sample.id}.{config.image_format}"
    size = ET.SubElement(ann, "size")
    for tag, value in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(ann, "segmented").text = "1"
    for obj in sample.objects:
        node = ET.SubElement(ann, "object")
        ET.SubElement(node, "name").text = config.names[obj.cls]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "0"
        box = ET.SubElement(node, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj.box, strict=True):
            ET.SubElement(box, tag).text = str(value + 1)  # VOC boxes are 1-based
    ET.indent(ann)
    return ET.tostring(ann, encoding="utf-8", xml_declaration=False) + b"\n"
