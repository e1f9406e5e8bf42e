"""The bundle README's image section: the image contract (export.images) each variant was
exported with, and what a client that decodes images itself must do to get the server's answer."""
from __future__ import annotations

from typing import Any


def image_section(variants: dict[str, Any]) -> str:
    """Markdown `## Images` for the variants' manifest records (their `image` field)."""
    from export.images import ImageContract
    contracts = {name: ImageContract.from_dict(v["image"]) for name, v in sorted(variants.items()) if v.get("image")}
    if not contracts:
        return ""
    groups: dict[ImageContract, list[str]] = {}
    for name, contract in contracts.items():
        groups.setdefault(contract, []).append(name)
    parts = []
    for contract, names in groups.items():
        parts.append(f"Variants {', '.join(f'`{n}`' for n in names)}:\n\n{contract.markdown()}")
    first = next(iter(groups))
    return f"""## Images: how a file becomes pixels

Every path decodes a file the same way (the image contract, `manifest.json` → `variants.<name>.image`):
`predict_image_bytes` in the SavedModel graph, `resnet-deploy predict --pixels`, `classify`,
`score`, training, calibration and the accuracy gate. It ends in whole grey levels 0..255 (rounded
after the float resize), so a path that stores or sends 8-bit pixels loses nothing; its in-graph and
Python versions give the same levels (bit for bit on the test corpus); `parity.md`'s end-to-end
section measures each path from the file.

{chr(10).join(parts)}

A client that decodes images itself (and sends `image` pixels to `serving_default`, or feeds a
`.tflite` on a phone) gets the server's answer only by doing the same; in Python:

    from export.images import ImageContract, pil
    pixels = pil.decode_file("cat.jpg", ImageContract({first.size}, "{first.aspect}"))  # float32 [{first.size}, {first.size}, 3]
    # whole grey levels; pil.decode_file(..., dtype=numpy.uint8) gives the same values as uint8

Images stored rotated are turned upright by their EXIF orientation (JPEG only); send the file as
the camera wrote it, or upright pixels.

"""
