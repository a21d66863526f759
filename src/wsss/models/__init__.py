"""Backbones and networks."""

from wsss.models.backbone import create_backbone
from wsss.models.classifier import CAMClassifier, CAMOutput

__all__ = ["CAMClassifier", "CAMOutput", "create_backbone"]
