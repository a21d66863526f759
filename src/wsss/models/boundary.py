"""IRN's boundary network: a class-boundary branch on a frozen backbone, and its affinity loss.

Branch (IRN ``net/resnet50_irn.py``, ``fc_edge1..6``): every backbone stage goes through a
1×1 convolution to 32 channels (no bias), GroupNorm(4, 32), the upsampling that brings it to
stride 4 (stage 3 ×2, stages 4 and 5 ×4, bilinear) and ReLU, in that order; the five maps are
cropped to the stride-4 size, concatenated (160 channels) and a 1×1 convolution with bias gives
the boundary logit at stride 4. The stem feature is taken after the max-pool (stride 4).

The backbone is frozen: no gradients, BatchNorm always in eval mode. IRN's ResNet-50 has a
stride-1 last stage *without* dilation (``strides=(2, 2, 2, 1)``), as has P-NOC's
``AffinityNet`` by default; ``dilated=False`` (the default) reproduces it on a timm backbone by
turning the last stage's dilated convolutions back into ordinary ones, ``dilated=True`` keeps
timm's dilation 2.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbone import backbone_channels, backbone_reductions, create_backbone
from wsss.models.registry import MODELS

__all__ = ["BoundaryNet", "affinity_loss"]

BRANCH_WIDTH = 32


def _undilate(module: nn.Module) -> None:
    """Dilation 1 (and the matching 'same' padding) for every dilated conv in ``module``."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and max(conv.dilation) > 1:
            conv.dilation = (1, 1)
            conv.padding = tuple((k - 1) // 2 for k in conv.kernel_size)


def _last_stage(backbone: nn.Module) -> nn.Module:
    name = backbone.feature_info.module_name()[-1]
    try:
        return backbone.get_submodule(name)
    except AttributeError:  # FeatureListNet flattens dotted names
        return backbone.get_submodule(name.replace(".", "_"))


@MODELS.register("boundary_net")
class BoundaryNet(nn.Module):
    """Class-boundary detector at stride 4 (IRN's edge branch) on a frozen timm backbone.

    Args:
        backbone: timm model name (IRN: ``resnet50``).
        pretrained: ImageNet weights via timm (needs the network).
        weights: Local backbone weights file; implies pretrained. In real use this is the
            trained CAM classifier's backbone (IRN: ImageNet weights).
        dilated: Keep timm's dilation in the stride-1 last stage (False: IRN's undilated one).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
        dilated: bool = False,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.dilated = dilated
        self.backbone = create_backbone(backbone, 16, pretrained, weights)
        channels = backbone_channels(self.backbone)
        reductions = backbone_reductions(self.backbone)
        if len(channels) != 5:
            raise ValueError(f"backbone {backbone!r} gives {len(channels)} stages, expected 5")
        if not dilated:
            _undilate(_last_stage(self.backbone))
        # timm ResNets give the stem feature before the max-pool (stride 2); IRN takes it after.
        self.stem_pool = reductions[0] == reductions[1] // 2
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        scales = [1, 1, 2, 4, 4]  # stride 4, 4, 8, 16, 16 → 4
        branches = []
        for width, scale in zip(channels, scales, strict=True):
            layers: list[nn.Module] = [
                nn.Conv2d(width, BRANCH_WIDTH, 1, bias=False),
                nn.GroupNorm(4, BRANCH_WIDTH),
            ]
            if scale > 1:
                layers.append(nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False))
            layers.append(nn.ReLU(inplace=True))
            branches.append(nn.Sequential(*layers))
        self.branches = nn.ModuleList(branches)
        self.head = nn.Conv2d(5 * BRANCH_WIDTH, 1, 1, bias=True)

    def train(self, mode: bool = True) -> BoundaryNet:
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics never move
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary logits ``B×1×ceil(H/4)×ceil(W/4)`` of ImageNet-normalised images."""
        with torch.no_grad():
            stages = list(self.backbone(x))
            if self.stem_pool:
                pool = getattr(self.backbone, "maxpool", None)
                stages[0] = (
                    pool(stages[0])
                    if isinstance(pool, nn.Module)
                    else F.max_pool2d(stages[0], kernel_size=3, stride=2, padding=1)
                )
        h, w = stages[1].shape[-2:]
        maps = [branch(s)[..., :h, :w] for branch, s in zip(self.branches, stages, strict=True)]
        return self.head(torch.cat(maps, dim=1))

    @torch.no_grad()
    def boundary(
        self, x: torch.Tensor, flip: bool = True, pad_to: int | None = 512
    ) -> torch.Tensor:
        """Boundary probabilities of one image, as the random walk uses them.

        IRN's ``EdgeDisplacement``: the image is zero-padded right and bottom to ``pad_to``
        (ImageNet-normalised zeros, i.e. the mean colour; the crop size of training), run with
        its horizontal flip, the two logits averaged, then ``sigmoid``, cropped to
        ``ceil(H/4)×ceil(W/4)``.

        Args:
            x: ``1×3×H×W`` or ``3×H×W`` normalised image.
            flip: Average with the flipped image's logits (the reference does).
            pad_to: Pad to this size first when the image is smaller; None: no padding.

        Returns:
            ``ceil(H/4)×ceil(W/4)`` probabilities.
        """
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"boundary() takes one image, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if pad_to is not None:
            x = F.pad(x, (0, max(pad_to - width, 0), 0, max(pad_to - height, 0)))
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        logits = self(batch)[:, 0]
        if flip:
            logits = logits[0] / 2 + logits[1].flip(-1) / 2
        else:
            logits = logits[0]
        return torch.sigmoid(logits[: -(-height // 4), : -(-width // 4)])

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The boundary branch (IRN trains it with lr 0.1 and weight decay 1e-4 on every
        parameter, GroupNorm and biases included, poly decay)."""
        return [*self.branches.parameters(), *self.head.parameters()]

    def architecture(self) -> dict:
        """JSON-serialisable description used to rebuild the model from a checkpoint."""
        return {"type": "boundary_net", "backbone": self.backbone_name, "dilated": self.dilated}


def affinity_loss(
    affinity: torch.Tensor,
    bg_pos: torch.Tensor,
    fg_pos: torch.Tensor,
    neg: torch.Tensor,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IRN's affinity loss: ``((L_bg_pos + L_fg_pos) / 2 + L_neg) / 2``.

    ``L_bg_pos`` is the mean of ``−log(a + ε)`` over background-background pairs, ``L_fg_pos``
    over same-class foreground pairs, ``L_neg`` the mean of ``−log(1 + ε − a)`` over pairs of
    different labels; each mean divides by ``count + ε`` (so an empty set gives 0).

    Args:
        affinity: Pair affinities in [0, 1] (e.g. ``PathIndex.affinity(sigmoid(logits))``).
        bg_pos, fg_pos, neg: 0/1 masks of the same shape (``wsss.refine.paths.affinity_targets``).
        eps: ε of the reference (1e-5).

    Returns:
        The loss and its parts ``bg_pos``, ``fg_pos``, ``neg`` (detached).
    """
    pos_term = -torch.log(affinity + eps)
    neg_term = -torch.log(1.0 + eps - affinity)
    bg = (bg_pos * pos_term).sum() / (bg_pos.sum() + eps)
    fg = (fg_pos * pos_term).sum() / (fg_pos.sum() + eps)
    ng = (neg * neg_term).sum() / (neg.sum() + eps)
    loss = ((bg + fg) / 2 + ng) / 2
    return loss, {"bg_pos": bg.detach(), "fg_pos": fg.detach(), "neg": ng.detach()}
