"""Frame -> model input into one preallocated buffer (the guide's buffer reuse).

The geometry (resize of the shorter side, center crop) is the Preprocess's eval geometry applied to the PIL frame,
so a live frame gives the model exactly the pixels `mvkit predict` gives it for the same picture; only the float
conversion and normalisation are done here, in place, into a buffer allocated once per input size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mvkit.preprocess import Preprocess


class FramePreparer:
    def __init__(self, preprocess: Preprocess, reuse: bool = True):
        self.preprocess = preprocess
        self.reuse = reuse
        self.size = preprocess.size
        mean = np.asarray(preprocess.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(preprocess.std, dtype=np.float32).reshape(3, 1, 1)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (mean / std).astype(np.float32)
        self._buffer = np.empty((1, 3, self.size, self.size), dtype=np.float32)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """A [1, 3, size, size] float32 batch. With reuse, the same array each call: use it before the next."""
        if not self.reuse:  # the baseline the guide improves on: fresh tensors per frame
            return self.preprocess.eval_array(image)[None]
        pixels = np.asarray(self.preprocess.eval_geometry(image), dtype=np.uint8)  # H, W, 3
        chw = self._buffer[0]
        np.copyto(chw, pixels.transpose(2, 0, 1), casting="unsafe")
        chw *= self._scale
        chw -= self._offset
        return self._buffer
