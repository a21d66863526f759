"""The segmentation end of a run: train on pseudo masks, predict a split, evaluate (METHODS.md §8).

Three stages, built from the pipeline's ``segmentation`` section (:class:`SegmentationSection`)
by :func:`segmentation_stages`::

    train_segmentation     the network, trained on a mask folder   RUN/train/segmentation
    predict_segmentation   a mask per image of the split           RUN/segmentation/<split>
    eval_segmentation      the masks against the ground truth      results.json["segmentation"]

Training is a :class:`~wsss.pipeline.stages.TrainStage` of the ``segmentation`` task (DDP under
``torchrun``, resumable); prediction is sharded by rank and resumes image by image
(:func:`wsss.maps.segment.segment_split`); the evaluation entry carries the usual scores, the
per-class table and the confusion matrix (``kind: segmentation``) for the report.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss.config import Config, DataConfig, ModelConfig, TrainConfig, result_params
from wsss.maps.segment import SegmentConfig
from wsss.pipeline.core import Stage
from wsss.pipeline.rundir import RunDir, results_entry
from wsss.pipeline.stages import DataSpec, TrainStage

__all__ = [
    "SegmentationEvalStage",
    "SegmentationSection",
    "SegmentationStage",
    "segmentation_stages",
]

RESULT_KEY = "segmentation"


def _paper_model() -> ModelConfig:
    return ModelConfig(backbone="resnest269e", output_stride=16, pretrained=True)


def _paper_train() -> TrainConfig:
    """The P-NOC code's DeepLabV3+ training (the ``voc12-deeplabv3plus`` preset)."""
    return TrainConfig(
        task="segmentation",
        epochs=50,
        batch_size=32,
        optimizer="sgd",
        momentum=0.9,
        nesterov=True,
        lr=0.007,
        lr_multipliers=(1.0, 2.0, 10.0, 20.0),
        weight_decay=4e-5,
        schedule="poly",
        poly_power=0.9,
        select_by="val/miou",
        strategy_args={"architecture": "deeplabv3plus"},
    )


@dataclass
class SegmentationSection:
    """The segmentation network of a pipeline run (section ``segmentation``).

    Defaults are the P-NOC code's DeepLabV3+ recipe (``voc12-deeplabv3plus``); the demo
    preset shrinks them. The dataset (``data.root``, ``data.format``, ``data.split``) is the
    pipeline's; the masks come from the pseudo-mask stage.

    Attributes:
        model: Encoder of the network (``segmentation.model.backbone`` ...).
        train: Training loop of the ``segmentation`` task (``segmentation.train.epochs`` ...;
            ``segmentation.train.strategy_args.architecture``: ``deeplabv3plus`` or
            ``deeplabv2``).
        crop_size: Training crop.
        resize_long: Training long-side range.
        split: Split predicted and evaluated (its ground truth also validates training).
        infer: Inference settings (``segmentation.infer.scales``, ``.crf``, ``.probs`` ...).
    """

    model: ModelConfig = field(default_factory=_paper_model)
    train: TrainConfig = field(default_factory=_paper_train)
    crop_size: int = 512
    resize_long: tuple[int, int] = (256, 1024)
    split: str = "val"
    infer: SegmentConfig = field(default_factory=SegmentConfig)

    def training_config(self, data: DataConfig, masks: str | Path | None) -> Config:
        """The training :class:`~wsss.config.Config` on ``data``'s dataset and ``masks``."""
        train = dataclasses.replace(
            self.train,
            task="segmentation",
            strategy_args={
                **self.train.strategy_args,
                "masks": None if masks is None else str(Path(masks).expanduser().resolve()),
            },
        )
        data = dataclasses.replace(
            data, crop_size=self.crop_size, resize_long=self.resize_long, val_split=self.split
        )
        return Config(model=self.model, data=data, train=train)


class SegmentationStage(Stage):
    """Predict a mask per image of a split with the network trained by ``train_<network>``.

    Args:
        data: The split.
        infer: Inference settings.
        network: Name of the trained network in the run (``run.checkpoint(network)``).
        requires: Upstream stages (default: ``train_<network>``).
        progress: Show a progress bar.
    """

    name = "predict_segmentation"
    distributed = True  # segment_split shards the images by rank

    def __init__(
        self,
        data: DataSpec,
        infer: SegmentConfig | None = None,
        network: str = "segmentation",
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
    ) -> None:
        self.data, self.infer, self.network = data, infer or SegmentConfig(), network
        self.requires = requires if requires is not None else (f"train_{network}",)
        self.progress = progress

    @staticmethod
    def folder(run: RunDir, split: str) -> Path:
        """Where the masks of ``split`` go."""
        return run.path / "segmentation" / split

    def outputs(self, run: RunDir) -> list[Path]:
        return [self.folder(run, self.data.split)]

    def params(self) -> Mapping[str, Any]:
        # Without the neutral settings (device, workers, batch size): they do not change masks.
        infer = result_params(self.infer)
        return {"network": self.network, "data": self.data.as_dict(), **infer}

    def is_complete(self, run: RunDir) -> bool:
        from wsss.io.masks import MaskStore

        return MaskStore(self.folder(run, self.data.split)).is_complete()

    def reset(self, run: RunDir) -> None:
        folder = self.folder(run, self.data.split)
        if run.contains(folder) and folder.is_dir():
            shutil.rmtree(folder)

    def run(self, run: RunDir) -> None:
        from wsss.maps.segment import segment_split
        from wsss.models import load_model
        from wsss.runtime import dist_info, resolve_device

        device = resolve_device(self.infer.device, dist_info().local_rank)
        checkpoint = run.checkpoint(self.network)
        dataset = self.data.build()
        model, _ = load_model(checkpoint, map_location=device, classes=dataset.classes)
        segment_split(
            model,
            dataset,
            self.folder(run, self.data.split),
            scales=self.infer.scales,
            flip=self.infer.flip,
            crf=self.infer.crf,
            save_probs=self.infer.probs,
            device=device,
            amp=self.infer.amp,
            checkpoint=checkpoint,
            batch_size=self.infer.batch_size,
            num_workers=self.infer.workers,
            progress=self.progress,
        )


class SegmentationEvalStage(Stage):
    """Evaluate the predicted masks of a split; writes ``results.json[key]``.

    The entry is :func:`wsss.evaluate.evaluate`'s (mIoU over every class with the
    background, foreground FP/FN/precision/recall, per-class scores, the part diagnostics on
    the synthetic benchmark) plus ``kind: segmentation`` and ``confusion`` (``N×N`` pixel
    counts, rows ground truth) for the report.

    Args:
        data: The split with ground truth.
        key: Results key (default ``segmentation``).
        requires: Upstream stages (default ``predict_segmentation``).
        progress: Show a progress bar.
    """

    name = "eval_segmentation"

    def __init__(
        self,
        data: DataSpec,
        key: str = RESULT_KEY,
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
    ) -> None:
        self.data, self.key, self.progress = data, key, progress
        self.requires = requires if requires is not None else (SegmentationStage.name,)

    def params(self) -> Mapping[str, Any]:
        return {"data": self.data.as_dict(), "key": self.key}

    def is_complete(self, run: RunDir) -> bool:
        return self.key in run.results()

    def reset(self, run: RunDir) -> None:
        pass  # the entry is replaced when the stage runs

    def run(self, run: RunDir) -> None:
        from wsss.evaluate import evaluate

        dataset = self.data.build()
        folder = SegmentationStage.folder(run, self.data.split)
        result = evaluate(dataset, masks_dir=folder, progress=self.progress)
        entry = results_entry(result)
        entry["kind"] = "segmentation"
        entry["confusion"] = _confusion(dataset, folder).tolist()
        run.update_results({self.key: entry})


def _confusion(dataset: Any, folder: Path) -> Any:
    """``N×N`` pixel counts of the masks in ``folder`` against the ground truth."""
    from wsss.evaluate.confusion import ConfusionMatrix
    from wsss.io.masks import MaskStore

    store, matrix = MaskStore(folder), ConfusionMatrix(dataset.num_classes + 1)
    for sample_id in dataset.ids:
        matrix.update(dataset.load_mask(sample_id), store.load(sample_id))
    return matrix.matrix


def segmentation_stages(
    section: SegmentationSection,
    data: DataConfig,
    masks: str | Path | None,
    *,
    requires: tuple[str, ...] | None = None,
    progress: bool = True,
) -> list[Stage]:
    """``train_segmentation``, ``predict_segmentation`` and ``eval_segmentation``.

    Args:
        section: The pipeline's ``segmentation`` section.
        data: The pipeline's data settings (``root`` set; ``format`` and ``split`` used).
        masks: Folder of the training masks (the pseudo-mask stage's output); None trains on
            the training split's ground truth (an upper bound).
        requires: Stages the training reads (e.g. the pseudo-mask stage).
        progress: Show progress bars.
    """
    if data.root is None:
        from wsss.errors import ConfigError

        raise ConfigError("data.root is not set: the segmentation stages need the dataset")
    config = section.training_config(data, masks)
    split = DataSpec(Path(data.root), section.split, data.format)
    return [
        TrainStage("segmentation", config, requires=requires, progress=progress),
        SegmentationStage(split, section.infer, progress=progress),
        SegmentationEvalStage(split, progress=progress),
    ]
