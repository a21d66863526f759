"""Networks and their registry: build any kind by name, rebuild it from a checkpoint."""

from wsss.models.backbone import WeightsMatch, create_backbone, load_backbone_weights
from wsss.models.ccam import CCAM, CCAMOutput, DirectionEstimate, detect_direction
from wsss.models.classifier import CAMClassifier, CAMOutput, LogitsModel
from wsss.models.interop import cam_classifier_from_timm
from wsss.models.registry import MODELS, create_model, list_models, load_model, save_model

__all__ = [
    "CCAM",
    "MODELS",
    "CAMClassifier",
    "CAMOutput",
    "CCAMOutput",
    "DirectionEstimate",
    "LogitsModel",
    "WeightsMatch",
    "cam_classifier_from_timm",
    "create_backbone",
    "create_model",
    "detect_direction",
    "list_models",
    "load_backbone_weights",
    "load_model",
    "save_model",
]
