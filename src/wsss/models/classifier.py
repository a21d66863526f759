"""The CAM classifier: backbone, 1×1 class head without bias, global average pooling."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from wsss.models.backbone import backbone_channels, create_backbone, stage_module
from wsss.models.registry import MODELS

NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    nn.GroupNorm,
    nn.LayerNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def split_parameters(
    module: nn.Module, norm_weight_group: Literal["weights", "biases"] = "weights"
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters of ``module`` split into weights (decayed) and biases (not).

    Biases and the shifts (β) of normalisation layers are biases. Their scales (γ) go with the
    weights when ``norm_weight_group`` is ``weights`` (the P-NOC and Puzzle-CAM code, which
    group by name) or with the biases when ``biases``. Any other parameter is a bias when it
    is 1-D, a weight otherwise.

    Returns:
        ``(weights, biases)`` in :meth:`~torch.nn.Module.parameters` order.
    """
    if norm_weight_group not in ("weights", "biases"):
        raise ValueError(
            f"norm_weight_group must be 'weights' or 'biases', got {norm_weight_group!r}"
        )
    weights: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    seen: set[int] = set()
    for m in module.modules():
        is_norm = isinstance(m, NORM_LAYERS)
        for name, p in m.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if is_norm and name == "weight":
                is_bias = norm_weight_group == "biases"
            else:
                is_bias = name == "bias" or p.ndim <= 1
            (biases if is_bias else weights).append(p)
    return weights, biases


@dataclass
class CAMOutput:
    """What :class:`CAMClassifier` returns.

    Attributes:
        logits: ``B×C`` class logits, ``GAP(maps)``.
        maps: ``B×C×h×w`` raw (pre-ReLU) class activation maps, or None if not requested.
        features: ``B×D×h×w`` last-stage backbone features (post-ReLU for ResNets), or None.
        stages: every backbone stage, shallow to deep, or None if not requested.
    """

    logits: torch.Tensor
    maps: torch.Tensor | None = None
    features: torch.Tensor | None = None
    stages: list[torch.Tensor] | None = None


class LogitsModel(nn.Module):
    """A view of a :class:`CAMClassifier` whose forward returns the logits tensor only.

    For tools that expect ``model(x)`` to be a ``B×C`` tensor (pytorch-grad-cam, torchmetrics,
    ONNX export). Shares the classifier's parameters and mode.
    """

    def __init__(self, model: CAMClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


@MODELS.register("cam_classifier")
class CAMClassifier(nn.Module):
    """Multi-label classifier whose head doubles as a class-activation-map generator.

    ``maps = head(F)`` with a bias-free 1×1 convolution, ``logits = GAP(maps)``, which equals
    ``head(GAP(F))``. Probabilities are ``sigmoid(logits)`` (multi-label).

    Args:
        backbone: timm model name.
        num_classes: Number of foreground classes C.
        output_stride: 16 (default) or 8.
        pretrained: ImageNet weights via timm (needs the network).
        weights: Local backbone weights file (a timm model's state dict or a wsss checkpoint,
            whose backbone is used); implies pretrained. Refused when it covers less than
            half of the backbone's tensors (see :func:`~wsss.models.load_backbone_weights`).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 20,
        output_stride: int = 16,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.backbone = create_backbone(backbone, output_stride, pretrained, weights)
        self.feature_dim = backbone_channels(self.backbone)[-1]
        self.head = nn.Conv2d(self.feature_dim, num_classes, kernel_size=1, bias=False)
        nn.init.kaiming_normal_(self.head.weight)
        self.pretrained = pretrained or weights is not None

    def forward(
        self,
        x: torch.Tensor,
        with_maps: bool = False,
        with_features: bool = False,
        with_stages: bool = False,
    ) -> CAMOutput:
        """Classify ``x`` (``B×3×H×W``, ImageNet-normalised)."""
        stages = self.backbone(x)
        features = stages[-1]
        maps = self.head(features)
        logits = maps.mean(dim=(2, 3))
        return CAMOutput(
            logits=logits,
            maps=maps if with_maps else None,
            features=features if with_features else None,
            stages=stages if with_stages else None,
        )

    def as_logits(self) -> LogitsModel:
        """This classifier as a module returning the ``B×C`` logits tensor.

        ``model(x)`` returns a :class:`CAMOutput`; tools that expect a tensor take this view
        instead, e.g. pytorch-grad-cam::

            cam = GradCAM(model=model.as_logits(), target_layers=[model.last_stage()])
        """
        return LogitsModel(self)

    def last_stage(self) -> nn.Module:
        """The backbone module producing the features the head reads (``layer4`` of a ResNet)."""
        return stage_module(self.backbone, -1)

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters not covered by pretrained weights (the class head)."""
        return list(self.head.parameters())

    def param_groups(
        self, norm_weight_group: Literal["weights", "biases"] = "weights"
    ) -> dict[str, list[nn.Parameter]]:
        """The four groups of METHODS.md §1, trainable parameters only.

        ``pretrained_weights`` and ``pretrained_biases`` of the backbone, ``new_weights`` and
        ``new_biases`` of the head, split by :func:`split_parameters`: norm scales γ go with
        the weights by default (the reference code), with the biases for
        ``norm_weight_group="biases"``. When the backbone is not pretrained its parameters
        still go into the ``pretrained_*`` groups (same lr multipliers), so schedules are
        comparable across runs.
        """
        groups: dict[str, list[nn.Parameter]] = {}
        for prefix, module in (("pretrained", self.backbone), ("new", self.head)):
            weights, biases = split_parameters(module, norm_weight_group)
            groups[f"{prefix}_weights"], groups[f"{prefix}_biases"] = weights, biases
        return groups

    def architecture(self) -> dict:
        """JSON-serialisable description used to rebuild the model from a checkpoint."""
        return {
            "type": "cam_classifier",
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "output_stride": self.output_stride,
        }
