"""Random-walk pseudo masks over a split: boundary map, walk, background, mask file.

For every image of the split (IRN ``step/make_sem_seg_labels.py``, METHODS §7):

1. the boundary network's map (:meth:`~wsss.models.boundary.BoundaryNet.boundary`: padded,
   with its flip, stride 4);
2. the walk of the stride-4 class maps (:func:`~wsss.refine.random_walk.random_walk_maps`:
   seeds × (1 − boundary), ``T^(2^exp_times)`` by sparse products, ×4 up, max-normalised);
3. the mask (:func:`~wsss.refine.pseudo_masks.pseudo_mask`): background a constant plane
   (presets :data:`~wsss.refine.random_walk.RW_BACKGROUND`: ``irn`` 0.25, ``pnoc`` 0.30,
   ``lpcam`` 0.35) or ``1 − saliency`` from a saliency folder, optionally the label CRF.

Every labelled image gets a mask: one without a foreground label is all background (its maps
are not read). The work is sharded by rank under ``torchrun`` (rank r takes every world-th
image); a rerun skips the masks already written. The settings are recorded in the folder's
``masks.json`` before the first mask (a folder made with other settings is refused unless
``restart``), and marked complete once every image has its file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsss.data.base import SegmentationDataset
from wsss.data.transforms import normalize, to_tensor
from wsss.errors import ConfigError, DataError
from wsss.io.atomic import atomic_write_json
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore
from wsss.refine.crf import CRFParams, crf_params
from wsss.refine.pseudo_masks import label_keys, pseudo_mask, saliency_background
from wsss.refine.random_walk import RW_BACKGROUND, random_walk_maps
from wsss.runtime import distributed
from wsss.runtime.progress import progress_bar

__all__ = [
    "MASKS_MANIFEST",
    "WalkRun",
    "claim_mask_folder",
    "finish_mask_folder",
    "mask_folder_record",
    "run_random_walk",
    "rw_background",
]

MASKS_MANIFEST = "masks.json"


@dataclass
class WalkRun:
    """What :func:`run_random_walk` did on this process."""

    out_dir: Path
    written: int = 0
    skipped: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)


def rw_background(background: float | str) -> float:
    """A constant background score, or the value of a preset of :data:`RW_BACKGROUND`."""
    if isinstance(background, str):
        try:
            return RW_BACKGROUND[background]
        except KeyError:
            try:
                return float(background)
            except ValueError:
                known = ", ".join(sorted(RW_BACKGROUND))
                raise ConfigError(
                    f"unknown random-walk background {background!r}; give a number or one of "
                    f"{known}"
                ) from None
    return float(background)


def mask_folder_record(root: str | Path) -> dict[str, Any] | None:
    """The settings record ``masks.json`` of a mask folder, or None."""
    path = Path(root) / MASKS_MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: unreadable settings record ({e}); delete the folder") from e


def claim_mask_folder(out: MaskStore, settings: Mapping[str, Any], restart: bool = False) -> None:
    """Record ``settings`` in ``out/masks.json`` before any mask is written.

    Raises:
        ConfigError: The folder holds masks made with other settings (or masks without a
            record) and ``restart`` is false.
    """
    settings = json.loads(json.dumps(dict(settings)))  # the JSON form, compared as stored
    record = mask_folder_record(out.root)
    problem = None
    if record is not None:
        changed = [k for k in settings if k in record and record[k] != settings[k]]
        if changed:
            problem = (
                "holds masks made with other settings ("
                + ", ".join(f"{k}: {record[k]!r} → {settings[k]!r}" for k in changed)
                + ")"
            )
    elif out.ids():
        problem = f"holds {len(out.ids())} masks but no settings record ({MASKS_MANIFEST})"
    if problem is not None:
        if not restart:
            raise ConfigError(
                f"{out.root} {problem}; choose another output folder, delete it, or rerun with "
                "--restart to start over"
            )
        for sample_id in out.ids():
            out.path(sample_id).unlink()
    out.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.root / MASKS_MANIFEST, {**settings, "complete": False})


def finish_mask_folder(out: MaskStore, ids: Iterable[str]) -> bool:
    """Mark ``out`` complete if every id has its mask; return whether it is."""
    ids = list(ids)
    if not all(out.path(i).is_file() for i in ids):
        return False
    record = mask_folder_record(out.root) or {}
    atomic_write_json(out.root / MASKS_MANIFEST, {**record, "count": len(ids), "complete": True})
    return True


@torch.no_grad()
def run_random_walk(
    dataset: SegmentationDataset,
    maps: MapStore,
    model: torch.nn.Module,
    out: MaskStore,
    *,
    background: float | str | MapStore = "irn",
    saliency_threshold: float | None = None,
    crf: CRFParams | str | None = None,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
    pad_to: int | None = 512,
    device: str | torch.device = "cpu",
    maps_out: MapStore | None = None,
    ids: Iterable[str] | None = None,
    restart: bool = False,
    record: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> WalkRun:
    """Random-walk pseudo masks of ``dataset`` into ``out`` (see the module docstring).

    Args:
        dataset: Images and image-level labels.
        maps: Seeds: a folder of class maps (their stride-4 ``cam`` is walked).
        model: A trained :class:`~wsss.models.boundary.BoundaryNet` (in eval mode).
        out: Folder of the pseudo masks.
        background: Constant background score, a preset name of
            :data:`~wsss.refine.random_walk.RW_BACKGROUND`, or a saliency folder.
        saliency_threshold: With saliency: the 0/1 background ``saliency < threshold``
            instead of ``1 − saliency``.
        crf: Label-CRF parameters or preset (P-NOC: ``"rw"``), or None.
        radius, beta, exp_times: Of the walk (IRN: 5, 10, 8).
        pad_to: Pad images to this size for the boundary map (IRN: 512, its crop size).
        device: Where the network and the walk run.
        maps_out: Also store the walked maps here (``cam`` stride 4, ``hr`` full size), to
            threshold or sweep them like any map folder.
        ids: Images to do (default: all of ``dataset``).
        restart: Start over in a folder made with other settings.
        record: Extra settings to record (e.g. the checkpoint and seed folder).
        progress: Show a progress bar.

    Raises:
        ConfigError: Bad settings, or ``out`` made with other settings.
        DataError: A map or saliency file is missing or does not fit its image.
    """
    start = time.perf_counter()
    params = crf_params(crf) if isinstance(crf, str) else crf
    if isinstance(background, MapStore):
        bg_setting: Any = {"saliency": str(background.root.resolve())}
        if saliency_threshold is not None:
            bg_setting["threshold"] = float(saliency_threshold)
    else:
        background = rw_background(background)
        bg_setting = background
    settings = {
        **dict(record or {}),
        "seeds": str(maps.root.resolve()),
        "split": dataset.split,
        "background": bg_setting,
        "crf": None if params is None else vars(params),
        "radius": int(radius),
        "beta": float(beta),
        "exp_times": int(exp_times),
        "pad_to": pad_to,
    }
    info = distributed.dist_info()
    todo = list(dataset.ids if ids is None else ids)
    if info.is_main:
        claim_mask_folder(out, settings, restart)
        if maps_out is not None:
            maps_out.claim({**settings, "method": "random_walk", "classes": "gt"}, restart)
    distributed.barrier()
    device = torch.device(device)
    model = model.to(device).eval()
    run = WalkRun(out.root, settings=settings)
    opts = {
        "background": background,
        "saliency_threshold": saliency_threshold,
        "params": params,
        "radius": radius,
        "beta": beta,
        "exp_times": exp_times,
        "pad_to": pad_to,
    }
    mine = todo[info.rank :: info.world_size]
    bar = progress_bar(total=len(mine), desc="random walk", unit="img", enabled=progress)
    with bar:
        for sample_id in mine:
            bar.update()
            if out.has(sample_id) and (maps_out is None or maps_out.has(sample_id)):
                run.skipped += 1
                continue
            out.save(sample_id, _one(dataset, sample_id, maps, model, device, maps_out, opts))
            run.written += 1
    distributed.barrier()
    if info.is_main:
        finish_mask_folder(out, todo)
        if maps_out is not None and all(maps_out.has(i) for i in todo):
            maps_out.finish(len(todo))
    run.seconds = time.perf_counter() - start
    return run


def _one(
    dataset: SegmentationDataset,
    sample_id: str,
    maps: MapStore,
    model: torch.nn.Module,
    device: torch.device,
    maps_out: MapStore | None,
    opts: dict[str, Any],
) -> np.ndarray:
    image = dataset.load_image(sample_id)
    keys = label_keys(dataset.load_label(sample_id))
    shape = image.shape[:2]
    if len(keys) == 0:
        if maps_out is not None:
            empty = np.zeros((0, -(-shape[0] // 4), -(-shape[1] // 4)), np.float32)
            maps_out.save(sample_id, ClassMaps(keys, empty, np.zeros((0, *shape), np.float32)))
        return np.zeros(shape, np.uint8)
    seeds = maps.load(sample_id, expected_keys=keys)
    keep = np.isin(seeds.keys, keys)
    if seeds.hr.shape[1:] != shape:
        raise DataError(
            f"{maps.path(sample_id)}: maps are {seeds.hr.shape[1]}×{seeds.hr.shape[2]} but the "
            f"image is {shape[0]}×{shape[1]}",
            path=maps.path(sample_id),
        )
    seeds = ClassMaps(seeds.keys[keep], seeds.cam[keep], seeds.hr[keep])
    x = normalize(to_tensor(image)).to(device)
    boundary = model.boundary(x, pad_to=opts["pad_to"])
    walked = random_walk_maps(
        seeds,
        boundary,
        radius=opts["radius"],
        beta=opts["beta"],
        exp_times=opts["exp_times"],
        device=device,
    )
    if maps_out is not None:
        maps_out.save(sample_id, walked)
    background = opts["background"]
    if isinstance(background, MapStore):
        bg: float | np.ndarray = saliency_background(
            background.load(sample_id).hr, opts["saliency_threshold"]
        )
    else:
        bg = background
    return pseudo_mask(walked.hr, walked.keys, bg, image=image, crf=opts["params"])
