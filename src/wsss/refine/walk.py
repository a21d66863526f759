"""Random-walk pseudo masks over a split: boundary map, walk, background, mask file.

For every image of the split (IRN ``step/make_sem_seg_labels.py``, METHODS §7):

1. the boundary network's map (:meth:`~wsss.models.boundary.BoundaryNet.boundary`: padded,
   with its flip, stride 4);
2. the walk of the stride-4 class maps, as :func:`~wsss.refine.random_walk.random_walk_maps`
   does it (seeds × (1 − boundary), ``T^(2^exp_times)`` by sparse products, ×4 up,
   max-normalised), several images at once (:func:`propagate_batch`, same result);
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.base import SegmentationDataset
from wsss.data.transforms import normalize, to_tensor
from wsss.errors import ConfigError, DataError
from wsss.io.atomic import atomic_write_json
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore
from wsss.refine.crf import CRFParams, crf_params
from wsss.refine.pseudo_masks import label_keys, pseudo_mask, saliency_background
from wsss.refine.random_walk import RW_BACKGROUND, transition_weights
from wsss.runtime import distributed
from wsss.runtime.progress import progress_bar

__all__ = [
    "MASKS_MANIFEST",
    "WalkRun",
    "claim_mask_folder",
    "finish_mask_folder",
    "mask_folder_record",
    "propagate_batch",
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
    batch_size: int = 16,
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
        batch_size: Images walked together (:func:`propagate_batch`; the result does not
            depend on it).
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
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
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
    error: Exception | None = None
    if info.is_main:
        try:
            claim_mask_folder(out, settings, restart)
            if maps_out is not None:
                maps_out.claim({**settings, "method": "random_walk", "classes": "gt"}, restart)
        except Exception as e:  # every rank stops, none waits for the others forever
            error = e
    distributed.raise_if_any_failed(
        error, info.enabled, "random walk: another rank failed (see its message)"
    )
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
    try:
        _walk_mine(dataset, maps, model, out, maps_out, mine, run, bar, device, batch_size, opts)
    except Exception as e:
        error = e
    distributed.raise_if_any_failed(
        error, info.enabled, "random walk: another rank failed (see its message)"
    )
    if info.is_main:
        finish_mask_folder(out, todo)
        if maps_out is not None and all(maps_out.has(i) for i in todo):
            maps_out.finish(len(todo))
    run.seconds = time.perf_counter() - start
    return run


def _walk_mine(
    dataset: SegmentationDataset,
    maps: MapStore,
    model: torch.nn.Module,
    out: MaskStore,
    maps_out: MapStore | None,
    mine: list[str],
    run: WalkRun,
    bar: Any,
    device: torch.device,
    batch_size: int,
    opts: dict[str, Any],
) -> None:
    radius, beta, exp_times = opts["radius"], opts["beta"], opts["exp_times"]
    with bar:
        pending = []
        for sample_id in mine:
            if out.has(sample_id) and (maps_out is None or maps_out.has(sample_id)):
                run.skipped += 1
                bar.update()
                continue
            pending.append(sample_id)
        for first in range(0, len(pending), batch_size):
            items = [
                _prepare(dataset, i, maps, model, device, opts)
                for i in pending[first : first + batch_size]
            ]
            todo_walk = [it for it in items if it.seeds is not None]
            walked = propagate_batch(
                [it.seeds for it in todo_walk],
                [it.boundary for it in todo_walk],
                radius=radius,
                beta=beta,
                exp_times=exp_times,
            )
            results = dict(zip([it.sample_id for it in todo_walk], walked, strict=True))
            for it in items:
                mask, walked_maps = _finish(it, results.get(it.sample_id), opts)
                if maps_out is not None:
                    maps_out.save(it.sample_id, walked_maps)
                out.save(it.sample_id, mask)  # last: a mask means the image is done
                run.written += 1
                bar.update()


@dataclass
class _Item:
    """One image on its way through the walk."""

    sample_id: str
    image: np.ndarray
    keys: np.ndarray
    seeds: torch.Tensor | None = None  # K×h×w, × (1 − boundary)
    boundary: torch.Tensor | None = None


def _prepare(
    dataset: SegmentationDataset,
    sample_id: str,
    maps: MapStore,
    model: torch.nn.Module,
    device: torch.device,
    opts: dict[str, Any],
) -> _Item:
    image = dataset.load_image(sample_id)
    item = _Item(sample_id, image, label_keys(dataset.load_label(sample_id)))
    if len(item.keys) == 0:
        return item
    shape = image.shape[:2]
    seeds = maps.load(sample_id, expected_keys=item.keys)
    if seeds.hr.shape[1:] != shape:
        raise DataError(
            f"{maps.path(sample_id)}: maps are {seeds.hr.shape[1]}×{seeds.hr.shape[2]} but the "
            f"image is {shape[0]}×{shape[1]}",
            path=maps.path(sample_id),
        )
    keep = np.isin(seeds.keys, item.keys)
    item.keys = seeds.keys[keep]
    cam = torch.as_tensor(seeds.cam[keep], device=device)
    x = normalize(to_tensor(image)).to(device)
    item.boundary = model.boundary(x, pad_to=opts["pad_to"]).float()
    if cam.shape[1:] != item.boundary.shape:
        raise DataError(
            f"{maps.path(sample_id)}: stride-4 maps are {tuple(cam.shape[1:])} but the boundary "
            f"map of the {shape[0]}×{shape[1]} image is {tuple(item.boundary.shape)}",
            path=maps.path(sample_id),
        )
    item.seeds = cam * (1 - item.boundary)  # boundary suppression (IRN)
    return item


def propagate_batch(
    seeds: Sequence[torch.Tensor],
    boundaries: Sequence[torch.Tensor],
    *,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
) -> list[torch.Tensor]:
    """:func:`~wsss.refine.random_walk.propagate` of several images at once.

    The images' transition weights are computed one by one, zero-padded to the largest grid
    and walked together: a weight towards a pixel off an image's own grid is 0, so padding
    never leaks into it and each result equals the single-image walk (same operations in
    the same order). Small grids are dominated by per-operation overhead; a batch shares it.

    Args:
        seeds: ``K_i×h_i×w_i`` maps (already × (1 − boundary)).
        boundaries: ``h_i×w_i`` boundary maps.
        radius, beta, exp_times: See :func:`~wsss.refine.random_walk.propagate`.

    Returns:
        The walked maps, one per image, in the seeds' dtype.
    """
    if len(seeds) != len(boundaries):
        raise DataError(f"{len(seeds)} seed maps but {len(boundaries)} boundary maps")
    if not seeds:
        return []
    if exp_times < 0:
        raise ConfigError(f"exp_times must be >= 0, got {exp_times}")
    dtype, device = seeds[0].dtype, seeds[0].device
    h = max(b.shape[0] for b in boundaries)
    w = max(b.shape[1] for b in boundaries)
    k = max(s.shape[0] for s in seeds)
    y = torch.zeros(len(seeds), k, h, w, dtype=dtype, device=device)
    weights = None
    offsets = None
    for i, (s, b) in enumerate(zip(seeds, boundaries, strict=True)):
        if s.ndim != 3 or s.shape[1:] != b.shape:
            raise DataError(f"seeds {tuple(s.shape)} do not fit boundary {tuple(b.shape)}")
        offsets, wt = transition_weights(b.to(device, torch.float64), radius, beta)
        if weights is None:
            weights = torch.zeros(len(seeds), len(offsets), h, w, dtype=dtype, device=device)
        weights[i, :, : b.shape[0], : b.shape[1]] = wt.to(dtype)
        y[i, : s.shape[0], : b.shape[0], : b.shape[1]] = s
    f = int(np.abs(offsets).max())
    order = [*range(1, len(offsets)), 0]  # the self term last, as propagate() does
    planes = [weights[:, o : o + 1] for o in range(len(offsets))]
    for _ in range(2**exp_times):
        padded = F.pad(y, (f, f, f, f))
        out = torch.zeros_like(y)
        for o in order:
            dy, dx = offsets[o]
            out.addcmul_(planes[o], padded[:, :, f + dy : f + dy + h, f + dx : f + dx + w])
        y = out
    return [
        y[i, : s.shape[0], : b.shape[0], : b.shape[1]]
        for i, (s, b) in enumerate(zip(seeds, boundaries, strict=True))
    ]


def _max_normalise(x: torch.Tensor) -> torch.Tensor:
    top = x.max() if x.numel() else x.new_zeros(())
    return x / top if top > 0 else torch.zeros_like(x)


def _finish(item: _Item, walked: torch.Tensor | None, opts: dict[str, Any]) -> tuple:
    """``(mask, walked ClassMaps)`` of one image (as :func:`random_walk_maps` upsamples)."""
    height, width = item.image.shape[:2]
    if walked is None:
        h4, w4 = -(-height // 4), -(-width // 4)
        empty = ClassMaps(
            item.keys, np.zeros((0, h4, w4), np.float32), np.zeros((0, height, width), np.float32)
        )
        return np.zeros((height, width), np.uint8), empty
    up = F.interpolate(walked[None], scale_factor=4, mode="bilinear", align_corners=False)
    up = up[0, :, :height, :width]
    maps = ClassMaps(
        item.keys, _max_normalise(walked).cpu().numpy(), _max_normalise(up).cpu().numpy()
    )
    background = opts["background"]
    if isinstance(background, MapStore):
        bg: float | np.ndarray = saliency_background(
            background.load(item.sample_id).hr, opts["saliency_threshold"]
        )
    else:
        bg = background
    mask = pseudo_mask(maps.hr, maps.keys, bg, image=item.image, crf=opts["params"])
    return mask, maps
