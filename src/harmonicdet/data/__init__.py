"""Detection datasets (COCO, VOC, Fashion-MNIST scenes), transforms and batching."""

from .base import DetectionDataset, ImageRecord, InvalidAnnotation, collate
from .coco import CocoDetectionDataset
from .fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from .fashion_mnist import find_fashion_mnist, fingerprint, load_split, read_idx
from .scenes import compose_scene, make_scenes, scenes_paths
from .transforms import build_transforms
from .voc import VOC_CLASSES, VocDetectionDataset

__all__ = [
    "CocoDetectionDataset",
    "DetectionDataset",
    "FASHION_MNIST_CLASSES",
    "ImageRecord",
    "InvalidAnnotation",
    "VOC_CLASSES",
    "VocDetectionDataset",
    "build_transforms",
    "collate",
    "compose_scene",
    "find_fashion_mnist",
    "fingerprint",
    "load_split",
    "make_scenes",
    "read_idx",
    "scenes_paths",
]
