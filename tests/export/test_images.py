"""The image contract (export/images) without TensorFlow: kinds, colour, EXIF orientation (all 8
values, against Pillow's own exif_transpose), aspect policies and bad files by their message.
The TF twin's agreement is in test_images_tf.py."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from export.core.errors import DataError
from export.images import ImageContract, ImageError, corpus, header, pil
from export.images.contract import MAX_IMAGE_PIXELS, jpeg_scale

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def files():
    return corpus.files(large=False)


def _pillow_upright(data: bytes) -> np.ndarray:
    """An independent reference: Pillow's exif_transpose of the full-size decode."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_read_and_applied(files, orientation):
    data = files[f"chelsea_exif{orientation}.jpg"]
    assert header.exif_orientation(data) == orientation
    pixels, kind = pil.decode_pixels(data, 224)  # 400 x 266: no DCT downscale at 224
    assert kind == "JPEG"
    np.testing.assert_array_equal(pixels, _pillow_upright(data))
    upright = pil.decode(files["chelsea_exif1.jpg"])
    assert np.abs(pil.decode(data) - upright).mean() < 1.5  # the same picture, re-encoded rotated


def test_orientation_is_one_without_exif_or_when_malformed(files):
    assert header.exif_orientation(files["chelsea_native.jpg"]) == 1
    assert header.exif_orientation(files["chelsea_rgb.png"]) == 1
    data = files["chelsea_exif6.jpg"]
    at = data.index(b"Exif\x00\x00")
    broken = data[:at + 6] + b"XX" + data[at + 8:]  # no byte order mark: no orientation
    assert header.exif_orientation(broken) == 1
    assert header.exif_orientation(data[:at + 12]) == 1  # cut inside the TIFF header


@pytest.mark.parametrize("name", ["coffee_cmyk.jpg", "camera_grey.jpg", "camera_grey.png", "chelsea_rgba.png",
                                  "coffee_palette.png", "coffee.gif", "chelsea.bmp", "camera_grey.bmp",
                                  "coffee.webp", "astronaut_animated.gif", "chelsea_rgb.png"])
def test_every_kind_decodes_to_pillows_rgb(files, name):
    data = files[name]
    pixels, _ = pil.decode_pixels(data, 1024)  # no DCT downscale: compare with a full decode
    with Image.open(io.BytesIO(data)) as img:
        expected = np.asarray(img.convert("RGB"))  # alpha dropped, first frame, grey replicated
    np.testing.assert_array_equal(pixels, expected)
    out = pil.decode(data)
    assert out.shape == (224, 224, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 255


def test_sixteen_bit_png_keeps_the_high_byte(files):
    grey, _ = pil.decode_pixels(files["coins_grey16.png"], 224)
    coins = corpus._photo("coins")[..., 0]
    np.testing.assert_array_equal(grey[..., 0], coins)  # stored as coins * 256 + 100
    rgb, _ = pil.decode_pixels(files["rocket_rgb16.png"], 224)
    np.testing.assert_array_equal(rgb, corpus._photo("rocket"))  # stored as rocket * 256 + 203


def test_transparent_gif_pixels_are_black():
    idx = np.arange(64, dtype=np.uint8).reshape(8, 8) % 4
    img = Image.fromarray(idx, mode="P")
    img.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200, 90, 90, 90] + [0] * 756)
    buf = io.BytesIO()
    img.save(buf, format="GIF", transparency=2)
    pixels, _ = pil.decode_pixels(buf.getvalue(), 224)
    assert (pixels[idx == 2] == 0).all() and (pixels[idx == 0] == [200, 10, 10]).all()


def test_large_jpeg_is_downscaled_in_the_dct_domain(files):
    big = corpus.files(large=True)["coffee_3000.jpg"]
    with Image.open(io.BytesIO(big)) as img:
        w, h = img.size
    r = jpeg_scale(w, h, 224)
    assert r == 8  # 3000 x 2000 -> 375 x 250, both sides still >= 224
    pixels, _ = pil.decode_pixels(big, 224)
    assert pixels.shape == (-(-h // r), -(-w // r), 3)
    assert jpeg_scale(w, h, 300) == 4 and jpeg_scale(446, 900, 224) == 1
    assert jpeg_scale(447, 447, 224) == 2 and jpeg_scale(448, 900, 224) == 2


def test_center_crop_takes_the_central_square(files):
    data = files["chelsea_rgb.png"]
    full, _ = pil.decode_pixels(data, 64)
    h, w = full.shape[:2]
    side = min(h, w)
    square = full[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    want = pil.round_pixels(pil.resize(square, 64))
    np.testing.assert_array_equal(pil.decode(data, ImageContract(64, "center_crop")), want)
    assert not np.allclose(pil.decode(data, ImageContract(64, "stretch")), want, atol=1)


@pytest.mark.parametrize("name", ["chelsea_rgb.png", "camera_grey.png", "coins_grey16.png", "camera_grey.jpg",
                                  "camera_grey.bmp", "coffee.gif", "chelsea_exif6.jpg", "astronaut_160.jpg"])
@pytest.mark.parametrize("aspect", ["stretch", "center_crop"])
def test_output_is_whole_grey_levels_the_same_in_float_and_uint8(files, name, aspect):
    contract = ImageContract(96, aspect)
    rgb, _ = pil.decode_pixels(files[name], 96)
    out = pil.decode(files[name], contract)
    assert out.dtype == np.float32 and out.shape == (96, 96, 3)
    np.testing.assert_array_equal(out, np.rint(out))  # whole grey levels
    assert out.min() >= 0 and out.max() <= 255
    # rounded once after the float resize, the same through the full RGB path (grey sources resize one plane)
    np.testing.assert_array_equal(out, np.clip(np.rint(pil.resize(pil.crop(rgb, aspect), 96)), 0, 255))
    u8 = pil.decode(files[name], contract, np.uint8)
    assert u8.dtype == np.uint8
    np.testing.assert_array_equal(u8, out)


@pytest.mark.parametrize("aspect", ["stretch", "center_crop"])
def test_fast_paths_equal_the_plain_resize_then_round(files, aspect):
    """contract_pixels resizes small RGB images in one stacked Pillow call per pass and grey ones once:
    bit for bit what rounding `resize` (three planes, one at a time) gives, every file and odd shapes."""
    rng = np.random.default_rng(0)
    odd = {f"random_{h}x{w}": rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in ((25, 25), (7, 300), (224, 5), (1, 1))}
    inputs = {**{n: pil.decode_pixels(d, 224)[0] for n, d in files.items()}, **odd}
    small = 0
    for name, rgb in inputs.items():
        square = pil.crop(rgb, aspect)
        small += square.shape[0] <= 224
        want = pil.round_pixels(pil.resize(square, 224))
        for source in (rgb, rgb[..., :1]):
            got = pil.contract_pixels(source, ImageContract(224, aspect))
            grey = np.repeat(pil.crop(source, aspect), 3, axis=2)
            expect = want if source is rgb else pil.round_pixels(pil.resize(grey, 224))[..., :1]
            np.testing.assert_array_equal(got if source is rgb else got[..., :1], expect, err_msg=name)
            if source is not rgb:
                assert (got == got[..., :1]).all(), name
    assert 4 <= small < len(inputs)  # both branches ran


def test_rounding_is_half_to_even_and_clipped():
    x = np.array([-3.0, -0.5, 0.5, 1.5, 2.5, 127.49998, 254.5, 255.5, 300.0], np.float32)
    np.testing.assert_array_equal(pil.round_pixels(x), [0, 0, 0, 2, 2, 127, 254, 255, 255])
    u8 = np.array([[[0, 17, 255]]], np.uint8)  # whole levels already (samples.load_photo): kept, as float32
    assert pil.round_pixels(u8).dtype == np.float32 and (pil.round_pixels(u8) == u8).all()
    assert pil.decode(pil.encode_png(u8)).shape == (224, 224, 3)  # encode_* take uint8 photos too


def test_resize_is_antialiased_bilinear_in_float():
    stripes = np.zeros((8, 8, 3), np.uint8)
    stripes[:, ::2] = 255
    out = pil.resize(stripes, 4)  # 2:1 with a triangle filter over 4 taps: inside, the stripes average out
    np.testing.assert_allclose(out[:, 1:3], 127.5, atol=1e-4)
    assert out.dtype == np.float32


@pytest.mark.parametrize("name, message", [
    ("truncated.jpg", "corrupt or truncated JPEG data"),
    ("text.jpg", "not a JPEG, PNG, GIF, BMP or WebP file"),
    ("empty.png", "not a JPEG, PNG, GIF, BMP or WebP file"),
])
def test_bad_files_fail_with_one_line(tmp_path, name, message):
    data = corpus.bad_files()[name]
    with pytest.raises(ImageError, match=f"^{message}$"):
        pil.decode(data)
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageError, match=f"^cannot decode image .*{name}: {message}$"):
        pil.decode_file(tmp_path / name)
    assert isinstance(ImageError("x"), DataError)  # training skips them like any unreadable file


def test_palette_bmp_is_refused():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).convert("1").save(buf, format="BMP")
    with pytest.raises(ImageError, match=r"^BMP with 1 bits per pixel and compression 0: only uncompressed 8-bit"):
        pil.decode(buf.getvalue())


def test_declared_size_over_the_limit_is_refused_before_decoding():
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 10
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG")
    with pytest.raises(ImageError, match=f"more than the limit of {MAX_IMAGE_PIXELS:,}"):
        pil.decode(buf.getvalue())


def test_a_png_bomb_is_refused_by_its_header():
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match=r"^image declares 3,600,000,000 pixels, more than the limit of 50,000,000"):
        pil.decode(bomb)


def test_missing_file_names_itself(tmp_path):
    with pytest.raises(ImageError, match=r"^cannot read image .*ghost\.jpg: No such file"):
        pil.decode_file(tmp_path / "ghost.jpg")


def test_contract_round_trips_and_refuses_unknown_aspects():
    c = ImageContract(160, "center_crop")
    d = c.to_dict()
    assert ImageContract.from_dict(d) == c and d["version"] == 2 and "EXIF" in d["orientation"]
    assert "whole grey levels" in d["output"] and "rounded half to even" in d["output"]
    with pytest.raises(DataError, match=r"^image contract version 1 is not 2; use the resnet-deploy that wrote"):
        ImageContract.from_dict({**d, "version": 1})  # v1 pixels were not rounded
    assert "center_crop" in c.markdown() and "bilinear" in c.markdown()
    with pytest.raises(DataError, match="image aspect policy 'pad' is unknown; choose one of: stretch, center_crop"):
        ImageContract(224, "pad")
