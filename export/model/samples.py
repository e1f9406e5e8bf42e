"""Input batches for calibration and parity: the photos scikit-image ships, seeded noise,
and edge cases (all-black, all-white), all as float32 NHWC RGB in [0, 255].

The photos are bundled with scikit-image, so everything here works offline.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from export.images import ImageContract, pil

#: Photos bundled in scikit-image (no download needed), in a fixed order.
PHOTO_NAMES = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field",
    "immunohistochemistry", "retina", "colorwheel", "camera", "coins", "clock",
)


def _loader(name: str) -> Callable[[], np.ndarray]:
    from skimage import data
    if name == "motorcycle":
        return lambda: data.stereo_motorcycle()[0]
    return getattr(data, name)


def load_photo(name: str, size: int = 224) -> np.ndarray:
    """One scikit-image photo as uint8 RGB [size, size, 3] (grey images get 3 channels), resized
    by the image contract's resize and rounding (export.images.pil, aspect stretch)."""
    img = np.asarray(_loader(name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    return pil.contract_pixels(img.astype(np.uint8), ImageContract(size), np.uint8)


def photos(size: int = 224, names: tuple[str, ...] = PHOTO_NAMES) -> np.ndarray:
    """The sample photos as a float32 batch [N, size, size, 3] in [0, 255]."""
    return np.stack([load_photo(n, size) for n in names]).astype(np.float32)


def noise(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """Seeded uniform noise images in [0, 255]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, size=(n, size, size, 3)).astype(np.float32)


def edge_cases(size: int = 224) -> np.ndarray:
    """All-black and all-white images."""
    return np.stack([np.zeros((size, size, 3)), np.full((size, size, 3), 255.0)]).astype(np.float32)


def parity_inputs(size: int = 224, n_noise: int = 2, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The parity batch: photos, noise and edge cases, with a name for every row."""
    batch = np.concatenate([photos(size), noise(n_noise, size, seed), edge_cases(size)])
    names = [*PHOTO_NAMES, *(f"noise_{seed}_{i}" for i in range(n_noise)), "all_black", "all_white"]
    return batch, names


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """A uint8/float RGB image as JPEG bytes (for warmup and image-bytes requests)."""
    return pil.encode_jpeg(image, quality)
