"""Training decode throughput: the image contract (export.training.data.decode_image) against the
decode training used before the contract (PIL draft + one uint8 bilinear resize, copied here from
git history, commit 164f1e9^). One thread, files read from disk, per file kind; prints images per CPU-second.

    PYTHONPATH=. .venv/bin/python scripts/bench_decode.py [--seconds 3] [--size 224]

Kinds: a 25-px grey PNG (lfw_subset, what `demo:lfw_subset` trains on), a 25-px RGB PNG, a
1000-px and a 3000-px JPEG (scikit-image's astronaut). Numbers only; it never fails on a threshold.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def old_decode_image(path: Path, size: int) -> np.ndarray:
    """Training's decode before the image contract (export/training/data.py at 164f1e9^)."""
    from PIL import Image
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # decode a large JPEG at a reduced scale: much faster
        rgb = img.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def write_files(out: Path) -> dict[str, list[Path]]:
    """kind -> files: 16 lfw_subset PNGs, 16 RGB 25-px PNG crops, one 1000-px and one 3000-px JPEG."""
    from PIL import Image
    from skimage import data

    from export.images import corpus
    faces = (np.asarray(data.lfw_subset())[:16] * 255).round().astype(np.uint8)
    kinds: dict[str, list[Path]] = {"png 25 px grey (lfw_subset)": [], "png 25 px RGB": []}
    for i, face in enumerate(faces):
        p = out / f"face{i}.png"
        Image.fromarray(face).save(p)
        kinds["png 25 px grey (lfw_subset)"].append(p)
    astro = np.asarray(data.astronaut())
    for i in range(16):
        p = out / f"astronaut25_{i}.png"
        Image.fromarray(astro[32 * i:32 * i + 25, 100:125]).save(p)
        kinds["png 25 px RGB"].append(p)
    for width, quality in ((1000, 90), (3000, 88)):
        p = out / f"astronaut_{width}.jpg"
        Image.fromarray(corpus._resized(astro, width)).save(p, quality=quality)
        kinds[f"jpeg {width} px"] = [p]
    return kinds


def rates(fns, paths: list[Path], size: int, seconds: float) -> list[float]:
    """Images per CPU-second of each of `fns` over `paths` (thread CPU time: the machine may be shared),
    the rounds of the functions interleaved, each at least seconds / 5 long; the best round of 5."""
    best = [0.0] * len(fns)
    for fn in fns:
        fn(paths[0], size)  # warm: imports, first open
    for _ in range(5):
        for i, fn in enumerate(fns):
            n, start = 0, time.thread_time()
            while time.thread_time() - start < seconds / 5:
                for p in paths:
                    fn(p, size)
                n += len(paths)
            best[i] = max(best[i], n / (time.thread_time() - start))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per decode and kind")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    from export.training.data import decode_image
    with tempfile.TemporaryDirectory() as tmp:
        kinds = write_files(Path(tmp))
        print(f"{'kind':30s} {'old images/s':>13s} {'contract images/s':>18s} {'slower':>7s}")
        for kind, paths in kinds.items():
            old, new = rates([old_decode_image, decode_image], paths, args.size, args.seconds)
            print(f"{kind:30s} {old:13.0f} {new:18.0f} {old / new:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
