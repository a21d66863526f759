"""Semantic segmentation networks trained on pseudo masks, and their loss (METHODS.md §8).

Two registered kinds, both mapping an ImageNet-normalised ``B×3×H×W`` batch to ``B×K×H×W``
logits at input resolution, ``K = C + 1`` classes with background at index 0:

- ``deeplabv3plus``: DeepLabV3+ from segmentation-models-pytorch on any timm encoder, output
  stride 16, ASPP rates 6/12/18, decoder fed by the stride-4 stage (ResNet ``layer1``).
- ``deeplabv2``: DeepLabV2, a dilated output-stride-8 backbone (ResNet-101 by default) with the
  ASPP-V2 head: four parallel 3×3 convolutions (rates 6/12/18/24) straight to ``K`` channels,
  summed. segmentation-models-pytorch has no DeepLabV2, hence this small module.

Cost on VOC-size inputs, estimated from the model sizes (not timed on a GPU). "GFLOPs" are
2 × multiply-adds of one 512×512 forward (torch's flop counter); "activations" are the bytes
autograd saves for a training forward of 16 crops of 512×512 in float32 (measured on the CPU at
a smaller size and scaled, counting a tensor saved twice twice: an upper bound; mixed precision
roughly halves them, and the peak adds temporaries, about 1.3×); "optimiser" is weights +
gradients + SGD momentum. ``benchmarks/gpu_estimates.py`` counts each saved storage once, on the
meta device, for every stage of the pipeline presets::

    model                         params    GFLOPs/img   activations/16   optimiser
    deeplabv3plus, resnet50       39.2 M        99          ≈ 14 GiB       0.4 GiB
    deeplabv3plus, resnet101      58.2 M       138          ≈ 19 GiB       0.7 GiB
    deeplabv3plus, resnest269e   124.6 M       321          ≈ 53 GiB       1.4 GiB
    deeplabv2, resnet101 (OS8)    44.0 M       367          ≈ 33 GiB       0.5 GiB

So with AMP a batch of 16 needs ≈ 10 GB (ResNet-50), 13 GB (ResNet-101), 35 GB (ResNeSt-269)
and 22 GB (DeepLabV2): ResNeSt-269 needs gradient accumulation below a 40 GB GPU. A
training step costs about 3× the forward: at an effective 50–100 TFLOP/s (A100, AMP) the P-NOC
schedule (50 epochs of the 10 582 VOC ``train_aug`` images) takes ≈ 0.5–1 h (ResNet-50),
≈ 1.5–3 h (ResNeSt-269) and ≈ 1.5–3 h (DeepLabV2). Inference with 4 scales × flip runs
2 × (0.25 + 1 + 2.25 + 4) = 15 image-sized forwards, ≈ 11 crops' worth for a 500×375 image:
the 1 449 VOC ``val`` images take ≈ 0.5 min (ResNet-50) to ≈ 2 min (ResNeSt-269, DeepLabV2)
of GPU time, plus the dense CRF on the CPU (≈ 1–2 s per image and core with 21 classes,
more on noisy images: ≈ 0.5–1 h for VOC ``val`` on one core).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import ConfigError, DataError, OfflineError
from wsss.models.backbone import backbone_channels, create_backbone
from wsss.models.classifier import split_parameters
from wsss.models.registry import MODELS

__all__ = ["DeepLabV2", "DeepLabV3Plus", "segmentation_loss"]

DEFAULT_IGNORE_INDEX = 255
# GroupNorm groups in the ASPP and decoder of the reference DeepLabV3+ (Puzzle-CAM, P-NOC).
_GN_GROUPS = 4


def _timm_name(backbone: str) -> str:
    return backbone.removeprefix("tu-")


def _is_timm_model(name: str) -> bool:
    return timm.is_model(name) or name in timm.list_models()


def _use_group_norm(module: nn.Module, groups: int) -> None:
    """Replace every BatchNorm2d inside ``module`` by a GroupNorm of the same width."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(groups, child.num_features))
        else:
            _use_group_norm(child, groups)


def _init_new_layers(module: nn.Module) -> None:
    """Kaiming-normal convolutions with zero bias, norms at identity (the reference code)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _groups(
    pretrained: nn.Module, new: Sequence[nn.Module], norm_weight_group: str
) -> dict[str, list[nn.Parameter]]:
    groups: dict[str, list[nn.Parameter]] = {}
    groups["pretrained_weights"], groups["pretrained_biases"] = split_parameters(
        pretrained, norm_weight_group
    )
    groups["new_weights"], groups["new_biases"] = [], []
    for module in new:
        weights, biases = split_parameters(module, norm_weight_group)
        groups["new_weights"] += weights
        groups["new_biases"] += biases
    return groups


@MODELS.register("deeplabv3plus")
class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ on a timm encoder, built from segmentation-models-pytorch's modules.

    The forward differs from ``smp.DeepLabV3Plus.forward`` only in taking any input size: the
    ASPP output is resized to the stride-4 features (rather than upsampled ×4) and the logits
    to the input (rather than ×4), both bilinear with ``align_corners=True`` like the reference
    code; on inputs divisible by 16 it gives the same result.

    Differences from the reference DeepLabV3+ of Puzzle-CAM / P-NOC, which smp does not offer:
    smp adds a separable 3×3 convolution after the ASPP projection and fuses the decoder with
    one separable 3×3 convolution (the reference: two plain 3×3 convolutions with dropout
    0.5 and 0.1).

    Args:
        backbone: timm model name (``resnet50``, ``resnest269e``; a ``tu-`` prefix is accepted).
            timm's default weights of a name may differ from the reference (e.g. ``resnet50``
            is ``resnet50.a1_in1k``; ``resnet50.tv_in1k`` is torchvision's).
        num_classes: Output classes ``K = C + 1``, background included.
        output_stride: 16 (default) or 8.
        atrous_rates: The three ASPP dilation rates.
        decoder_channels: Width of the ASPP and decoder.
        decoder_norm: ``group`` (default): GroupNorm with 4 groups in the ASPP and decoder,
            as the P-NOC and Puzzle-CAM code (``use_gn=True``); ``batch``: smp's BatchNorm.
        aspp_separable: Depthwise-separable ASPP convolutions (smp's default); off by default,
            as the reference.
        dropout: Dropout after the ASPP projection.
        pretrained: ImageNet weights through timm (needs the network unless ``weights``).
        weights: Local timm weights file for the encoder; implies ``pretrained``.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 21,
        output_stride: int = 16,
        atrous_rates: Sequence[int] = (6, 12, 18),
        decoder_channels: int = 256,
        decoder_norm: Literal["group", "batch"] = "group",
        aspp_separable: bool = False,
        dropout: float = 0.5,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        name = _timm_name(backbone)
        if output_stride not in (8, 16):
            raise ConfigError(f"DeepLabV3+ output_stride must be 8 or 16, got {output_stride}")
        if len(atrous_rates) != 3:
            raise ConfigError(f"DeepLabV3+ needs 3 atrous_rates, got {list(atrous_rates)}")
        if decoder_norm not in ("group", "batch"):
            raise ConfigError(f"decoder_norm must be 'group' or 'batch', got {decoder_norm!r}")
        if num_classes < 2:
            raise ConfigError(f"num_classes counts the background too (C + 1), got {num_classes}")
        kwargs = {}
        if weights is not None:
            if not os.path.isfile(weights):
                raise ConfigError(f"backbone weights file {weights} does not exist")
            kwargs["pretrained_cfg_overlay"] = dict(file=str(weights))
        fetch = pretrained or weights is not None
        if not _is_timm_model(name):
            raise ConfigError(f"backbone {backbone!r} is not a timm model name")
        try:
            net = smp.DeepLabV3Plus(
                encoder_name=f"tu-{name}",
                encoder_weights=True if fetch else None,
                encoder_output_stride=output_stride,
                decoder_channels=decoder_channels,
                decoder_atrous_rates=tuple(atrous_rates),
                decoder_aspp_separable=aspp_separable,
                decoder_aspp_dropout=dropout,
                classes=num_classes,
                upsampling=1,
                **kwargs,
            )
        except (OSError, RuntimeError, ValueError) as e:
            if fetch and weights is None:
                raise OfflineError(
                    f"could not fetch pretrained weights for encoder {name!r} "
                    f"({type(e).__name__}: {e}). On an offline machine, download the timm "
                    f"weights elsewhere and pass them as a local file (the model's weights "
                    f"setting), or train from scratch (pretrained=false)."
                ) from e
            if weights is not None:
                raise ConfigError(f"cannot load weights file {weights} into {name!r}: {e}") from e
            if isinstance(e, ValueError):
                raise ConfigError(f"DeepLabV3+ cannot use backbone {backbone!r}: {e}") from None
            raise
        self.encoder = net.encoder
        self.decoder = net.decoder
        self.head = net.segmentation_head[0]  # the 1×1 classifier; we upsample ourselves
        if decoder_norm == "group":
            _use_group_norm(self.decoder, _GN_GROUPS)
        _init_new_layers(self.decoder)
        _init_new_layers(self.head)
        self.config = dict(
            backbone=name,
            num_classes=num_classes,
            output_stride=output_stride,
            atrous_rates=list(atrous_rates),
            decoder_channels=decoder_channels,
            decoder_norm=decoder_norm,
            aspp_separable=aspp_separable,
            dropout=dropout,
        )
        self.num_classes = num_classes
        self.pretrained = fetch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``B×K×H×W`` of an ImageNet-normalised ``B×3×H×W`` batch."""
        features = self.encoder(x)
        low = self.decoder.block1(features[2])
        high = self.decoder.aspp(features[-1])
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=True)
        logits = self.head(self.decoder.block2(torch.cat([high, low], dim=1)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)

    def param_groups(
        self, norm_weight_group: Literal["weights", "biases"] = "weights"
    ) -> dict[str, list[nn.Parameter]]:
        """Encoder in ``pretrained_*``, ASPP, decoder and classifier in ``new_*`` (10×/20× lr).

        Split into weights and biases by :func:`~wsss.models.classifier.split_parameters`.
        """
        return _groups(self.encoder, [self.decoder, self.head], norm_weight_group)

    def architecture(self) -> dict:
        """JSON-serialisable description used to rebuild the model from a checkpoint."""
        return {"type": "deeplabv3plus", **self.config}


@MODELS.register("deeplabv2")
class DeepLabV2(nn.Module):
    """DeepLabV2: dilated backbone at output stride 8 and the ASPP-V2 head.

    Each of the four head branches is a 3×3 convolution with bias from the last backbone stage
    straight to ``K`` classes; their outputs are summed. Head weights start at N(0, 0.01²) and
    biases at 0, as the reference (deeplab-pytorch, used by the LPCAM and IRN papers). Logits
    are upsampled to the input size (bilinear, ``align_corners=False``).

    Not reproduced: the reference trains with frozen backbone BatchNorm (Caffe ResNet-101) and
    multi-scale inputs (MSC: 1, 0.75, 0.5 and their max), with the loss on the logits' grid.

    Args:
        backbone: timm model name (default ``resnet101``).
        num_classes: Output classes ``K = C + 1``, background included.
        output_stride: 8 (default) or 16.
        atrous_rates: Dilations of the head branches.
        pretrained: ImageNet weights through timm (needs the network unless ``weights``).
        weights: Local timm weights file for the backbone; implies ``pretrained``.
    """

    def __init__(
        self,
        backbone: str = "resnet101",
        num_classes: int = 21,
        output_stride: int = 8,
        atrous_rates: Sequence[int] = (6, 12, 18, 24),
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ConfigError(f"DeepLabV2 output_stride must be 8 or 16, got {output_stride}")
        if not atrous_rates:
            raise ConfigError("DeepLabV2 needs at least one atrous rate")
        if num_classes < 2:
            raise ConfigError(f"num_classes counts the background too (C + 1), got {num_classes}")
        name = _timm_name(backbone)
        self.backbone = create_backbone(name, output_stride, pretrained, weights)
        in_channels = backbone_channels(self.backbone)[-1]
        self.head = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True)
            for r in atrous_rates
        )
        for conv in self.head:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.config = dict(
            backbone=name,
            num_classes=num_classes,
            output_stride=output_stride,
            atrous_rates=list(atrous_rates),
        )
        self.num_classes = num_classes
        self.pretrained = pretrained or weights is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``B×K×H×W`` of an ImageNet-normalised ``B×3×H×W`` batch."""
        features = self.backbone(x)[-1]
        logits = sum(conv(features) for conv in self.head)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def param_groups(
        self, norm_weight_group: Literal["weights", "biases"] = "weights"
    ) -> dict[str, list[nn.Parameter]]:
        """Backbone in ``pretrained_*``, the ASPP-V2 head in ``new_*`` (10×/20× lr)."""
        return _groups(self.backbone, [self.head], norm_weight_group)

    def architecture(self) -> dict:
        """JSON-serialisable description used to rebuild the model from a checkpoint."""
        return {"type": "deeplabv2", **self.config}


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
) -> torch.Tensor:
    """Pixel-wise cross-entropy averaged over the labelled pixels.

    With label smoothing ``ε`` a pixel of class ``y`` costs ``(1 − ε)·(−log p_y) +
    ε·mean_k(−log p_k)`` (torch's ``label_smoothing``); pixels equal to ``ignore_index`` cost
    nothing and are left out of the mean. A batch without any labelled pixel gives a zero loss
    (with a graph, so ``backward`` works) instead of torch's NaN.

    Args:
        logits: ``B×K×H×W`` raw scores.
        target: ``B×H×W`` integer class ids in ``0..K−1`` or ``ignore_index``.
        label_smoothing: ``ε`` in ``[0, 1)``; METHODS.md §8 suggests 0.1 as an option.
        ignore_index: Label of unlabelled pixels.

    Raises:
        DataError: A target holds a class id outside ``0..K−1`` (other than ``ignore_index``).
        ConfigError: ``label_smoothing`` outside ``[0, 1)``.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"logits B×K×H×W {tuple(logits.shape)} and target B×H×W {tuple(target.shape)} "
            f"do not match"
        )
    k = logits.shape[1]
    labelled = target != ignore_index
    bad = labelled & ((target < 0) | (target >= k))
    if bad.any():
        value = int(target[bad][0])
        raise DataError(
            f"segmentation target holds class id {value}, but the model has {k} classes "
            f"(0..{k - 1}, {ignore_index} = ignore); check the pseudo masks and the class list",
            kind="bad mask",
        )
    if not labelled.any():
        return logits.sum() * 0.0
    return F.cross_entropy(
        logits.float(),
        target.long(),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )
