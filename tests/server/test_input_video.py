"""``input_reference`` as a video: container and codec from the header, byte, pixel and frame limits before
decoding, the timing and aspect rules, truncated files; and the stored video as the worker fits it.
Frames are compared by their decoded levels with a tolerance, never by the lossy codec's bytes."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace

import numpy as np
import pytest

from server.errors import APIError
from server.input_reference import UploadedImage, decode_data_url
from server.input_video import check_video, fitted_video, frame_indices, is_video, video_file
from server.schema import Limits
from tests.server.clips import encode, levels, noise

LIMITS = Limits(max_input_reference_bytes=64 * 1024, max_input_video_pixels=64 * 64, max_input_video_frames=40)
#: An output video of 32x32, 9 frames at 16 fps.
OUT = dict(width=32, height=32, num_frames=9, fps=16)


def check(data: bytes, declared: str | None = None, limits: Limits = LIMITS, **out):
    return check_video(UploadedImage(data, declared), limits, **{**OUT, **out})


def refused(data: bytes, declared: str | None = None, limits: Limits = LIMITS, **out) -> APIError:
    with pytest.raises(APIError) as caught:
        check(data, declared, limits, **out)
    assert caught.value.status == 400 and caught.value.param == "input_reference"
    assert caught.value.message.startswith("input_reference: ")
    return caught.value


def mean_levels(frames) -> list[float]:
    return [float(np.asarray(frame, dtype=np.float32).mean()) for frame in frames]


@pytest.mark.parametrize(("container", "codec", "media_type"), [("mp4", "libx264", "video/mp4"),
                                                                ("webm", "libvpx-vp9", "video/webm"),
                                                                ("webm", "libvpx", "video/webm")])
def test_mp4_and_webm_are_recorded_from_their_header(container, codec, media_type):
    data = encode(levels(12), container, codec)
    for declared in (media_type, None, "application/octet-stream"):
        assert is_video(UploadedImage(data, declared))
        checked = check(data, declared)
        ref = checked.reference
        assert checked.data == data and ref.media_type == media_type and (ref.width, ref.height) == (32, 32)
        assert (ref.frames, ref.fps) == (12, 16.0) and ref.is_video
        assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size_bytes == len(data)
        assert ref.key == "input_reference"


def test_other_types_codecs_and_mislabelled_parts_are_refused():
    mp4 = encode(levels(9))
    assert "not an MP4 or WebM" in refused(b"\0" * 64, "video/mp4").message
    error = refused(mp4, "image/png")
    assert error.code == "unsupported_input_reference" and "the file is video/mp4" in error.message
    assert "says video/webm but the file is video/mp4" in refused(mp4, "video/webm").message
    error = refused(encode(levels(9), "mp4", "mpeg4"))
    assert error.code == "unsupported_input_reference" and "codec is mpeg4" in error.message
    assert "empty" in refused(b"", "video/mp4").message
    assert not is_video(UploadedImage(b"\x89PNG\r\n\x1a\n", None))
    assert not is_video(UploadedImage(b"\0\0\0\x18ftypheic" + b"\0" * 16, None))  # HEIF: an image, refused as one


def test_the_byte_limit_is_checked_before_anything_is_parsed():
    data = b"\0\0\0\x20ftyp" + b"\0" * LIMITS.max_input_reference_bytes
    error = refused(data, "video/mp4")
    assert error.code == "input_reference_too_large" and "max_input_reference_bytes is 65536" in error.message
    error = refused(b"x", "video/mp4", limits=Limits(max_input_reference_bytes=0))
    assert error.code == "input_reference_too_large"
    with pytest.raises(APIError, match="the video exceeds max_input_reference_bytes"):
        decode_data_url("data:video/mp4;base64," + "A" * (LIMITS.max_input_reference_bytes * 2), LIMITS)


def test_frame_and_pixel_limits_are_read_from_the_header_before_decoding():
    """The header comes first (an MP4 with its index up front): cut off after it, the file has no frames to
    decode, and the refusal is the limit's, from the header alone."""
    many = encode(levels(60), faststart=True)
    error = refused(many[:1500])
    assert error.code == "input_reference_too_large" and "60 frames; max_input_video_frames is 40" in error.message
    assert "before decoding" in error.message
    large = encode(levels(9, 96, 96), faststart=True)
    error = refused(large[:1200], width=96, height=96)
    assert error.code == "input_reference_too_large" and "96x96 = 9216 pixels" in error.message
    assert "max_input_video_pixels is 4096" in error.message
    # WebM records a duration, not a count: the count is the duration times the frame rate.
    error = refused(encode(levels(60), "webm", "libvpx-vp9"))
    assert "60 frames; max_input_video_frames is 40" in error.message


def test_truncated_and_corrupt_videos_are_refused():
    mp4 = encode(noise(20))
    assert "cannot be read as MP4" in refused(mp4[: len(mp4) // 2]).message  # its index is at the end
    webm = encode(noise(20), "webm", "libvpx-vp9")
    error = refused(webm[: len(webm) // 3], num_frames=17)
    assert "the video ends after" in error.message and "truncated or corrupt" in error.message


def test_a_short_video_is_refused_and_others_are_resampled_to_fps():
    """Output frame i is the input frame shown at i / fps: a 32 fps clip gives every other frame, an 8 fps
    one each frame twice; the first (num_frames - 1) / fps seconds are used."""
    assert frame_indices(32, 5, 16) == [0, 2, 4, 6, 8] and frame_indices(8, 5, 16) == [0, 0, 1, 1, 2]
    error = refused(encode(levels(8)))
    assert error.code == "input_reference_too_short"
    assert "8 frames at 16 fps" in error.message and "num_frames 9 at fps 16 need its first 0.5 s" in error.message
    for rate, count, expected in ((32, 17, [16 + 16 * i for i in range(9)]), (8, 5, [16 + 8 * (i // 2) for i in range(9)]),
                                  (16, 30, [16 + 8 * i for i in range(9)])):
        data = encode(levels(count), fps=rate)
        ref = check(data).reference
        frames = fitted_video(data, ref, **OUT)
        assert len(frames) == 9 and all(frame.size == (32, 32) and frame.mode == "RGB" for frame in frames)
        assert mean_levels(frames) == pytest.approx(expected, abs=2.5), rate


def test_frames_are_resized_within_the_aspect_tolerance_and_refused_beyond_it():
    data = encode(noise(9, 64, 64))
    frames = fitted_video(data, check(data).reference, **OUT)
    assert {frame.size for frame in frames} == {(32, 32)}
    error = refused(encode(noise(9, 64, 32)))
    assert error.code == "input_reference_aspect_mismatch" and "the input video is 64x32" in error.message


def test_data_urls_and_the_workers_digest_check(tmp_path):
    data = encode(noise(9))
    upload = decode_data_url("data:video/mp4;base64," + base64.b64encode(data).decode(), LIMITS)
    ref = check_video(upload, LIMITS, **OUT).reference
    assert upload.content_type == "video/mp4" and ref.media_type == "video/mp4"
    with pytest.raises(ValueError, match="sha256"):
        fitted_video(data + b"\0", ref, **OUT)
    with pytest.raises(ValueError, match="recorded 16x16"):
        fitted_video(data, replace(ref, width=16, height=16), **OUT)
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    assert mean_levels(video_file(path, **OUT)) == pytest.approx(mean_levels(fitted_video(data, ref, **OUT)))
    path.write_bytes(data[:100])
    with pytest.raises(ValueError, match=r"--video .*clip.mp4: the video cannot be read"):
        video_file(path, **OUT)
