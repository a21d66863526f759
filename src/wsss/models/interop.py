"""Use classifiers trained elsewhere: a plain timm checkpoint as a CAM classifier."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import timm
import torch

from wsss.errors import ConfigError
from wsss.io.checkpoints import read_checkpoint
from wsss.models.backbone import load_backbone_weights
from wsss.models.classifier import CAMClassifier

__all__ = ["cam_classifier_from_timm"]

# Where timm models keep their final linear layer, when the model's config does not say.
_HEAD_NAMES = ("fc", "head.fc", "classifier", "head", "last_linear")


def _head_key(backbone: str, state: dict[str, torch.Tensor]) -> str:
    """The name of the classifier's weight in ``state``."""
    cfg = timm.models.get_pretrained_cfg(backbone.split(".")[0])
    names = tuple(
        dict.fromkeys(((cfg.classifier,) if cfg and cfg.classifier else ()) + _HEAD_NAMES)
    )
    for prefix in ("", "model."):
        for name in names:
            if isinstance(name, str) and f"{prefix}{name}.weight" in state:
                return f"{prefix}{name}.weight"
    raise ConfigError(
        f"no classifier weights found in the checkpoint (looked for {', '.join(map(str, names))}"
        "); to use only its backbone, pass it as the backbone weights (model.weights)"
    )


def cam_classifier_from_timm(
    path: str | os.PathLike,
    backbone: str,
    *,
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
    output_stride: int = 16,
    map_location: str | torch.device = "cpu",
) -> tuple[CAMClassifier, dict[str, Any]]:
    """A :class:`CAMClassifier` from the weights of ``timm.create_model(backbone, num_classes=N)``.

    The backbone tensors are matched by name and shape (see
    :func:`~wsss.models.load_backbone_weights`); the timm classifier's linear weight
    (``fc``, ``head.fc``, ``classifier``, ...; ``N×D``) becomes the bias-free 1×1 CAM head.
    Its **bias is dropped**: CAM is ``W·F`` without it, as in the original CAM, so the maps
    are those of the timm model's weights, while the logits (hence sigmoid scores) differ
    from timm's by that per-class constant; ``meta["head_bias"]`` keeps it for reference.

    Args:
        path: ``.safetensors`` or ``.pth``/``.pt``/``.bin`` state dict (read without
            unpickling code), also nested under ``state_dict``/``model`` as timm's training
            script saves it.
        backbone: The timm model name the checkpoint was made with.
        classes: Class names (recorded in the metadata; their number must fit the head).
        num_classes: Number of classes when ``classes`` is not given; default the head's rows.
        output_stride: Output stride of the CAM classifier (16 or 8; dilation changes the
            maps' resolution, not the weights).
        map_location: Device of the returned model.

    Returns:
        The model in eval mode and metadata (``architecture``, ``classes``, ``source``,
        ``head_bias``), ready for :func:`~wsss.models.save_model`.

    Raises:
        ConfigError: No classifier in the file, a head of another size than the classes, or
            backbone weights that do not fit ``backbone``.
        DataError: Missing or unreadable file.
    """
    state, _, weights = read_checkpoint(path, "cpu")
    key = _head_key(backbone, state)
    bias_key = key.removesuffix("weight") + "bias"
    weight, bias = state[key], state.get(bias_key)
    if classes is not None:
        if num_classes is not None and num_classes != len(classes):
            raise ConfigError(f"num_classes={num_classes} but {len(classes)} class names given")
        num_classes = len(classes)
    if num_classes is None:
        num_classes = int(weight.shape[0])
    model = CAMClassifier(backbone, num_classes=num_classes, output_stride=output_stride)
    match = load_backbone_weights(model.backbone, state)
    between = [k for k in match.unused if k not in (key, bias_key)]
    if between:
        raise ConfigError(
            f"{weights}: {backbone} has layers between its last stage and its classifier "
            f"({', '.join(between[:4])}{', ...' if len(between) > 4 else ''}), so its "
            "classifier cannot become a CAM head (CAM needs a linear classifier on the pooled "
            "last stage, as in ResNets); pass the file as the backbone weights (model.weights) "
            "and train the head"
        )
    expected = (num_classes, model.feature_dim)
    if weight.ndim not in (2, 4) or weight[0, 0].numel() != 1 or weight.shape[:2] != expected:
        raise ConfigError(
            f"{weights}: classifier {key!r} has shape {tuple(weight.shape)}, but a "
            f"{backbone} CAM head for {num_classes} classes needs {expected}; to use only the "
            "backbone, pass the file as the backbone weights (model.weights)"
        )
    with torch.no_grad():
        model.head.weight.copy_(weight.reshape(model.head.weight.shape))
    meta: dict[str, Any] = {
        "architecture": model.architecture(),
        "classes": list(classes) if classes is not None else None,
        "source": str(weights),
        "head_bias": None if bias is None else [float(b) for b in bias.reshape(-1)],
    }
    return model.to(map_location).eval(), meta
