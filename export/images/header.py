"""What a file declares, read from its first bytes without decoding: kind, EXIF orientation,
BMP layout and width x height. The orientation reader is the Python half of the in-graph one
in tf_ops.py: same scan limits, same answer for every file (tested)."""
from __future__ import annotations

from export.images.contract import (
    EXIF_MAX_ENTRIES,
    EXIF_MAX_SEGMENTS,
    EXIF_SCAN_BYTES,
    KINDS,
    MAX_IMAGE_PIXELS,
    ImageError,
)

_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
          (b"BM", "BMP"))
NOT_AN_IMAGE = f"not a {', '.join(KINDS[:-1])} or {KINDS[-1]} file"
#: BMP bits per pixel the contract reads (8 = grey levels) and compressions (0 = none, 3 = bit fields).
BMP_BITS = (8, 24, 32)
BMP_COMPRESSIONS = (0, 3)


def sniff(data: bytes) -> str | None:
    """The kind of `data` from its magic bytes (one of KINDS), or None."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def kind_of(data: bytes) -> str:
    """The kind of `data`, or ImageError with the contract's one line."""
    kind = sniff(data) if isinstance(data, bytes) else None
    if kind is None:
        raise ImageError(NOT_AN_IMAGE)
    if kind == "BMP":
        check_bmp(data)
    return kind


def check_bmp(data: bytes) -> None:
    """ImageError for a BMP layout TensorFlow's decoder misreads (palettes other than 8-bit, RLE)."""
    bits = int.from_bytes(data[28:30], "little") if len(data) >= 30 else 0
    compression = int.from_bytes(data[30:34], "little") if len(data) >= 34 else -1
    if bits not in BMP_BITS or compression not in BMP_COMPRESSIONS:
        raise ImageError(f"BMP with {bits} bits per pixel and compression {compression}: only uncompressed "
                         "8-bit (grey), 24- and 32-bit BMP are supported; convert it to PNG")


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of a JPEG, 1 when absent, invalid or not a JPEG.

    Walks at most EXIF_MAX_SEGMENTS marker segments within the first EXIF_SCAN_BYTES bytes,
    up to the first APP1 that starts with b"Exif\\0\\0", and reads tag 0x0112 among the first
    EXIF_MAX_ENTRIES entries of IFD0. Anything out of bounds or malformed means 1.
    """
    buf = data[:EXIF_SCAN_BYTES]
    n = len(buf)

    def byte(i: int) -> int:
        return buf[i] if 0 <= i < n else 0

    if not (byte(0) == 0xFF and byte(1) == 0xD8):
        return 1
    pos, tiff = 2, -1
    for _ in range(EXIF_MAX_SEGMENTS):
        if byte(pos) != 0xFF or byte(pos + 1) in (0xDA, 0xD9, 0x00):
            break
        length = byte(pos + 2) * 256 + byte(pos + 3)
        if byte(pos + 1) == 0xE1 and buf[pos + 4:pos + 10] == b"Exif\x00\x00":
            tiff = pos + 10
            break
        pos += 2 + length
    if tiff < 0:
        return 1
    little = buf[tiff:tiff + 2] == b"II"
    if not little and buf[tiff:tiff + 2] != b"MM":
        return 1

    def u16(i: int) -> int:
        a, b = byte(i), byte(i + 1)
        return a + 256 * b if little else 256 * a + b

    def u32(i: int) -> int:
        lo, hi = (u16(i), u16(i + 2)) if little else (u16(i + 2), u16(i))
        return lo + 65536 * hi

    ifd = tiff + u32(tiff + 4)
    count = min(u16(ifd), EXIF_MAX_ENTRIES)
    for k in range(count):
        entry = ifd + 2 + 12 * k
        if u16(entry) == 0x0112:
            value = u16(entry + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def declared_pixels(data: bytes) -> int | None:
    """Width x height from the image's header (Pillow reads only the header), None if unreadable."""
    import io
    import re

    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return width * height
    except Image.DecompressionBombError as e:  # "Image size (N pixels) exceeds limit of ..."
        found = re.search(r"\((\d+) pixels\)", str(e))
        return int(found[1]) if found else MAX_IMAGE_PIXELS + 1
    except Exception:  # noqa: BLE001 - a header Pillow can't read: the decoder decides
        return None


def check_declared_size(data: bytes) -> None:
    """ImageError when the header declares more than MAX_IMAGE_PIXELS."""
    pixels = declared_pixels(data)
    if pixels is not None and pixels > MAX_IMAGE_PIXELS:
        raise ImageError(f"image declares {pixels:,} pixels, more than the limit of {MAX_IMAGE_PIXELS:,}; "
                         "downscale it before sending")


def check(data: bytes) -> str:
    """Everything checked before decoding (kind, BMP layout, declared size); returns the kind."""
    kind = kind_of(data)
    check_declared_size(data)
    return kind
