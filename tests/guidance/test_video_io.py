"""``guidance.video_io``: the same frames encode to the same mp4 bytes whatever CPUs the process may use.

x264 picks its thread count from the CPUs the process is allowed to run on, and its output depends on
that count; a server or a benchmark comparing videos must not depend on the machine's cores or load.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

ENCODE = """
import hashlib, os, sys
import numpy as np
from guidance.video_io import write_video
os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(",")})
rng = np.random.default_rng(0)
frames = np.clip(np.cumsum(rng.normal(0, 0.05, (9, 256, 256, 3)), axis=0) + 0.5, 0, 1).astype(np.float32)
print(hashlib.sha256(write_video(frames, sys.argv[1]).read_bytes()).hexdigest())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a process allowed on two or more CPUs")
def test_an_mp4_has_the_same_bytes_on_one_cpu_as_on_all(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    digests = []
    for allowed in ([cpus[0]], cpus):
        out = tmp_path / f"{len(allowed)}.mp4"
        result = subprocess.run([sys.executable, "-c", ENCODE, str(out), ",".join(map(str, allowed))],
                                capture_output=True, text=True, timeout=300, check=True)
        digests.append(result.stdout.strip())
        assert digests[-1] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert digests[0] == digests[1]


def test_an_mp4_has_the_same_bytes_when_the_machine_is_busy(tmp_path):
    """Encoded again and again while every core is kept busy, the same frames give one file. x264's sliced
    threads gave a different file about once in twelve encodes under load."""
    import numpy as np

    from guidance.video_io import write_video

    rng = np.random.default_rng(0)
    frames = np.clip(np.cumsum(rng.normal(0, 0.05, (9, 32, 32, 3)), axis=0) + 0.5, 0, 1).astype(np.float32)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        digests = {hashlib.sha256(write_video(frames, tmp_path / f"{i % 2}.mp4").read_bytes()).hexdigest()
                   for i in range(60)}
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert len(digests) == 1


def test_a_tiny_pipelines_clips_encode_to_one_file_each(tiny_family, tmp_path):
    """x264's faster intra analysis (its x9 assembly, off with ``cpu-independent``) encoded the same frames
    to different files within one process: 9 decoded variants in 30 encodes of one of these clips, and 4
    of 64 clips served through ``--batch-invariant`` differed from their twins (mean 1.5/255)."""
    import io

    import av
    import numpy as np
    import torch

    from guidance.families.base import VideoShape
    from guidance.video_io import write_video

    family, shape = tiny_family("wan"), VideoShape(32, 32, 9)
    for seed in range(4):
        latents = family.prepare_latents(shape, [torch.Generator().manual_seed(seed)])
        frames = family.decode(latents, shape, [torch.Generator().manual_seed(0)])[0]
        clips = set()
        for i in range(20):
            with av.open(io.BytesIO(write_video(frames, tmp_path / f"{i % 2}.mp4").read_bytes())) as container:
                clips.add(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).tobytes())
        assert len(clips) == 1, f"seed {seed}: {len(clips)} different clips from the same frames"


def test_odd_sizes_and_other_suffixes_are_refused(tmp_path):
    import numpy as np

    from guidance.video_io import write_video

    with pytest.raises(ValueError, match="even width and height"):
        write_video(np.zeros((2, 31, 32, 3), np.float32), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="must end in .mp4 or .npy"):
        write_video(np.zeros((2, 32, 32, 3), np.float32), tmp_path / "a.gif")


def test_frames_quantised_on_their_device_are_the_bytes_the_host_rounding_gives(tmp_path):
    """The engine quantises on the device and the writer encodes what arrives: the same uint8 values
    (rounding half to even at the .5 boundaries, clipping outside [0, 1]), the same mp4 bytes."""
    import numpy as np
    import torch

    from guidance.video_io import frames_to_uint8, uint8_on_host, write_video

    rng = np.random.default_rng(3)
    frames = rng.uniform(-0.2, 1.2, (2, 4, 16, 16, 3)).astype(np.float32)
    frames[0, 0, 0, :3, 0] = np.array([0.5, 1.5, 2.5], dtype=np.float32) / 255  # ties
    on_host = uint8_on_host(torch.from_numpy(frames))
    for i in range(2):
        got = on_host.row(i).wait()
        assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), frames_to_uint8(frames[i]))
        float_mp4 = write_video(frames[i], tmp_path / f"f{i}.mp4").read_bytes()
        assert write_video(got, tmp_path / f"u{i}.mp4").read_bytes() == float_mp4
    npy = np.load(write_video(on_host.row(0).wait(), tmp_path / "u.npy"))
    assert npy.dtype == np.float32 and np.array_equal(frames_to_uint8(npy), frames_to_uint8(frames[0]))
