"""``input_reference`` checks: format from the header, byte and pixel limits before decoding, one frame,
the resize rule, data: URLs; and the stored image as the worker fits it."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from server.errors import APIError
from server.input_reference import UploadedImage, check_image, decode_data_url, fitted_image
from server.schema import Limits

LIMITS = Limits(max_input_reference_bytes=64 * 1024, max_input_reference_pixels=256 * 256)


def encoded(width: int, height: int, kind: str = "PNG", seed: int | None = 0, **save) -> bytes:
    """A random image (``seed``), or a flat one (None: compresses to little)."""
    pixels = (np.zeros((height, width, 3), dtype=np.uint8) if seed is None
              else np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=kind, **save)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and whose pixel data is a few bytes: decoding it
    would allocate width * height * 3 bytes (a decompression bomb) and then fail."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def refused(upload, limits=LIMITS, width=64, height=64) -> APIError:
    with pytest.raises(APIError) as caught:
        check_image(upload, limits, width, height)
    assert caught.value.status == 400 and caught.value.param == "input_reference"
    assert caught.value.message.startswith("input_reference: ")
    return caught.value


@pytest.mark.parametrize(("kind", "media_type", "save"), [("PNG", "image/png", {}), ("JPEG", "image/jpeg", {}),
                                                         ("WEBP", "image/webp", {"lossless": True})])
def test_png_jpeg_and_webp_are_recorded_from_their_header(kind, media_type, save):
    data = encoded(64, 48, kind, **save)
    for declared in (media_type, None, "application/octet-stream"):
        checked = check_image(UploadedImage(data, declared), LIMITS, 64, 48)
        ref = checked.reference
        assert checked.data == data and ref.media_type == media_type and (ref.width, ref.height) == (64, 48)
        assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size_bytes == len(data)
        assert ref.key == "input_reference"


def test_other_formats_and_mislabelled_parts_are_refused():
    assert refused(UploadedImage(b"GIF89a" + b"\0" * 100, None)).code == "unsupported_input_reference"
    assert "not a PNG, JPEG or WebP" in refused(UploadedImage(encoded(8, 8, "BMP"), None)).message
    assert "content type 'text/plain'" in refused(UploadedImage(encoded(8, 8), "text/plain")).message
    assert "says image/jpeg but the file is image/png" in refused(UploadedImage(encoded(8, 8), "image/jpeg")).message
    assert "empty" in refused(UploadedImage(b"", "image/png")).message


def test_the_byte_limit_is_checked_before_anything_is_parsed():
    data = b"\0" * (LIMITS.max_input_reference_bytes + 1)  # not even an image
    error = refused(UploadedImage(data, "image/png"))
    assert error.code == "input_reference_too_large" and "max_input_reference_bytes is 65536" in error.message
    # A data: URL's payload is measured before it is decoded.
    error = refused("data:image/png;base64," + "A" * (LIMITS.max_input_reference_bytes * 2))
    assert error.code == "input_reference_too_large"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own, then our refusal
def test_the_pixel_limit_is_read_from_the_header_before_decoding():
    error = refused(UploadedImage(encoded(257, 256, seed=None), "image/png"), width=257, height=256)
    assert "257x256 = 65792 pixels; max_input_reference_pixels is 65536" in error.message
    assert error.code == "input_reference_too_large"
    # A header claiming 100000 x 100000 (30 GB decoded) in 60 bytes: refused from the header, never decoded
    # (decoding it would fail on its few bytes of data, with another message).
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 100
    for limits in (LIMITS, Limits()):  # ours, and the default under Pillow's own bound
        assert "pixels" in refused(UploadedImage(bomb, "image/png"), limits).message


def test_one_frame_only_and_a_truncated_file_is_refused():
    frames = [Image.new("RGB", (16, 16), color) for color in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, format="PNG", save_all=True, append_images=frames[1:])
    assert "2 frames" in refused(UploadedImage(out.getvalue(), "image/png"), width=16, height=16).message
    data = encoded(64, 64)
    assert "cannot be" in refused(UploadedImage(data[: len(data) // 2], "image/png")).message


def test_an_image_is_resized_within_the_aspect_tolerance_and_refused_beyond_it():
    check_image(UploadedImage(encoded(128, 128), None), LIMITS, 64, 64)  # 2x: resized
    check_image(UploadedImage(encoded(100, 96), None), LIMITS, 64, 64)  # 4% off: resized
    error = refused(UploadedImage(encoded(64, 32), None))
    assert error.code == "input_reference_aspect_mismatch"
    assert "64x32 (aspect 2.000) and the video 64x64 (aspect 1.000)" in error.message
    assert "at most 5%" in error.message and "input_reference_aspect_tolerance" in error.message


def test_data_urls():
    data = encoded(64, 64)
    text = "data:image/png;base64," + base64.b64encode(data).decode()
    assert check_image(text, LIMITS, 64, 64).data == data
    assert decode_data_url("data:;base64," + base64.b64encode(data).decode(), LIMITS).content_type is None
    assert "says image/jpeg" in refused("data:image/jpeg;base64," + base64.b64encode(data).decode()).message
    assert "not valid base64" in refused("data:image/png;base64,@@@@").message
    for text in ("https://example.com/cat.png", "data:image/png,rawbytes", "/etc/passwd"):
        assert "data: URL" in refused(text).message


def test_the_worker_fits_the_stored_image_to_the_video_and_checks_its_digest():
    data = encoded(128, 96, "JPEG")
    ref = check_image(UploadedImage(data, "image/jpeg"), LIMITS, 64, 48).reference
    image = fitted_image(data, ref, 64, 48)
    assert image.mode == "RGB" and image.size == (64, 48)
    same = fitted_image(encoded(64, 48), check_image(UploadedImage(encoded(64, 48), None), LIMITS, 64, 48).reference,
                        64, 48)
    assert np.array_equal(np.asarray(same), np.asarray(Image.open(io.BytesIO(encoded(64, 48))).convert("RGB")))
    with pytest.raises(ValueError, match="sha256"):
        fitted_image(encoded(128, 96, "JPEG", seed=1), ref, 64, 48)
