"""``input_reference``: the image an image-to-video request starts from, checked before it is decoded.

The OpenAI Videos API sends it as a file part of a multipart POST (the ``openai`` SDK's
``videos.create(input_reference=...)``); a JSON body gives it as a ``data:`` URL string. Either way
the bytes are checked here, in the HTTP handler, against the operator's limits (``Limits``):

1. the byte size (``max_input_reference_bytes``), before anything is parsed;
2. the format, from the file's own header (PNG, JPEG or WebP; a declared content type that
   disagrees with it is refused too);
3. the pixel count (``max_input_reference_pixels``) from the header, which Pillow reads lazily: the
   size is known before a single pixel is decoded, so a decompression bomb is refused unread. Pillow's
   own bound (``Image.MAX_IMAGE_PIXELS``) is set to the same limit, as a second fence;
4. one frame (an animated PNG or WebP is refused), then a full decode, so a truncated or corrupt
   file is refused here rather than failing the job later;
5. the aspect ratio against the video's: the image is resized to the video's size when its aspect
   ratio is within ``input_reference_aspect_tolerance`` of the video's, and refused otherwise.

The job stores the bytes as sent (``server.store``) with an :class:`~server.job_spec.InputReference`
(its key, sha256, format and size); the worker decodes them again with :func:`fitted_image`.
Every refusal is an :class:`~server.errors.APIError` 400 naming ``input_reference`` and the rule.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guidance.images import fit_image
from server.errors import APIError
from server.job_spec import INPUT_REFERENCE_KEY, InputReference
from server.schema import Limits

FIELD = "input_reference"
#: Pillow's format name -> the media type it is stored and reported as.
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
#: Declared content types accepted for each format (``image/jpg`` is a common misspelling).
DECLARED = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/webp": "WEBP"}
#: A ``data:`` URL: media type, optional parameters, ``;base64``, then the payload.
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,", re.IGNORECASE)


@dataclass(frozen=True)
class UploadedImage:
    """A multipart file part as read from the body: its bytes and the content type its part declared."""

    data: bytes
    content_type: str | None
    filename: str | None = None


@dataclass(frozen=True)
class CheckedInput:
    """An image or clip that passed every check: its bytes (as sent) and what the job records of it."""

    data: bytes
    reference: InputReference


def refuse(message: str, code: str = "invalid_input_reference") -> APIError:
    """The 400 every input_reference rule gives, naming the field."""
    return APIError(400, f"{FIELD}: {message}", param=FIELD, code=code)


def bound_pillow(max_pixels: int) -> None:
    """Pillow's decompression-bomb bound (``Image.MAX_IMAGE_PIXELS``, process-wide) at the operator's
    pixel limit: ``Image.open`` then refuses, from the header, an image over twice the limit, and the
    checks below refuse anything over the limit itself before decoding. Set, never restored: a
    temporary change would race between the handlers and the worker thread."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS != max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def decode_data_url(value: str, limits: Limits) -> UploadedImage:
    """The bytes of a ``data:<type>;base64,<payload>`` string, with their declared type; the size limit
    is checked on the payload's length before it is decoded."""
    match = _DATA_URL.match(value)
    if match is None:
        raise refuse("must be a data: URL with a base64 payload (data:image/png;base64,... or "
                      "data:video/mp4;base64,...) or a multipart file part; URLs of other kinds are not fetched")
    payload = value[match.end():]
    if len(payload) > (limits.max_input_reference_bytes + 2) // 3 * 4 + 4:
        what = "video" if (match.group("type") or "").lower().startswith("video/") else "image"
        raise refuse(f"the {what} exceeds max_input_reference_bytes {limits.max_input_reference_bytes}",
                      code="input_reference_too_large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise refuse("the data: URL's payload is not valid base64") from None
    return UploadedImage(data, (match.group("type") or "").lower() or None)


def sized_payload(upload: UploadedImage, limits: Limits, what: str) -> bytes:
    """The upload's bytes, refused when empty or over ``max_input_reference_bytes`` (an image or a video)."""
    data = upload.data
    if len(data) > limits.max_input_reference_bytes:
        raise refuse(f"the {what} is {len(data)} bytes; max_input_reference_bytes is "
                     f"{limits.max_input_reference_bytes}", code="input_reference_too_large")
    if not data:
        raise refuse(f"the {what} is empty")
    return data


def check_image(upload: UploadedImage | str, limits: Limits, width: int, height: int) -> CheckedInput:
    """The checks of the module docstring, for a video of ``width`` x ``height``."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(upload, str):
        upload = decode_data_url(upload.strip(), limits)
    data = sized_payload(upload, limits, "image")
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    if declared and declared not in DECLARED and declared != "application/octet-stream":
        raise refuse(f"content type {declared!r} is not accepted; send image/png, image/jpeg or image/webp",
                      code="unsupported_input_reference")
    bound_pillow(limits.max_input_reference_pixels)
    try:
        image = Image.open(io.BytesIO(data), formats=tuple(MEDIA_TYPES))
    except UnidentifiedImageError:
        raise refuse("not a PNG, JPEG or WebP image (the file's header says neither)",
                      code="unsupported_input_reference") from None
    except Image.DecompressionBombError:
        raise _too_many_pixels(None, limits) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise refuse(f"the image cannot be read: {exc}") from None
    with image:
        kind = image.format
        if declared in DECLARED and DECLARED[declared] != kind:
            raise refuse(f"the part says {declared} but the file is {MEDIA_TYPES[kind]}",
                          code="unsupported_input_reference")
        size = image.size  # from the header: nothing is decoded yet
        if size[0] < 1 or size[1] < 1 or size[0] * size[1] > limits.max_input_reference_pixels:
            raise _too_many_pixels(size, limits)
        if getattr(image, "n_frames", 1) != 1:
            raise refuse(f"the image has {image.n_frames} frames; image-to-video starts from one image, not an "
                          "animation")
        try:
            image.load()
        except Image.DecompressionBombError:
            raise _too_many_pixels(size, limits) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise refuse(f"the image cannot be decoded (truncated or corrupt?): {exc}") from None
    check_aspect(size, width, height, limits)
    reference = InputReference(key=INPUT_REFERENCE_KEY, sha256=hashlib.sha256(data).hexdigest(),
                               media_type=MEDIA_TYPES[kind], width=size[0], height=size[1], size_bytes=len(data))
    return CheckedInput(data, reference)


def _too_many_pixels(size: tuple[int, int] | None, limits: Limits) -> APIError:
    got = f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels" if size else "too many pixels"
    return refuse(f"the image is {got}; max_input_reference_pixels is {limits.max_input_reference_pixels} "
                   "(checked from its header, before decoding)", code="input_reference_too_large")


def check_aspect(size: tuple[int, int], width: int, height: int, limits: Limits, what: str = "image") -> None:
    """The resize rule: the image's (or an input video's, ``what``) aspect ratio within
    ``input_reference_aspect_tolerance`` (relative) of the video's, so resizing it to the video's size
    does not visibly stretch it."""
    image_ratio, video_ratio = size[0] / size[1], width / height
    off = abs(image_ratio / video_ratio - 1.0)
    if off > limits.input_reference_aspect_tolerance:
        raise refuse(
            f"the {what} is {size[0]}x{size[1]} (aspect {image_ratio:.3f}) and the video {width}x{height} (aspect "
            f"{video_ratio:.3f}): the {what} is resized to the video's size only when their aspect ratios differ by "
            f"at most {limits.input_reference_aspect_tolerance:.0%} (input_reference_aspect_tolerance); crop the "
            f"{what} or ask for a size of its aspect ratio", code="input_reference_aspect_mismatch")


def fitted_image(data: bytes, reference: InputReference, width: int, height: int) -> Any:
    """The stored image as the sampler takes it: RGB, resized to the video's ``width`` x ``height``
    (Lanczos) when its size differs. ``ValueError`` when the bytes are not the ones the job recorded."""
    from PIL import Image

    digest = hashlib.sha256(data).hexdigest()
    if digest != reference.sha256:
        raise ValueError(f"input_reference: the stored image's sha256 is {digest}, the job recorded "
                         f"{reference.sha256}")
    with Image.open(io.BytesIO(data), formats=tuple(MEDIA_TYPES)) as image:
        if image.size != (reference.width, reference.height):
            raise ValueError(f"input_reference: the stored image is {image.size[0]}x{image.size[1]}, the job recorded "
                             f"{reference.width}x{reference.height}")
        return fit_image(image, width, height)


def image_file(path: str | Path, width: int, height: int, limits: Limits | None = None) -> Any:
    """An image file checked by the server's rules (default limits) and fitted to ``width`` x ``height``,
    as ``nrg generate --image`` uses it. ``ValueError`` with the rule that refused it."""
    data = Path(path).read_bytes()
    try:
        checked = check_image(UploadedImage(data, None, str(path)), limits or Limits(), width, height)
    except APIError as exc:
        raise ValueError(f"--image {path}: {exc.message.removeprefix(FIELD + ': ')}") from None
    return fitted_image(data, checked.reference, width, height)
