"""timm backbones as multi-stage feature extractors with a chosen output stride."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from wsss.errors import ConfigError, OfflineError
from wsss.io.checkpoints import read_checkpoint

__all__ = [
    "WeightsMatch",
    "backbone_channels",
    "backbone_reductions",
    "create_backbone",
    "load_backbone_weights",
    "stage_module",
]

# Prefixes under which a file may hold the backbone: a wsss checkpoint, wrappers of others.
_PREFIXES = ("", "backbone.", "model.", "encoder.")

_SUPPORTED_HINT = (
    "wsss needs a convolutional timm backbone that supports features_only with output_stride "
    "(dilated stages), e.g. resnet50, resnest269e, resnet10t, convnext_tiny, efficientnet_b0; "
    "vision transformers and MLP mixers are not supported"
)


def create_backbone(
    name: str,
    output_stride: int = 16,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    in_chans: int = 3,
) -> nn.Module:
    """Create a timm ``features_only`` backbone returning every stage's features.

    Args:
        name: Any timm model name that supports ``features_only`` and ``output_stride``
            (convolutional networks: ``resnet50``, ``resnest269e``, ``resnet10t``, ...).
        output_stride: 16 (layer4 stride 1, dilation 2) or 8 (layer3 too); 32 for none.
        pretrained: Load ImageNet weights through timm's hub (needs the network) unless
            ``weights`` is given.
        weights: Local weights file (``.safetensors``, ``.pth`` or ``.bin`` state dict of the
            full timm model, or a wsss checkpoint, whose ``backbone.`` tensors are used);
            implies ``pretrained``. Read without unpickling code; see
            :func:`load_backbone_weights` for what must match.
        in_chans: Input channels.

    Returns:
        A module whose forward returns a list of feature maps, shallow to deep; its
        ``feature_info.channels()`` gives their widths.

    Raises:
        ConfigError: Unknown or unsupported backbone (e.g. a ViT), bad ``output_stride``,
            missing weights file or weights that do not fit the backbone.
        OfflineError: ``pretrained`` without ``weights`` on a machine without network.
    """
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if name not in timm.list_models() and not timm.is_model(name):
        raise ConfigError(f"backbone {name!r} is not a timm model name")
    if weights is not None and not Path(weights).exists():
        raise ConfigError(f"backbone weights file {weights} does not exist")
    kwargs: dict = dict(features_only=True, output_stride=output_stride, in_chans=in_chans)
    from_hub = pretrained and weights is None
    try:
        backbone = timm.create_model(name, pretrained=from_hub, **kwargs)
    except TypeError as e:
        if "output_stride" in str(e) or "features_only" in str(e):
            raise ConfigError(
                f"backbone {name!r} cannot return dilated feature maps ({e}); {_SUPPORTED_HINT}"
            ) from None
        raise
    except (OSError, RuntimeError, ValueError) as e:
        if from_hub:
            raise OfflineError(
                f"could not fetch pretrained weights for backbone {name!r} ({type(e).__name__}: "
                f"{e}). On an offline machine, download the timm weights elsewhere and pass "
                f"them as a local file (--set model.weights=PATH), or train from scratch "
                f"(--set model.pretrained=false)."
            ) from e
        raise
    if weights is not None:
        load_backbone_weights(backbone, weights)
    return backbone


@dataclass
class WeightsMatch:
    """How a weights file covered a backbone.

    Attributes:
        matched: Backbone tensors loaded from the file (same name and shape).
        total: Backbone tensors (BatchNorm step counters excluded).
        missing: Backbone tensor names the file did not provide (left as initialised).
        wrong_shape: Names the file has with another shape (left as initialised).
        unused: Names of the file's tensors that were not loaded (e.g. a classifier).
        prefix: Prefix stripped from the file's names (``"backbone."`` for a wsss checkpoint).
    """

    matched: int
    total: int
    missing: list[str]
    wrong_shape: list[str]
    unused: list[str]
    prefix: str

    @property
    def coverage(self) -> float:
        return self.matched / max(self.total, 1)


def _source_names(name: str) -> tuple[str, ...]:
    """Names a backbone tensor has in the full timm model.

    ``features_only`` wrappers flatten sequential stages (``stages.0`` → ``stages_0``).
    """
    first, dot, rest = name.partition(".")
    head, underscore, index = first.rpartition("_")
    if underscore and head and index.isdigit():
        return name, f"{head}.{index}{dot}{rest}"
    return (name,)


def _match(
    targets: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], prefix: str
) -> tuple[dict[str, str], list[str], list[str]]:
    """Backbone name → file name of the tensors that fit, and the names that do not."""
    found: dict[str, str] = {}
    missing: list[str] = []
    wrong_shape: list[str] = []
    for name, target in targets.items():
        source = next((prefix + s for s in _source_names(name) if prefix + s in state), None)
        if source is None:
            missing.append(name)
        elif tuple(state[source].shape) != tuple(target.shape):
            wrong_shape.append(name)
        else:
            found[name] = source
    return found, missing, wrong_shape


def load_backbone_weights(
    backbone: nn.Module,
    weights: str | os.PathLike | Mapping[str, torch.Tensor],
    min_coverage: float = 0.5,
) -> WeightsMatch:
    """Copy the tensors of a weights file into ``backbone``, matched by name and shape.

    The file may hold the full timm model (its classifier is ignored), a ``features_only``
    backbone, or a wsss checkpoint (tensors under ``backbone.``); ``module.``, ``model.`` and
    ``encoder.`` prefixes are stripped too, whichever matches most.

    Args:
        backbone: A :func:`create_backbone` module.
        weights: Weights file (read without unpickling code) or a state dict.
        min_coverage: Refuse when fewer than this share of the backbone's tensors match;
            backbone tensors left unmatched above it keep their initialisation (warned).

    Returns:
        What matched.

    Raises:
        ConfigError: The file covers less than ``min_coverage`` of the backbone (another
            architecture, or not a weights file of this model); names the file and counts.
        DataError: The file is missing, unreadable or damaged.
    """
    if isinstance(weights, Mapping):
        state, where = dict(weights), "the given state dict"
    else:
        state, _, path = read_checkpoint(weights, "cpu")
        where = str(path)
    targets = {
        k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    best = None
    for prefix in _PREFIXES:
        found, missing, wrong_shape = _match(targets, state, prefix)
        if best is None or len(found) > len(best[0]):
            best = (found, missing, wrong_shape, prefix)
    assert best is not None
    found, missing, wrong_shape, prefix = best
    used = set(found.values())
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    result = WeightsMatch(len(found), len(targets), missing, wrong_shape, unused, prefix)
    if result.coverage < min_coverage:
        shapes = f", {len(wrong_shape)} more by name with another shape" if wrong_shape else ""
        raise ConfigError(
            f"backbone weights {where}: only {result.matched} of the backbone's {result.total} "
            f"tensors match by name and shape{shapes} ({len(state)} in the file, e.g. "
            f"{', '.join(list(state)[:3])}); is it a checkpoint of another architecture? Use "
            "weights of the same timm model (model.backbone), or drop model.weights"
        )
    if result.matched < result.total:
        warnings.warn(
            f"backbone weights {where}: {result.total - result.matched} of {result.total} "
            f"backbone tensors not in the file keep their initialisation (e.g. "
            f"{', '.join((missing + wrong_shape)[:3])})",
            stacklevel=2,
        )
    with torch.no_grad():
        own = backbone.state_dict()
        for name, source in found.items():
            own[name].copy_(state[source].to(own[name].dtype))
    return result


def stage_module(backbone: nn.Module, index: int = -1) -> nn.Module:
    """The module that outputs stage ``index`` of a :func:`create_backbone` module.

    For hooks such as Grad-CAM's ``target_layers`` (e.g. ``layer4`` of a ResNet).
    """
    name = backbone.feature_info.module_name()[index]
    for candidate in (name, name.replace(".", "_", 1)):
        try:
            return backbone.get_submodule(candidate)
        except AttributeError:
            continue
    raise ConfigError(f"cannot find the module {name!r} of stage {index} in the backbone")


def backbone_channels(backbone: nn.Module) -> list[int]:
    """Channel widths of each stage returned by ``backbone``."""
    return list(backbone.feature_info.channels())


@torch.no_grad()
def backbone_reductions(backbone: nn.Module) -> list[int]:
    """Nominal stride of each stage (as timm reports it, ignoring dilation)."""
    return list(backbone.feature_info.reduction())
