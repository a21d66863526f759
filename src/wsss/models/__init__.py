"""Networks and their registry: build any kind by name, rebuild it from a checkpoint."""

from wsss.models.backbone import create_backbone
from wsss.models.ccam import CCAM, CCAMOutput, DirectionEstimate, detect_direction
from wsss.models.classifier import CAMClassifier, CAMOutput
from wsss.models.registry import MODELS, create_model, list_models, load_model, save_model

__all__ = [
    "CCAM",
    "MODELS",
    "CAMClassifier",
    "CAMOutput",
    "CCAMOutput",
    "DirectionEstimate",
    "create_backbone",
    "create_model",
    "detect_direction",
    "list_models",
    "load_model",
    "save_model",
]
