"""Data: loading photos safely, datasets and splits, the built-in demo set."""

from mvkit.data.images import BadImageError, ScanReport, load_image, scan_images

__all__ = ["DataSplits", "class_histogram", "load_data", "BadImageError", "ScanReport", "load_image", "scan_images"]


def __getattr__(name: str):
    """The datasets part on first use: it imports torch, which reading a photo for an exported model does not need."""
    if name in ("DataSplits", "class_histogram", "load_data"):
        from mvkit.data import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
