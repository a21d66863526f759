"""Saliency tasks: ``ccam`` (C²AM, C²AM-H with hints) and ``saliency_detector``."""

from wsss.train.tasks.saliency.ccam import CCAMArgs, CCAMTask
from wsss.train.tasks.saliency.detector import SaliencyDetectorArgs, SaliencyDetectorTask

__all__ = ["CCAMArgs", "CCAMTask", "SaliencyDetectorArgs", "SaliencyDetectorTask"]
