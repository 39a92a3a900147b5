"""Small MP4 and WebM files for the video-to-video tests, encoded with PyAV (deterministic: fixed threads)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def levels(count: int, width: int = 32, height: int = 32) -> np.ndarray:
    """``count`` flat grey frames whose level tells their index (8 apart), uint8 [F, H, W, 3]: after lossy
    coding a frame's mean still says which source frame it is."""
    return np.stack([np.full((height, width, 3), 16 + 8 * (i % 28), dtype=np.uint8) for i in range(count)])


def noise(count: int, width: int = 32, height: int = 32, seed: int = 0) -> np.ndarray:
    """``count`` frames of a random image drifting right by a pixel a frame, uint8 [F, H, W, 3]."""
    base = np.random.default_rng(seed).integers(0, 256, (height, width + count, 3), dtype=np.uint8)
    return np.stack([base[:, i:i + width] for i in range(count)])


def encode(frames: np.ndarray, container: str = "mp4", codec: str = "libx264", fps: int = 16,
           faststart: bool = False) -> bytes:
    """``frames`` (uint8 [F, H, W, 3]) as a ``container`` file; ``faststart`` puts an MP4's header (its
    frame count and size) before the frames, so a truncated copy still has it."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with tempfile.TemporaryDirectory() as tmp:  # faststart rewrites the file: not a stream
        path = Path(tmp) / f"clip.{container}"
        _write(av, frames, path, container, codec, fps, options)
        return path.read_bytes()


def _write(av, frames: np.ndarray, path: Path, container: str, codec: str, fps: int, options: dict) -> None:
    with av.open(str(path), "w", format=container, options=options) as handle:
        stream = handle.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                handle.mux(packet)
        for packet in stream.encode():
            handle.mux(packet)
