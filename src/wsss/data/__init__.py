"""Dataset readers, the synthetic benchmark, transforms and mask/label IO."""

from wsss.data.base import IGNORE_INDEX, Sample, SegmentationDataset, voc_palette
from wsss.data.check import CheckReport, Problem, check_data, check_dataset, verify_files
from wsss.data.coco import COCODataset
from wsss.data.datasets import DATASETS, build_dataset
from wsss.data.folder import FolderDataset
from wsss.data.image_io import decode_rgb_mask, read_image, read_mask, write_image, write_mask
from wsss.data.voc import VOC_CLASSES, VOCDataset

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "COCODataset",
    "CheckReport",
    "FolderDataset",
    "Problem",
    "Sample",
    "SegmentationDataset",
    "VOCDataset",
    "build_dataset",
    "check_data",
    "check_dataset",
    "decode_rgb_mask",
    "read_image",
    "read_mask",
    "verify_files",
    "voc_palette",
    "write_image",
    "write_mask",
]
