"""Data: loading photos safely, datasets and splits, the built-in demo set."""

from mvkit.data.datasets import DataSplits, class_histogram, load_data
from mvkit.data.images import BadImageError, ScanReport, load_image, scan_images

__all__ = ["DataSplits", "class_histogram", "load_data", "BadImageError", "ScanReport", "load_image", "scan_images"]
