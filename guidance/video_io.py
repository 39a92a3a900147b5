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
# encodes differed). Frame threads of a fixed count are deterministic: the same frames encode to the
# same bytes on any machine and under any load.
ENCODER_THREADS = 4


def frames_to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float frames [F, H, W, 3] in [0, 1] to uint8, rounding as diffusers' ``export_to_video`` does."""
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)


def count_video_frames(path: str | Path) -> int:
    """Decode every frame of a video file and count them (raises if the file is not a valid video)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def write_video(frames: torch.Tensor | np.ndarray, path: str | Path, fps: int = 16) -> Path:
    """Write [F, H, W, 3] frames in [0, 1] to ``path`` (.mp4 or .npy), atomically, and verify it."""
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
            array = frames.detach().cpu().float().numpy() if isinstance(frames, torch.Tensor) else frames
            np.save(tmp, np.asarray(array, dtype=np.float32))
        else:
            count, height, width, _ = frames.shape
            if height % 2 or width % 2:
                raise ValueError(f"mp4 (H.264, yuv420p) needs an even width and height; got {width}x{height}")
            with av.open(str(tmp), mode="w") as container:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.options = {"crf": "18"}
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
