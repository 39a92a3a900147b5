"""docs/image-to-video.md runs as written: its ```bash blocks, in order, in one fresh shell from the
repository root, make a tiny image-to-video pipeline and a reward for it, generate from an image without
a server, then serve it and run an image-to-video job from a multipart upload and one from the client;
then the same from a clip on a tiny text-to-video pipeline (video-to-video)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.test_your_model import ROOT, bash_blocks


@pytest.mark.slow
def test_the_image_and_video_recipes_run_as_written(tmp_path):
    blocks = bash_blocks((ROOT / "docs" / "image-to-video.md").read_text())
    assert len(blocks) == 6
    script = "set -euo pipefail\n" + "\n".join(blocks)
    venv_bin = Path(sys.executable).parent
    if not (ROOT / ".venv" / "bin" / "nrg").exists():  # the doc names .venv/bin; a CI venv elsewhere stands in
        (tmp_path / ".venv").symlink_to(venv_bin.parent, target_is_directory=True)
    cwd = ROOT if (ROOT / ".venv" / "bin" / "nrg").exists() else tmp_path
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "image: image/png 64 64" in out and "rewards: ['mq', 'vq']" in out, out[-3000:]
    assert "models: {'wan-i2v': 'required'}" in out, out[-3000:]
    assert "client: completed " in out and "True\n" in out, out[-3000:]
    assert ": 3 of 4 steps" in out and "video: video/mp4 48 48 17 16.0 strength: 0.75 cost: 1.0" in out, out[-3000:]
    assert "models: {'wan': True}" in out and out.rstrip().endswith("client: completed video/mp4 0.8"), out[-3000:]
