"""Build mvkit's built-in demo dataset `builtin:fashion` from Debian's Fashion-MNIST.

Run once by a maintainer; its output is committed:
    apt-get install -y dataset-fashion-mnist
    python scripts/make_fashion_subset.py

Takes a class-balanced, seeded subset (600 train + 100 val per class = 6,000 / 1,000 images of 28x28
grayscale) and writes it as one compressed .npz plus the dataset's MIT notice.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
LICENSE_SOURCE = Path("/usr/share/doc/dataset-fashion-mnist/copyright")
TARGET = Path(__file__).resolve().parents[1] / "src/mvkit/data/builtin"
CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
TRAIN_PER_CLASS, VAL_PER_CLASS, SEED = 600, 100, 0


def read_idx(path: Path) -> np.ndarray:
    """IDX format: big-endian magic (dtype code, ndim), then ndim u32 sizes, then the raw data."""
    raw = gzip.open(path).read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(len(CLASSES))]
    return np.sort(np.concatenate(picks))


def main() -> None:
    rng = np.random.default_rng(SEED)
    train_x, train_y = read_idx(SOURCE / "train-images-idx3-ubyte.gz"), read_idx(SOURCE / "train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz"), read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
    train_idx = balanced_subset(train_y, TRAIN_PER_CLASS, rng)
    val_idx = balanced_subset(test_y, VAL_PER_CLASS, rng)  # val comes from the official test split
    TARGET.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        TARGET / "fashion_mnist_subset.npz",
        train_images=train_x[train_idx], train_labels=train_y[train_idx],
        val_images=test_x[val_idx], val_labels=test_y[val_idx],
        classes=np.array(CLASSES),
    )
    shutil.copyfile(LICENSE_SOURCE, TARGET / "FASHION_MNIST_LICENSE.txt")
    print(f"wrote {len(train_idx)} train and {len(val_idx)} val images to {TARGET}")


if __name__ == "__main__":
    main()
