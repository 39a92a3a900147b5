"""Writing generated frames: ``.mp4`` (H.264 through PyAV) or ``.npy`` (float frames).

PyAV is used rather than imageio-ffmpeg because it raises on bad input (imageio silently leaves a
0-byte file for odd frame sizes), and every mp4 is re-opened and its frames counted before it is
accepted. Files are written to a temporary name and renamed, so a reader never sees half a video.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

SUFFIXES = (".mp4", ".npy")
# x264's output depends on its thread count, which by default follows the CPUs the process may use, and
# its sliced threads (PyAV's default) vary with scheduling when the machine is busy (seen here: 5 of 60
# encodes differed), so it runs a fixed count of frame threads. And it runs its CPU-independent code
# (``cpu-independent=1``): without it the same frames, encoded over and over by one thread while other
# threads of the process kept the cores busy, decoded to 3-13 different clips in 60 encodes (4 of 64
# served clips here); with it, to one.
ENCODER_THREADS = 4
X264_PARAMS = "cpu-independent=1"


def frames_to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float frames [F, H, W, 3] in [0, 1] to uint8, rounding as diffusers' ``export_to_video`` does;
    uint8 frames (``uint8_on_host``'s) as they are."""
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype == np.uint8:
        return array
    return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)


class HostFrames:
    """Frames on their way to the host: uint8 (a quarter of float32's bytes), copied from a CUDA device
    without blocking the thread that asked (``uint8_on_host``). ``wait`` returns them once there."""

    def __init__(self, frames: torch.Tensor, copied: torch.cuda.Event | None = None) -> None:
        self._frames = frames
        self._copied = copied

    def row(self, i: int) -> HostFrames:
        """Sample ``i``'s frames of a batch's, arriving with the same copy."""
        return HostFrames(self._frames[i], self._copied)

    def wait(self) -> torch.Tensor:
        if self._copied is not None:
            self._copied.synchronize()
            self._copied = None
        return self._frames


def uint8_on_host(frames: torch.Tensor) -> HostFrames:
    """``frames_to_uint8`` on the frames' device (the same float32 clip, scale and round-half-even, so
    the same bytes), then one copy to the host: non-blocking into pinned memory from a CUDA device, so
    the engine thread goes on stepping while it runs and the writer thread waits for it."""
    quantised = (frames.detach().float().clamp(0.0, 1.0) * 255).round().to(torch.uint8)
    if quantised.device.type != "cuda":
        return HostFrames(quantised.cpu())
    host = torch.empty(quantised.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(quantised, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return HostFrames(host, copied)


def count_video_frames(path: str | Path) -> int:
    """Decode every frame of a video file and count them (raises if the file is not a valid video)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def write_video(frames: torch.Tensor | np.ndarray, path: str | Path, fps: int = 16) -> Path:
    """Write [F, H, W, 3] frames (float in [0, 1], or uint8) to ``path`` (.mp4 or .npy: float32 in
    [0, 1]), atomically, and verify it."""
    import av

    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"output must end in {' or '.join(SUFFIXES)}; got {path.name}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3]; got {tuple(frames.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        if path.suffix == ".npy":
            array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
            np.save(tmp, array / np.float32(255) if array.dtype == np.uint8 else array.astype(np.float32))
        else:
            count, height, width, _ = frames.shape
            if height % 2 or width % 2:
                raise ValueError(f"mp4 (H.264, yuv420p) needs an even width and height; got {width}x{height}")
            with av.open(str(tmp), mode="w") as container:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.options = {"crf": "18", "x264-params": X264_PARAMS}
                stream.codec_context.thread_type = "FRAME"
                stream.codec_context.thread_count = ENCODER_THREADS
                for image in frames_to_uint8(frames):
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
                container.mux(stream.encode())
            written = count_video_frames(tmp)
            if written != count:
                raise RuntimeError(f"encoded video has {written} frames, expected {count}")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
