"""A corpus of encoded files made from scikit-image's photos: every kind the contract decodes,
several sizes (up to a 3000-px phone JPEG), all 8 EXIF orientations, and bad files. The twin
agreement tests and `parity --files` run on it, and `make export` on its compact form (one file of
each kind and size, the rotations phones write); everything is seeded and offline."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

from export.images.pil import orient

#: Stored orientation o of an upright image: `orient(stored, o)` gives the upright one back.
_INVERSE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}
#: The orientations a phone camera writes (rotations: upright, 180, 90 and 270 degrees). The mirrored
#: ones (2, 4, 5, 7) are the same code path with a flip added; the full corpus and the twin tests
#: (tests/export/test_images_tf.py) cover all 8.
PHONE_ORIENTATIONS = (1, 3, 6, 8)


def _photo(name: str) -> np.ndarray:
    from skimage import data
    img = np.asarray(data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def _resized(img: np.ndarray, width: int) -> np.ndarray:
    from PIL import Image
    height = max(1, round(img.shape[0] * width / img.shape[1]))
    return np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.LANCZOS))


def _save(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (grey [H, W] or RGB [H, W, 3] uint16), written by hand: Pillow writes no 48-bit PNG."""
    h, w = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = pixels.astype(">u2").reshape(h, -1).tobytes()
    stride = len(rows) // h
    raw = b"".join(b"\0" + rows[i * stride:(i + 1) * stride] for i in range(h))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def oriented_jpeg(upright: np.ndarray, orientation: int, quality: int = 92) -> bytes:
    """A JPEG stored rotated/flipped with EXIF orientation `orientation`, which shows `upright`."""
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = orient(upright, _INVERSE[orientation])
    return _save(Image.fromarray(stored), "JPEG", quality=quality, exif=exif.tobytes())


def files(large: bool = True, compact: bool = False) -> dict[str, bytes]:
    """name -> encoded bytes of the good files (3000-px JPEGs when `large`). `compact` keeps every kind
    and size once (the native and 1000-px progressive JPEGs of one photo each, not of all three) and the
    PHONE_ORIENTATIONS: 23 files instead of 31, for `make export`, whose every file runs through about
    40 paths per variant."""
    from PIL import Image
    astro, coffee, chelsea = _photo("astronaut"), _photo("coffee"), _photo("chelsea")
    out: dict[str, bytes] = {}
    for name, img in (("astronaut", astro), ("coffee", coffee), ("chelsea", chelsea)):
        if not compact or name == "coffee":
            out[f"{name}_native.jpg"] = _save(Image.fromarray(img), "JPEG", quality=90)
        if not compact or name == "astronaut":
            out[f"{name}_1000_progressive.jpg"] = _save(Image.fromarray(_resized(img, 1000)), "JPEG",
                                                        quality=90, progressive=True)
        if large:
            out[f"{name}_3000.jpg"] = _save(Image.fromarray(_resized(img, 3000)), "JPEG", quality=88)
    small = _resized(astro, 160)
    out["astronaut_160.jpg"] = _save(Image.fromarray(small), "JPEG", quality=95)
    out["coffee_cmyk.jpg"] = _save(Image.fromarray(coffee).convert("CMYK"), "JPEG", quality=92)
    out["camera_grey.jpg"] = _save(Image.fromarray(_photo("camera")[..., 0]), "JPEG", quality=92)
    out["camera_grey.png"] = _save(Image.fromarray(_photo("camera")[..., 0]), "PNG")
    out["chelsea_rgb.png"] = _save(Image.fromarray(chelsea), "PNG")
    ramp = np.tile(np.linspace(0, 255, chelsea.shape[1]).astype(np.uint8)[None], (chelsea.shape[0], 1))
    out["chelsea_rgba.png"] = _save(Image.fromarray(np.dstack([chelsea, ramp])), "PNG")
    out["coins_grey16.png"] = png16(_photo("coins")[..., 0].astype(np.uint16) * 256 + 100)
    out["rocket_rgb16.png"] = png16(_photo("rocket").astype(np.uint16) * 256 + 203)
    palette = Image.fromarray(coffee).convert("P", palette=Image.Palette.ADAPTIVE)
    out["coffee_palette.png"] = _save(palette, "PNG")
    out["coffee.gif"] = _save(palette, "GIF")
    out["astronaut_animated.gif"] = _save(Image.fromarray(small), "GIF", save_all=True,
                                          append_images=[Image.fromarray(small[::-1].copy())])
    out["chelsea.bmp"] = _save(Image.fromarray(chelsea), "BMP")
    out["camera_grey.bmp"] = _save(Image.fromarray(_photo("camera")[..., 0]), "BMP")
    out["coffee.webp"] = _save(Image.fromarray(coffee), "WEBP", quality=90)
    upright = _resized(chelsea, 400 if not large else 2000)
    for o in PHONE_ORIENTATIONS if compact else range(1, 9):
        out[f"chelsea_exif{o}.jpg"] = oriented_jpeg(upright, o)
    return out


def bad_files() -> dict[str, bytes]:
    """name -> bytes every path must refuse with one line."""
    from PIL import Image
    jpeg = _save(Image.fromarray(_photo("astronaut")), "JPEG", quality=90)
    return {"truncated.jpg": jpeg[: len(jpeg) // 2], "text.jpg": b"this is not an image\n",
            "empty.png": b""}


def write(out_dir: str | Path, large: bool = True, bad: bool = False, compact: bool = False) -> list[Path]:
    """Write the corpus (`compact`: see files()) and the bad files with `bad` into `out_dir`; returns
    the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in {**files(large, compact), **(bad_files() if bad else {})}.items():
        (out / name).write_bytes(data)
        written.append(out / name)
    return written
