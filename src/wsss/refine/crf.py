"""Dense CRF (Krähenbühl & Koltun) through ``pydensecrf2``, with the parameter sets of the papers.

Two unaries: *label* unaries (a hard label map, ``gt_prob`` on its label and the rest spread
evenly, as IRN / Puzzle-CAM / P-NOC's ``crf_inference_label``) and *probability* unaries
(``−log p`` of a class-probability stack). Both add one Gaussian and one bilateral pairwise
term. Parameter sets are named presets (:data:`CRF_PRESETS`), each overridable::

    params = crf_params("seeds", iterations=5)
    refined = crf_labels(image, seed_labels, n_labels=3, params=params)

``pydensecrf2`` is the optional ``crf`` extra; without it every function raises a
:class:`~wsss.errors.ConfigError` that says how to install it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from types import ModuleType
from typing import Any

import numpy as np

from wsss.errors import ConfigError, DataError

__all__ = [
    "CRF_PRESETS",
    "CRFParams",
    "crf_labels",
    "crf_many",
    "crf_params",
    "crf_probs",
    "map_in_processes",
    "require_pydensecrf",
]


@dataclass(frozen=True)
class CRFParams:
    """One parameter set of the dense CRF.

    Attributes:
        iterations: Mean-field iterations.
        gt_prob: Confidence given to the label of a label unary (ignored by probability
            unaries, see ``scale`` of :func:`crf_probs`).
        gaussian_sxy: Spatial standard deviation of the smoothness kernel.
        gaussian_compat: Weight of the smoothness kernel (Potts compatibility).
        bilateral_sxy: Spatial standard deviation of the appearance kernel.
        bilateral_srgb: Colour standard deviation of the appearance kernel.
        bilateral_compat: Weight of the appearance kernel.
    """

    iterations: int = 10
    gt_prob: float = 0.7
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ConfigError(f"CRF iterations must be >= 0, got {self.iterations}")
        if not 0 < self.gt_prob < 1:
            raise ConfigError(f"CRF gt_prob must lie in (0, 1), got {self.gt_prob}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"CRF {name} must be > 0, got {getattr(self, name)}")


CRF_PRESETS: dict[str, CRFParams] = {
    # METHODS §4 / §7: seeds, pseudo-saliency and affinity labels (IRN's crf_inference_label).
    "seeds": CRFParams(),
    # METHODS §8: DeepLab-v2 post-processing of segmentation outputs.
    "deeplab": CRFParams(
        gaussian_sxy=1.0,
        gaussian_compat=3.0,
        bilateral_sxy=67.0,
        bilateral_srgb=3.0,
        bilateral_compat=4.0,
    ),
    # METHODS §7: P-NOC's label CRF on random-walk pseudo masks (runners/3-rw.sh).
    "rw": CRFParams(iterations=1, gt_prob=0.9),
}


def crf_params(preset: str | CRFParams = "seeds", **overrides: Any) -> CRFParams:
    """A preset of :data:`CRF_PRESETS` (or a given set) with some values replaced.

    Raises:
        ConfigError: Unknown preset or setting name.
    """
    if isinstance(preset, CRFParams):
        base = preset
    else:
        try:
            base = CRF_PRESETS[preset]
        except KeyError:
            known = ", ".join(sorted(CRF_PRESETS))
            raise ConfigError(f"unknown CRF preset {preset!r}; known: {known}") from None
    fields = {f.name for f in dataclasses.fields(CRFParams)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown CRF setting(s) {unknown}; known: {sorted(fields)}")
    return dataclasses.replace(base, **overrides)


def require_pydensecrf() -> ModuleType:
    """The ``pydensecrf.densecrf`` module.

    Raises:
        ConfigError: ``pydensecrf2`` is not installed.
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as e:
        raise ConfigError(
            "the dense CRF needs the optional 'crf' extra (pydensecrf2): "
            'pip install "wsss[crf]"' + f" ({e})"
        ) from None
    return dcrf


def _check_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != tuple(shape):
        raise DataError(f"CRF image must be H×W×3 with H×W = {tuple(shape)}, got {image.shape}")
    if image.dtype != np.uint8:
        raise DataError(f"CRF image must be uint8 RGB, got dtype {image.dtype}")
    return np.ascontiguousarray(image)


def _inference(
    image: np.ndarray, unary: np.ndarray, n_labels: int, params: CRFParams
) -> np.ndarray:
    dcrf = require_pydensecrf()
    h, w = image.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    d.addPairwiseBilateral(
        sxy=params.bilateral_sxy,
        srgb=params.bilateral_srgb,
        rgbim=image,
        compat=params.bilateral_compat,
    )
    q = d.inference(params.iterations)
    return np.asarray(q, dtype=np.float32).reshape(n_labels, h, w)


def label_unary(labels: np.ndarray, n_labels: int, gt_prob: float) -> np.ndarray:
    """``n_labels × (H·W)`` energies: ``−log gt_prob`` on the label, ``−log((1−gt_prob)/(n−1))``
    elsewhere (``pydensecrf.utils.unary_from_labels`` with ``zero_unsure=False``)."""
    flat = labels.reshape(-1)
    unary = np.full((n_labels, flat.size), -np.log((1.0 - gt_prob) / (n_labels - 1)), np.float32)
    unary[flat, np.arange(flat.size)] = -np.log(gt_prob)
    return unary


def crf_labels(
    image: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    params: CRFParams | str = "seeds",
) -> np.ndarray:
    """Refine a label map with a label-unary dense CRF; return the ``H×W`` argmax (``int64``).

    Args:
        image: RGB ``H×W×3`` ``uint8`` image.
        labels: ``H×W`` integer labels in ``0..n_labels−1`` (indices, not class ids).
        n_labels: Number of labels. With one label there is nothing to decide: the map is
            returned unchanged (pydensecrf would divide by zero).
        params: Parameter set or preset name.

    Raises:
        DataError: Shapes or label values that do not fit.
        ConfigError: pydensecrf2 is missing.
    """
    params = crf_params(params) if isinstance(params, str) else params
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"CRF labels must be an H×W integer map, got {labels.dtype} {labels.shape}")
    image = _check_image(image, labels.shape)
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise DataError(
            f"CRF labels must lie in 0..{n_labels - 1}, got [{labels.min()}, {labels.max()}]"
        )
    if n_labels < 2:
        require_pydensecrf()
        return labels.astype(np.int64)
    q = _inference(image, label_unary(labels, n_labels, params.gt_prob), n_labels, params)
    return q.argmax(axis=0)


def crf_probs(
    image: np.ndarray,
    probs: np.ndarray,
    params: CRFParams | str = "deeplab",
    scale: float | None = None,
    clip: float = 1e-5,
) -> np.ndarray:
    """Refine a class-probability stack with a dense CRF; return the ``C×H×W`` marginals.

    Unaries are ``−log(clip(p))`` (``pydensecrf.utils.unary_from_softmax``).

    Args:
        image: RGB ``H×W×3`` ``uint8`` image.
        probs: ``C×H×W`` probabilities (e.g. a softmax).
        params: Parameter set or preset name (``gt_prob`` is not used here).
        scale: When given, probabilities are first pulled towards uniform,
            ``scale·p + (1 − scale)/C`` (P-NOC's ``crf_inference`` passes its ``gt_prob``
            here); None uses ``p`` as is (DeepLab).
        clip: Smallest probability before the logarithm.
    """
    params = crf_params(params) if isinstance(params, str) else params
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3:
        raise DataError(f"CRF probabilities must be C×H×W, got shape {probs.shape}")
    image = _check_image(image, probs.shape[1:])
    n = probs.shape[0]
    if scale is not None:
        if not 0 < scale <= 1:
            raise ConfigError(f"CRF unary scale must lie in (0, 1], got {scale}")
        probs = scale * probs + (1 - scale) / n
    unary = -np.log(np.clip(probs, clip, 1.0)).reshape(n, -1)
    return _inference(image, unary, n, params)


def _crf_job(job: tuple) -> np.ndarray:
    kind, image, values, n_labels, params, scale = job
    if kind == "labels":
        return crf_labels(image, values, n_labels, params)
    return crf_probs(image, values, params, scale=scale)


def crf_many(
    images: Sequence[np.ndarray],
    values: Sequence[np.ndarray],
    n_labels: int | Sequence[int] | None = None,
    *,
    params: CRFParams | str = "seeds",
    unary: str = "labels",
    scale: float | None = None,
    workers: int = 0,
) -> list[np.ndarray]:
    """:func:`crf_labels` (or :func:`crf_probs`) over many images, optionally in processes.

    Args:
        images: RGB ``H×W×3`` ``uint8`` images.
        values: One label map (``unary="labels"``) or probability stack (``"probs"``) each.
        n_labels: Number of labels, one for all or one per image (label unaries only).
        params: Parameter set or preset name.
        unary: ``"labels"`` or ``"probs"``.
        scale: See :func:`crf_probs`.
        workers: Processes; 0 or 1 runs in this process. Results come back in input order
            and equal the loop's.
    """
    if unary not in ("labels", "probs"):
        raise ConfigError(f"unary must be 'labels' or 'probs', got {unary!r}")
    if len(images) != len(values):
        raise DataError(f"{len(images)} images but {len(values)} label maps")
    params = crf_params(params) if isinstance(params, str) else params
    if unary == "labels":
        if n_labels is None:
            raise ConfigError("crf_many with label unaries needs n_labels")
        counts = [n_labels] * len(images) if isinstance(n_labels, int) else list(n_labels)
        if len(counts) != len(images):
            raise DataError(f"{len(images)} images but {len(counts)} label counts")
    else:
        counts = [None] * len(images)
    require_pydensecrf()
    jobs = [
        (unary, img, v, n, params, scale) for img, v, n in zip(images, values, counts, strict=True)
    ]
    return list(map_in_processes(_crf_job, jobs, workers))


def map_in_processes(
    fn: Callable[[Any], Any], jobs: Iterable[Any], workers: int = 0, in_flight: int | None = None
) -> Iterator[Any]:
    """``fn`` over ``jobs`` in input order, in ``workers`` processes when ``workers > 1``.

    ``fn`` must be a module-level function (it is pickled). Jobs are submitted in slices of
    ``in_flight`` (default ``4·workers``) so a long job list never sits in memory at once.
    Processes are spawned, not forked: they must not inherit the parent's OpenMP or CUDA state.
    """
    workers = int(workers)
    if workers <= 1:
        yield from map(fn, jobs)
        return
    in_flight = in_flight or 4 * workers
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        batch: list[Any] = []
        for job in jobs:
            batch.append(job)
            if len(batch) == in_flight:
                yield from pool.map(fn, batch)
                batch = []
        if batch:
            yield from pool.map(fn, batch)


def default_workers() -> int:
    """A sensible process count for the process pools: the CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
