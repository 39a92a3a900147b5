"""What the served mp4's encoder costs, and what its determinism costs: ``write_video`` with x264's
CPU-dependent intra analysis (``cpu-independent=0``) and with the server's ``cpu-independent=1``,
interleaved round by round on one clip, and how many distinct decoded clips each gave.

    python -m benchmarks.encode_bench                       # 81 frames at 832x480, 3 rounds
    python -m benchmarks.encode_bench --size 32x32 --frames 9 --rounds 30   # a determinism probe

The clip is a smooth gradient drifting frame to frame with fine noise (worst case for an encoder's time).
Figures are medians of seconds per encode; ``decoded_variants`` counts the different clips the same
frames decoded to (1 is deterministic).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

VARIANTS = {"cpu-dependent": "cpu-independent=0", "server (cpu-independent)": "cpu-independent=1"}


def _clip(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, width)[None, None, :, None] * np.linspace(0, 1, height)[None, :, None, None]
    drift = (0.02 * np.arange(frames)[:, None, None, None]) % 1
    return np.clip(ramp + drift + 0.05 * rng.random((frames, height, width, 3)), 0, 1).astype(np.float32)


def _decoded_digest(path: Path) -> str:
    import av

    with av.open(io.BytesIO(path.read_bytes())) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return hashlib.sha256(frames.tobytes()).hexdigest()


def run(frames: int, height: int, width: int, rounds: int, work: Path) -> dict:
    from guidance import video_io

    clip = video_io.frames_to_uint8(_clip(frames, height, width))
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    digests: dict[str, set[str]] = {name: set() for name in VARIANTS}
    server_params = video_io.X264_PARAMS
    try:
        for _ in range(rounds):
            for name, params in VARIANTS.items():
                video_io.X264_PARAMS = params
                began = time.perf_counter()
                path = video_io.write_video(clip, work / "clip.mp4")
                seconds[name].append(time.perf_counter() - began)
                digests[name].add(_decoded_digest(path))
    finally:
        video_io.X264_PARAMS = server_params
    base = statistics.median(seconds["cpu-dependent"])
    return {"frames": frames, "height": height, "width": width, "rounds": rounds,
            "threads": video_io.ENCODER_THREADS, "results": [
                {"variant": name, "params": VARIANTS[name], "median_s": statistics.median(seconds[name]),
                 "x_cpu_dependent": statistics.median(seconds[name]) / base, "decoded_variants": len(digests[name])}
                for name in VARIANTS]}


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m benchmarks.encode_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--size", default="832x480", help="WIDTHxHEIGHT (even numbers; default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="encodes of each variant, interleaved")
    parser.add_argument("--output-file", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as work:
        result = run(args.frames, height, width, args.rounds, Path(work))
    print(f"{args.frames} frames at {width}x{height}, {args.rounds} rounds, {result['threads']} x264 frame threads")
    print("| encoder | x264 params | s / encode | x cpu-dependent | decoded variants |")
    print("|---|---|---|---|---|")
    for r in result["results"]:
        print(f"| {r['variant']} | {r['params']} | {r['median_s']:.2f} | {r['x_cpu_dependent']:.2f} | "
              f"{r['decoded_variants']} |")
    if args.output_file is not None:
        args.output_file.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
