"""Labeled image folders: read a class-per-folder tree into arrays, split it, and write the demo
data sets that installed packages ship as such folders.

The folder conventions are those of `keras.utils.image_dataset_from_directory`: one sub-folder
per class (searched recursively), class names are the sorted folder names, files ending in
.jpg/.jpeg/.png/.bmp/.gif are images. Everything else is ignored and counted; an image file that
cannot be decoded is skipped and named, and too many of them is an error. Used by training
(export.training.train) and by labeled evaluation / calibration samples (issue 12). No TensorFlow here.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.core.atomic import sha256_file, staged_dir
from export.core.errors import DataError, ExportError

#: File name endings read as images (those of keras.utils.image_dataset_from_directory).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
#: More than this share of unreadable image files is an error; fewer are skipped and counted.
MAX_CORRUPT_SHARE = 0.1
#: Bumped when decoding or resizing changes, so cached features of the old pixels are not reused.
DECODE_VERSION = 2  # 2: the image contract (export.images): EXIF orientation, DCT scale >= 2 x size


@dataclass
class FolderIndex:
    """The files of a class-per-folder tree, before decoding: (relative path, class index) pairs."""

    root: Path
    class_names: list[str]
    files: list[tuple[str, int]]
    ignored: list[str] = field(default_factory=list)

    def per_class(self) -> dict[str, int]:
        counts = np.bincount([c for _, c in self.files], minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts, strict=True)}

    def subsample(self, max_per_class: int | None, seed: int = 0) -> FolderIndex:
        """At most `max_per_class` files of each class, a seeded sample (in sorted order)."""
        if not max_per_class:
            return self
        rng = np.random.default_rng(seed)
        keep: list[tuple[str, int]] = []
        for c in range(len(self.class_names)):
            mine = [f for f in self.files if f[1] == c]
            if len(mine) > max_per_class:
                picked = rng.choice(len(mine), size=max_per_class, replace=False)
                mine = [mine[i] for i in sorted(picked)]
            keep += mine
        return FolderIndex(self.root, self.class_names, keep, self.ignored)


@dataclass
class ImageFolder:
    """Decoded images of a folder tree: uint8 RGB [N, size, size, 3], labels, and what was left out."""

    root: Path
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    files: list[str]
    sha256: str
    ignored: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    def per_class(self, indices: np.ndarray | None = None) -> dict[str, int]:
        labels = self.labels if indices is None else self.labels[indices]
        counts = np.bincount(labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts, strict=True)}

    def summary(self) -> dict:
        """What metrics and manifests record about the data: sizes, hash, skipped files."""
        return {"root": str(self.root), "sha256": self.sha256, "images": len(self.files),
                "classes": len(self.class_names), "images_per_class": self.per_class(),
                "ignored_files": len(self.ignored), "corrupt_files": len(self.corrupt),
                "corrupt": self.corrupt[:50]}


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def scan_folder(root: str | Path, what: str = "--data", min_classes: int = 2) -> FolderIndex:
    """List a class-per-folder tree; DataError (naming `what`) when it cannot be a data set:
    missing, not a directory, no class folders, fewer than `min_classes`, a class without images."""
    root = Path(root)
    fix = "put each class's images in its own sub-folder (DIR/<class>/*.jpg)"
    if not root.exists():
        raise DataError(f"{what} {root}: no such directory; {fix}")
    if not root.is_dir():
        raise DataError(f"{what} {root} is not a directory; {fix}")
    ignored = sorted(p.name for p in root.iterdir() if not p.is_dir())
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{what} {root} has no class folders; {fix}")
    if len(classes) < min_classes:
        raise DataError(f"{what} {root} has {len(classes)} class folder ({classes[0]}); "
                        f"training needs at least {min_classes} classes, one sub-folder each")
    files: list[tuple[str, int]] = []
    for index, name in enumerate(classes):
        found = 0
        for p in sorted((root / name).rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(root).as_posix()
            if is_image_file(p):
                files.append((rel, index))
                found += 1
            else:
                ignored.append(rel)
        if not found:
            raise DataError(f"class folder {root / name} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            "add images or remove the folder")
    return FolderIndex(root, classes, files, ignored)


def decode_image(path: Path, size: int, aspect: str = "stretch") -> np.ndarray:
    """One file as uint8 RGB [size, size, 3] by the image contract (export.images.pil: what the
    SavedModel's `predict_image_bytes` does in the graph; its pixels are whole grey levels)."""
    from export.images import ImageContract, pil
    return pil.decode(Path(path).read_bytes(), ImageContract(size, aspect), np.uint8)


def load_images(index: FolderIndex, size: int, what: str = "--data",
                max_corrupt_share: float = MAX_CORRUPT_SHARE, aspect: str = "stretch") -> ImageFolder:
    """Decode every file of `index` at `size` x `size` (one thread per CPU: Pillow releases the GIL
    while it decodes and resizes); skip unreadable ones up to `max_corrupt_share` (DataError naming
    them beyond it, or when a class loses every image)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from export.images import ImageError
    images = np.empty((len(index.files), size, size, 3), dtype=np.uint8)
    labels: list[int] = []
    kept: list[str] = []
    corrupt: list[str] = []
    digest = hashlib.sha256(f"decode-v{DECODE_VERSION}\n".encode())

    def one(rel: str) -> np.ndarray | None:
        try:
            return decode_image(index.root / rel, size, aspect)
        except (ImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        decoded = pool.map(one, [rel for rel, _ in index.files])
        for (rel, label), pixels in zip(index.files, decoded, strict=True):
            digest.update(f"{rel}\0{sha256_file(index.root / rel)}\n".encode())  # every file, readable or not
            if pixels is None:
                corrupt.append(rel)
                continue
            images[len(kept)] = pixels
            kept.append(rel)
            labels.append(label)
    total = len(index.files)
    if corrupt and len(corrupt) > max_corrupt_share * total:
        shown = ", ".join(corrupt[:5]) + (f" and {len(corrupt) - 5} more" if len(corrupt) > 5 else "")
        raise DataError(f"{len(corrupt)} of {total} image files in {what} {index.root} cannot be read "
                        f"(more than {max_corrupt_share:.0%}): {shown}; fix or remove them")
    folder = ImageFolder(index.root, images[:len(kept)], np.asarray(labels, dtype=np.int64),
                         index.class_names, kept, digest.hexdigest(), index.ignored, corrupt)
    empty = [name for name, n in folder.per_class().items() if n == 0]
    if empty:
        raise DataError(f"class folder {index.root / empty[0]} has no readable images "
                        f"(unreadable: {', '.join(c for c in corrupt if c.startswith(empty[0] + '/'))}); "
                        "replace them or remove the folder")
    return folder


def read_image_folder(root: str | Path, size: int, *, what: str = "--data", min_classes: int = 2,
                      max_per_class: int | None = None, seed: int = 0,
                      class_names: Sequence[str] | None = None,
                      max_corrupt_share: float = MAX_CORRUPT_SHARE, aspect: str = "stretch") -> ImageFolder:
    """Scan, optionally subsample and decode a class-per-folder tree. With `class_names` the
    folders must be exactly those classes (a validation or evaluation set for a trained model)."""
    index = scan_folder(root, what, min_classes)
    if class_names is not None and list(class_names) != index.class_names:
        raise DataError(f"{what} {root} has classes {index.class_names}, the model has {list(class_names)}; "
                        "give the same class folders")
    return load_images(index.subsample(max_per_class, seed), size, what, max_corrupt_share, aspect)


def data_sha256(root: str | Path, max_per_class: int | None = None, seed: int = 0) -> str:
    """The content hash `load_images` reports (of every image file, unreadable ones too), without
    decoding: a cache key to decide whether to train at all."""
    index = scan_folder(root).subsample(max_per_class, seed)
    digest = hashlib.sha256(f"decode-v{DECODE_VERSION}\n".encode())
    for rel, _ in index.files:
        digest.update(f"{rel}\0{sha256_file(index.root / rel)}\n".encode())
    return digest.hexdigest()


# -- splits and samples -----------------------------------------------------------------------

def stratified_split(labels: np.ndarray, val_fraction: float, seed: int = 0,
                     class_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: round(n * val_fraction) of each class's images go to validation.

    DataError when a class would have no validation image or no training image left.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-split must be between 0 and 1 (exclusive), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels) if class_names is None else range(len(class_names)):
        idx = np.flatnonzero(labels == c)
        name = class_names[c] if class_names is not None else str(c)
        n_val = round(len(idx) * val_fraction)
        if n_val == 0:
            raise DataError(f"--val-split {val_fraction} leaves class {name!r} ({len(idx)} images) with no "
                            "validation image; raise --val-split, add images, or give --val-data DIR")
        if n_val >= len(idx):
            raise DataError(f"--val-split {val_fraction} leaves class {name!r} ({len(idx)} images) with no "
                            "training image; lower --val-split or add images")
        idx = rng.permutation(idx)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a seeded sample of `n` items with the classes in proportion (largest remainder),
    every class present when n >= the number of classes: calibration sets, quick evaluations."""
    classes, counts = np.unique(labels, return_counts=True)
    n = min(n, len(labels))
    quota = counts * n / counts.sum()
    take = np.floor(quota).astype(int)
    if n >= len(classes):
        take = np.maximum(take, 1)
    for c in np.argsort(-(quota - take), kind="stable"):
        if take.sum() >= n:
            break
        take[c] += 1
    while take.sum() > n:
        take[np.argmax(take)] -= 1
    take = np.minimum(take, counts)
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
              for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


# -- demo data sets -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoDataset:
    """A labeled data set shipped inside an installed package, written out as an image folder."""

    name: str
    package: str
    description: str
    load: Callable[[], tuple[np.ndarray, np.ndarray, list[str]]]  # uint8 images [N, H, W], labels, names


def _lfw_subset() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from skimage import data
    images = np.asarray(data.lfw_subset())  # 100 faces, then 100 non-faces; float in [0, 1]
    labels = np.repeat([0, 1], [100, len(images) - 100])
    return np.round(images * 255).astype(np.uint8), labels, ["face", "non_face"]


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits
    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64), [str(i) for i in range(10)]


DEMO_DATASETS: dict[str, DemoDataset] = {
    "lfw_subset": DemoDataset(
        "lfw_subset", "scikit-image",
        "face / non_face: 100 + 100 grey 25x25 crops from Labeled Faces in the Wild", _lfw_subset),
    "digits": DemoDataset("digits", "scikit-learn",
                          "handwritten digits 0-9: 1,797 grey 8x8 images (UCI optical digits)", _digits),
}


def demo_dataset(name: str) -> DemoDataset:
    try:
        return DEMO_DATASETS[name]
    except KeyError:
        raise DataError(f"unknown demo data set {name!r}; choose one of: {', '.join(DEMO_DATASETS)}") from None


def write_demo(name: str, out: str | Path, *, max_per_class: int | None = None, seed: int = 0,
               overwrite: bool = False) -> dict:
    """Write demo data set `name` as `out/<class>/<name>_<i>.png` (staged, renamed when complete).

    With `max_per_class`, a seeded sample of each class. Returns what was written.
    """
    from PIL import Image
    ds = demo_dataset(name)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    images, labels, names = ds.load()
    keep = np.arange(len(labels))
    if max_per_class:
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([
            idx if len(idx) <= max_per_class else rng.choice(idx, size=max_per_class, replace=False)
            for idx in (np.flatnonzero(labels == c) for c in range(len(names)))]))
    with staged_dir(out, overwrite=True) as tmp:
        for class_name in names:
            (tmp / class_name).mkdir()
        for i in keep:
            Image.fromarray(images[i]).save(tmp / names[labels[i]] / f"{name}_{i:04d}.png", optimize=False)
    counts = np.bincount(labels[keep], minlength=len(names))
    return {"name": name, "package": ds.package, "out": str(out), "images": len(keep),
            "images_per_class": {n: int(k) for n, k in zip(names, counts, strict=True)}}


def resolve_data(spec: str, demo_root: str | Path) -> Path:
    """`demo:NAME` -> the demo folder under `demo_root` (written on first use), else the path itself."""
    if spec.startswith("demo:"):
        name = spec.removeprefix("demo:")
        demo_dataset(name)
        folder = Path(demo_root) / name
        if not folder.is_dir():
            try:
                write_demo(name, folder)
            except ExportError:  # written meanwhile by another run
                pass
        return folder
    return Path(spec)
