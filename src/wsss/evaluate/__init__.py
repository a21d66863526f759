"""Evaluation: confusion matrices, mIoU/FP/FN/precision/recall, seed thresholds, class groups."""

from wsss.evaluate.confusion import ConfusionMatrix
from wsss.evaluate.groups import ClassStats, class_group_analysis, pearson
from wsss.evaluate.metrics import class_scores, summary_scores
from wsss.evaluate.parts import PartCounts
from wsss.evaluate.plots import save_threshold_curve
from wsss.evaluate.runner import evaluate
from wsss.evaluate.seeds import (
    ThresholdSweep,
    default_thresholds,
    format_thresholds,
    parse_thresholds,
    seed_mask,
)
from wsss.evaluate.tables import (
    diagnostics_table,
    groups_table,
    print_result,
    result_table,
    sweep_table,
)

__all__ = [
    "ClassStats",
    "ConfusionMatrix",
    "PartCounts",
    "ThresholdSweep",
    "class_group_analysis",
    "class_scores",
    "default_thresholds",
    "diagnostics_table",
    "evaluate",
    "format_thresholds",
    "groups_table",
    "parse_thresholds",
    "pearson",
    "print_result",
    "result_table",
    "save_threshold_curve",
    "seed_mask",
    "summary_scores",
    "sweep_table",
]
