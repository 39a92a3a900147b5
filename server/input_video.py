"""``input_reference`` as a video: the clip a video-to-video request starts from, checked before it is decoded.

It comes as an image does (a multipart file part, or a ``data:`` URL in JSON) and is told apart from one
by its declared type (``video/mp4``, ``video/webm``) or its own header (an MP4 ``ftyp`` box, a WebM EBML
header). The checks run in the HTTP handler against the operator's limits, in this order, each refusal
an :class:`~server.errors.APIError` 400 naming ``input_reference`` and the rule:

1. the byte size (``max_input_reference_bytes``, the images' limit), before anything is parsed;
2. the container, from the file's header (MP4 or WebM; a declared type that disagrees is refused too),
   opened by PyAV with that demuxer only: FFmpeg never probes for others (an HLS playlist or a concat
   script would name other files to read). Then the codec of its first video stream (:data:`CODECS`);
3. from the stream's header, before one frame is decoded: the frame size (``max_input_video_pixels``
   per frame), the frame count (``max_input_video_frames``; a WebM header records a duration, not a
   count, so there it is the duration times the frame rate) and the frame rate: a "decompression bomb"
   of a few bytes that claims huge or countless frames is refused unread;
4. the timing rule: output frame i is the source frame shown at time i / fps (the request's fps), so the
   first ``(num_frames - 1) / fps`` seconds are used, resampled to fps; a shorter video is refused;
5. the aspect rule of images (``input_reference_aspect_tolerance``): frames are resized to the video's size;
6. the frames used, and no more, are decoded: a truncated or corrupt file, a frame of another size than
   the header's, or fewer frames than the header promised are refused here, not in the job.

The job stores the bytes as sent (``server.store``) with an :class:`~server.job_spec.InputReference`
(sha256, media type, frame size, count and rate); the worker decodes them again with :func:`fitted_video`.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from guidance.images import RESAMPLE
from server.errors import APIError
from server.input_reference import (
    FIELD,
    CheckedInput,
    UploadedImage,
    check_aspect,
    refuse,
    sized_payload,
)
from server.job_spec import INPUT_REFERENCE_KEY, InputReference
from server.schema import Limits

#: Container (PyAV's demuxer name) -> the media type it is stored and reported as.
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm"}
#: Declared content types accepted for each container.
DECLARED = {"video/mp4": "mp4", "video/webm": "webm"}
#: Video codecs decoded (FFmpeg's names): what browsers and phones record, all decoded bit-exactly.
CODECS = ("h264", "hevc", "vp8", "vp9", "av1")
#: The EBML magic that starts a Matroska or WebM file.
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
#: ISO media brands of still images (HEIF, AVIF): an ``ftyp`` box with one of these is an image, not a clip.
IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")


@dataclass(frozen=True)
class VideoHeader:
    """What the container's header says of its first video stream, before any frame is decoded."""

    container: str
    codec: str
    width: int
    height: int
    frames: int
    fps: Fraction


def container_of(data: bytes) -> str | None:
    """``mp4`` or ``webm`` from the file's first bytes, or None."""
    if data[4:8] == b"ftyp" and data[8:12] not in IMAGE_BRANDS:
        return "mp4"
    if data[:4] == EBML_MAGIC and b"webm" in data[:64]:  # the EBML header's DocType
        return "webm"
    return None


def _declared(upload: UploadedImage) -> str:
    return (upload.content_type or "").split(";")[0].strip().lower()


def is_video(upload: UploadedImage) -> bool:
    """Whether the upload is meant as a video: declared ``video/*``, or an MP4 or WebM by its header."""
    return _declared(upload).startswith("video/") or container_of(upload.data) is not None


def frame_indices(source_fps: Fraction, num_frames: int, fps: int) -> list[int]:
    """The source frame of each output frame: the one shown at time i / fps (exact, in fractions)."""
    return [math.floor(Fraction(i) * source_fps / fps) for i in range(num_frames)]


def check_video(upload: UploadedImage, limits: Limits, width: int, height: int, num_frames: int,
                fps: int) -> CheckedInput:
    """The checks of the module docstring, for an output video of ``width`` x ``height``, ``num_frames``
    frames at ``fps``."""
    data = sized_payload(upload, limits, "video")
    declared = _declared(upload)
    container = container_of(data)
    if declared and declared not in DECLARED and declared != "application/octet-stream":
        found = f"; the file is {MEDIA_TYPES[container]}" if container else ""
        raise refuse(f"content type {declared!r} is not accepted for a video; send video/mp4 or video/webm{found}",
                      code="unsupported_input_reference")
    if container is None:
        raise refuse("not an MP4 or WebM video (the file's header says neither)", code="unsupported_input_reference")
    if declared in DECLARED and DECLARED[declared] != container:
        raise refuse(f"the part says {declared} but the file is {MEDIA_TYPES[container]}",
                      code="unsupported_input_reference")
    header = _read(data, container, width, height, num_frames, fps, limits, keep=False)[0]
    reference = InputReference(key=INPUT_REFERENCE_KEY, sha256=hashlib.sha256(data).hexdigest(),
                               media_type=MEDIA_TYPES[container], width=header.width, height=header.height,
                               size_bytes=len(data), frames=header.frames, fps=float(header.fps))
    return CheckedInput(data, reference)


def fitted_video(data: bytes, reference: InputReference, width: int, height: int, num_frames: int,
                 fps: int) -> list[Any]:
    """The stored video as the sampler takes it (``SampleSpec.video``): ``num_frames`` RGB PIL frames
    at ``fps``, resized to ``width`` x ``height`` (Lanczos, as images) when their size differs.
    ``ValueError`` when the bytes are not the ones the job recorded."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != reference.sha256:
        raise ValueError(f"input_reference: the stored video's sha256 is {digest}, the job recorded "
                         f"{reference.sha256}")
    container = next((name for name, kind in MEDIA_TYPES.items() if kind == reference.media_type), None)
    if container is None:
        raise ValueError(f"input_reference: {reference.media_type} is not a video type")
    try:
        header, frames = _read(data, container, width, height, num_frames, fps, None, keep=True)
    except APIError as exc:
        raise ValueError(exc.message) from None
    if (header.width, header.height) != (reference.width, reference.height):
        raise ValueError(f"input_reference: the stored video is {header.width}x{header.height}, the job recorded "
                         f"{reference.width}x{reference.height}")
    return frames


def video_file(path: str | Path, width: int, height: int, num_frames: int, fps: int,
               limits: Limits | None = None) -> list[Any]:
    """A video file checked by the server's rules (default limits) and fitted to the output video, as
    ``nrg generate --video`` uses it. ``ValueError`` with the rule that refused it."""
    data = Path(path).read_bytes()
    try:
        checked = check_video(UploadedImage(data, None, str(path)), limits or Limits(), width, height, num_frames, fps)
    except APIError as exc:
        raise ValueError(f"--video {path}: {exc.message.removeprefix(FIELD + ': ')}") from None
    return fitted_video(data, checked.reference, width, height, num_frames, fps)


def _read(data: bytes, container: str, width: int, height: int, num_frames: int, fps: int,
          limits: Limits | None, keep: bool) -> tuple[VideoHeader, list[Any]]:
    """Open, check the header (against ``limits`` when given: the worker reads what the handler
    accepted), then decode the frames used; ``keep``: return them fitted (else only decode them)."""
    import av

    try:
        handle = av.open(io.BytesIO(data), mode="r", format=container)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise refuse(f"the video cannot be read as {container.upper()} (truncated or corrupt?): {exc}") from None
    with handle:
        if not handle.streams.video:
            raise refuse("the file has no video stream")
        stream = handle.streams.video[0]
        header = _header(handle, stream, container)
        if limits is not None:
            _check_header(header, limits)
        indices = frame_indices(header.fps, num_frames, fps)
        _check_length(header, indices, num_frames, fps)
        if limits is not None:
            check_aspect((header.width, header.height), width, height, limits, what="input video")
        return header, _decode(handle, stream, header, indices, (width, height) if keep else None)


def _header(handle: Any, stream: Any, container: str) -> VideoHeader:
    codec = stream.codec_context.name
    if codec not in CODECS:
        raise refuse(f"the video's codec is {codec}; accepted: {', '.join(CODECS)}", code="unsupported_input_reference")
    rate = stream.average_rate or stream.guessed_rate
    if rate is None or rate <= 0:
        raise refuse("the video's header gives no frame rate")
    fps = Fraction(rate)
    frames = stream.frames
    if not frames:
        # WebM records the duration, not the frame count.
        if stream.duration is not None and stream.time_base is not None:
            seconds = Fraction(stream.duration) * Fraction(stream.time_base)
        elif handle.duration is not None:
            seconds = Fraction(handle.duration, 1_000_000)  # AV_TIME_BASE
        else:
            raise refuse("the video's header gives neither a frame count nor a duration")
        frames = round(seconds * fps)
    width, height = stream.codec_context.width, stream.codec_context.height
    if width < 1 or height < 1 or frames < 1:
        raise refuse(f"the video's header says {width}x{height}, {frames} frames: not a video")
    return VideoHeader(container, codec, width, height, int(frames), fps)


def _check_header(header: VideoHeader, limits: Limits) -> None:
    pixels = header.width * header.height
    if pixels > limits.max_input_video_pixels:
        raise refuse(f"the video's frames are {header.width}x{header.height} = {pixels} pixels; "
                      f"max_input_video_pixels is {limits.max_input_video_pixels} (checked from its header, before "
                      "decoding)", code="input_reference_too_large")
    if header.frames > limits.max_input_video_frames:
        raise refuse(f"the video has {header.frames} frames; max_input_video_frames is "
                      f"{limits.max_input_video_frames} (checked from its header, before decoding)",
                      code="input_reference_too_large")


def _check_length(header: VideoHeader, indices: list[int], num_frames: int, fps: int) -> None:
    needed = indices[-1] + 1
    if needed > header.frames:
        raise refuse(
            f"the video has {header.frames} frames at {float(header.fps):g} fps ({float(header.frames / header.fps):.3g}"
            f" s) but the request's num_frames {num_frames} at fps {fps} need its first {(num_frames - 1) / fps:.3g} s "
            f"({needed} frames): each output frame is the input frame shown at its time; send a longer video, or ask "
            "for fewer frames or a higher fps", code="input_reference_too_short")


def _decode(handle: Any, stream: Any, header: VideoHeader, indices: list[int],
            size: tuple[int, int] | None) -> list[Any]:
    """Decode the frames up to the last one used; ``size``: return the used ones as RGB PIL images of
    that size, each as many times as output frames take it (else return nothing)."""
    import av
    from PIL import Image

    uses = Counter(indices)
    last = indices[-1]
    frames: list[Any] = []
    decoded = 0
    try:
        for frame in handle.decode(stream):
            if (frame.width, frame.height) != (header.width, header.height):
                raise refuse(f"frame {decoded} of the video is {frame.width}x{frame.height}; its header says "
                              f"{header.width}x{header.height}")
            if size is not None and decoded in uses:
                image = frame.to_image()
                if image.size != size:
                    image = image.resize(size, getattr(Image.Resampling, RESAMPLE))
                frames.extend([image] * uses[decoded])
            decoded += 1
            if decoded > last:
                break
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise refuse(f"the video cannot be decoded (truncated or corrupt?): {exc}") from None
    if decoded <= last:
        raise refuse(f"the video ends after {decoded} decodable frames; its header says {header.frames} and the "
                      f"request needs {last + 1} (truncated or corrupt?)")
    return frames
