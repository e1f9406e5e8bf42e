"""The image contract as data: size, aspect policy and the fixed decode/resize rules.

Steps, identical in both twins (`pil.decode`, `tf_ops.decode`):
1. kind from the magic bytes: JPEG, PNG, GIF, BMP, WebP; anything else is refused;
2. JPEG: libjpeg's accurate integer IDCT (ISLOW, TF's INTEGER_ACCURATE) with fancy chroma
   upsampling, downscaled in the DCT domain by the largest of 8, 4, 2 that keeps both sides
   at least `size` (PIL `draft`, TF `decode_jpeg(ratio=)`; bit-identical, measured). That is
   today's training decode speed: a margin of 2 x size decoded 1000-px JPEGs 2.8x slower;
   CMYK and grey JPEGs convert to RGB; the EXIF orientation (tag 0x0112 of IFD0 in the
   APP1 segment) is applied, all 8 values; other kinds carry no orientation;
3. colour: grey is replicated to RGB, palettes expanded, 16-bit samples keep their high
   byte, alpha is dropped (the stored colour is used, as TF's decoders and MediaPipe do),
   transparent GIF pixels are black (TF's GIF decoder), an 8-bit BMP is read as grey;
4. aspect: `stretch` (the whole image, aspect not kept) or `center_crop` (the central
   square of the upright image);
5. resize to size x size: bilinear (triangle filter) with antialiasing, half-pixel centres,
   Pillow BILINEAR on mode "F" (float64 sums, float32 between the passes), which tf_ops.resize
   reproduces with graph ops bit for bit;
6. clip to [0, 255] and round half to even (np.rint, tf.round): whole grey levels, so the server,
   clients, training's uint8 storage and MediaPipe's uint8 images all see the same integers;
   output RGB [size, size, 3], float32 for the model's input (uint8 where a path stores pixels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from export.core.errors import DataError

CONTRACT_VERSION = 2  # 2: the output is rounded to whole grey levels (1: float, not rounded)
ASPECTS = ("stretch", "center_crop")
#: File kinds the contract decodes, by name.
KINDS = ("JPEG", "PNG", "GIF", "BMP", "WebP")
#: The largest image (width x height) any path decodes: a few KB of PNG can declare
#: 50,000 x 50,000 pixels, which a decoder would allocate (7.5 GB) before resizing.
MAX_IMAGE_PIXELS = 50_000_000
#: DCT-domain JPEG downscale factors, largest first, and the margin kept above the model size.
JPEG_SCALES = (8, 4, 2)
JPEG_SCALE_MARGIN = 1  # 2 was 2.8x slower on 1000-px JPEGs in training; 1 is as fast as draft mode was
#: The EXIF orientation reader looks this far into a JPEG, at this many segments and IFD entries.
EXIF_SCAN_BYTES = 131072
EXIF_MAX_SEGMENTS = 16
EXIF_MAX_ENTRIES = 64


class ImageError(DataError):
    """A file that is no image the contract decodes (unknown kind, corrupt, truncated, too large)."""


def jpeg_scale(width: int, height: int, size: int) -> int:
    """The DCT-domain downscale for a width x height JPEG: the largest of 8, 4, 2 that keeps
    both sides at least JPEG_SCALE_MARGIN x size, else 1."""
    for r in JPEG_SCALES:
        if -(-width // r) >= JPEG_SCALE_MARGIN * size and -(-height // r) >= JPEG_SCALE_MARGIN * size:
            return r
    return 1


@dataclass(frozen=True)
class ImageContract:
    """How a file becomes the model's pixels: output size and aspect policy (per variant); the
    rest of the rules are fixed by CONTRACT_VERSION and described in to_dict()."""

    size: int = 224
    aspect: str = "stretch"

    def __post_init__(self) -> None:
        if self.aspect not in ASPECTS:
            raise DataError(f"image aspect policy {self.aspect!r} is unknown; choose one of: {', '.join(ASPECTS)}")
        if self.size < 1:
            raise DataError(f"image size must be >= 1, got {self.size}")

    def to_dict(self) -> dict[str, Any]:
        """The contract as the manifest records it (and the README renders)."""
        return {
            "version": CONTRACT_VERSION, "size": self.size, "aspect": self.aspect,
            "kinds": list(KINDS), "max_pixels": MAX_IMAGE_PIXELS,
            "jpeg": ("libjpeg accurate integer IDCT (ISLOW), fancy upsampling; DCT-domain downscale by the largest "
                     f"of {', '.join(map(str, JPEG_SCALES))} keeping both sides >= {JPEG_SCALE_MARGIN} x size"),
            "orientation": "EXIF 0x0112 (IFD0 of a JPEG's APP1 segment) applied, values 1-8; other kinds: none",
            "colour": "grey replicated to RGB; palette expanded; 16-bit: high byte; CMYK JPEG converted to RGB",
            "alpha": "dropped (the stored colour is used); transparent GIF pixels are black",
            "resize": ("bilinear (triangle filter) with antialiasing, half-pixel centres: PIL BILINEAR on mode F "
                       "(float64 sums, float32 between the passes), reproduced in the graph bit for bit"),
            "output": ("RGB [size, size, 3] of whole grey levels 0-255 (clipped, rounded half to even after the "
                       "resize), float32 for the model's image input"),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageContract:
        if int(d.get("version", CONTRACT_VERSION)) != CONTRACT_VERSION:
            raise DataError(f"image contract version {d.get('version')} is not {CONTRACT_VERSION}; "
                            "use the resnet-deploy that wrote the bundle")
        return cls(size=int(d["size"]), aspect=str(d.get("aspect", "stretch")))

    def markdown(self) -> str:
        """The contract as README lines (one bullet per rule)."""
        d = self.to_dict()
        lines = [f"- output: {d['output']}, {self.size} x {self.size}, aspect policy `{self.aspect}`"]
        lines += [f"- {k}: {d[k]}" for k in ("jpeg", "orientation", "colour", "alpha", "resize")]
        lines.append(f"- kinds: {', '.join(KINDS)}; at most {MAX_IMAGE_PIXELS:,} pixels; anything else is refused")
        return "\n".join(lines)


DEFAULT_CONTRACT = ImageContract()
