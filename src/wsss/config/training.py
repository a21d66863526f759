"""The training configuration: the model, the data and the loop (``wsss train``).

:class:`Config` is the root of a training run; its sections are also the first three sections
of the pipeline configuration, so one preset serves both. Loading, overrides and validation are
the generic ones of :mod:`wsss.config.core`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from wsss.config.core import config_to_dict, dataclass_from_dict, neutral
from wsss.io.atomic import atomic_write_text
from wsss.runtime.provenance import write_run_info

__all__ = [
    "AugmentConfig",
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "config_from_dict",
    "save_resolved",
]


@dataclass
class ModelConfig:
    """The CAM classifier.

    Attributes:
        backbone: Any timm model name with ``features_only`` support.
        num_classes: Foreground classes; None takes them from the training dataset.
        output_stride: 16 (layer4 dilated) or 8 (layer3 too).
        pretrained: Load ImageNet weights through timm (needs the network).
        weights: Local backbone weights file (safetensors/pth of the timm model); implies
            pretrained.
    """

    backbone: str = "resnet50"
    num_classes: int | None = None
    output_stride: int = 16
    pretrained: bool = False
    weights: str | None = None


@dataclass
class DataConfig:
    """Where the images come from and how training crops are made (METHODS.md §1).

    Attributes:
        root: Dataset root directory.
        format: Dataset reader name (``wsss.data.datasets``), e.g. ``voc``, ``coco``.
        split: Training split.
        val_split: Split for per-epoch validation, or None for none.
        crop_size: Square training crop; smaller images are padded (mean colour, mask 255).
        resize_long: The long side is resized to a random integer in ``[min, max]``.
        max_samples: Use only the first N training (and validation) images, for quick runs.
    """

    root: str | None = None
    format: str = "voc"
    split: str = "train_aug"
    val_split: str | None = "val"
    crop_size: int = 512
    resize_long: tuple[int, int] = (320, 640)
    max_samples: int | None = None


@dataclass
class AugmentConfig:
    """Optional augmentations on top of resize, flip and crop.

    Attributes:
        hflip: Random horizontal flip (p = 0.5).
        randaugment: torchvision RandAugment (2 ops, magnitude 10) plus a 16-px cutout.
        color_jitter: Colour jitter (0.3, 0.3, 0.3, 0.1).
        mixup_alpha: MixUp Beta(α, α) parameter; 0 disables.
        cutmix_alpha: CutMix Beta(α, α) parameter; 0 disables.
        mix_prob: Probability that a batch is mixed (MixUp or CutMix, chosen evenly when both).
    """

    hflip: bool = True
    randaugment: bool = False
    color_jitter: bool = False
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0


@dataclass
class TrainConfig:
    """The training loop (defaults follow the P-NOC code for VOC).

    ``num_workers``, ``device``, ``checkpoint_every``, ``log_every`` and ``tensorboard`` are
    result-neutral (:func:`~wsss.config.core.neutral`): a run may resume with other values, and
    a pipeline does not retrain when only they change.

    Attributes:
        task: Training task (``wsss.train.tasks.TASKS``): what is trained, on which targets.
            ``cam`` (a CAM classifier on image labels) runs the strategy ``strategy``;
            ``segmentation`` trains a DeepLab network on masks (``strategy_args.masks``).
        strategy: CAM training strategy (``wsss.train.tasks.cam.STRATEGIES``): ``vanilla``,
            ``puzzle``, ``occse``, ``poc`` or ``pnoc``.
        epochs: Passes over the training split.
        batch_size: Images per forward pass (per process under DDP).
        accumulate: Forward passes per optimiser step.
        accumulate_mode: ``mean`` averages the accumulated gradients; ``sum`` adds them like
            the reference code (its effective lr is ``accumulate`` times larger).
        lr: Base learning rate (pretrained weights); see ``lr_multipliers``.
        lr_multipliers: lr factors of the four parameter groups (pretrained weights,
            pretrained biases, new weights, new biases): 1, 2, 10, 20 in the papers.
        weight_decay: Weight decay of the weight groups (biases get none).
        bias_weight_decay: Also decay the bias groups (IRN's boundary network decays every
            parameter; the CAM and segmentation code decay weights only).
        norm_weight_group: Group of the norm layers' scales γ: ``weights`` (the P-NOC and
            Puzzle-CAM code: lr, weight decay) or ``biases`` (2·lr, no weight decay; the
            grouping of ``wsss`` before it followed the reference). Shifts β are biases.
        momentum: SGD momentum (the reference is effectively 0).
        nesterov: SGD with Nesterov momentum (needs ``momentum > 0``).
        optimizer: ``sgd`` (papers, pretrained backbones) or ``adamw`` (from-scratch demo).
        schedule: ``poly`` (``lr·(1−k/K)^power`` per optimiser step), ``onecycle`` or
            ``cosine`` (half a cosine to 0, after ``warmup_steps`` of linear warmup).
        poly_power: Exponent of the poly schedule.
        onecycle_pct: Fraction of the one-cycle schedule spent warming up.
        warmup_steps: Linear warmup steps of the ``cosine`` schedule (0: none).
        label_smoothing: ε of ``LS_ε(y) = (1−ε)·y + ε/2`` (image labels); the
            ``segmentation`` task uses it as torch's cross-entropy label smoothing.
        amp: Mixed precision on CUDA (ignored on CPU).
        amp_dtype: ``float16`` (with a gradient scaler) or ``bfloat16``.
        seed: Seed of python, numpy, torch and the data order.
        augment: Optional augmentations.
        num_workers: Data-loading worker processes (0: in the training process).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint_every: Also save the resumable state every N optimiser steps (0: per epoch).
        val_every: Validate every N epochs and after the last (0: never). Not result-neutral:
            a validation pass draws from torch's global generator (its ``DataLoader`` seed),
            which OC-CSE's class draw also uses.
        select_by: Validation metric choosing ``best`` (e.g. ``val/f1``), or None.
        log_every: Write a metrics line every N optimiser steps (and print it when stderr is
            not a terminal or progress bars are off).
        tensorboard: Also log scalars to TensorBoard in ``RUN/tensorboard`` (needs the
            ``tensorboard`` extra: ``pip install wsss[tensorboard]``).
        strategy_args: Task- or strategy-specific options, checked against its own
            dataclass (e.g. ``oc`` for OC-CSE).
    """

    task: str = "cam"
    strategy: str = "vanilla"
    epochs: int = 15
    batch_size: int = 32
    accumulate: int = 1
    accumulate_mode: Literal["mean", "sum"] = "mean"
    lr: float = 0.1
    lr_multipliers: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)
    weight_decay: float = 1e-4
    bias_weight_decay: bool = False
    norm_weight_group: Literal["weights", "biases"] = "weights"
    momentum: float = 0.0
    nesterov: bool = False
    optimizer: Literal["sgd", "adamw"] = "sgd"
    schedule: Literal["poly", "onecycle", "cosine"] = "poly"
    poly_power: float = 0.9
    onecycle_pct: float = 0.25
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = neutral(0)
    device: str = neutral("auto")
    checkpoint_every: int = neutral(0)
    val_every: int = 1
    select_by: str | None = None
    log_every: int = neutral(10)
    tensorboard: bool = neutral(False)
    strategy_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """The whole configuration of a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts, checking every key and type."""
    return dataclass_from_dict(Config, data)


def save_resolved(
    config: Config, run_dir: str | Path, extra: Mapping[str, Any] | None = None
) -> None:
    """Write ``config.yaml`` (loadable by :func:`load_config`) and ``run_info.json``.

    ``run_info.json`` records library versions, the platform, the seed and ``extra``
    (e.g. the command line, the world size).
    """
    run_dir = Path(run_dir)
    atomic_write_text(
        run_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False)
    )
    write_run_info(run_dir, seeds={"train": config.train.seed}, extra=extra)
