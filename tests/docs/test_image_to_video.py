"""docs/image-to-video.md runs as written: its ```bash blocks, in order, in one fresh shell from the
repository root, make a tiny image-to-video pipeline and a reward for it, generate from an image without
a server, then serve it and run an image-to-video job from a multipart upload and one from the client;
distil a reward for one from prompts with first frames and generate with it; then the same from a clip on
a tiny text-to-video pipeline (video-to-video)."""

from __future__ import annotations

import pytest

from tests.docs.doc_scripts import run_doc


@pytest.mark.slow
def test_the_image_and_video_recipes_run_as_written(tmp_path):
    out = run_doc("image-to-video.md", 7, tmp_path)
    assert "image: image/png 64 64" in out and "rewards: ['mq', 'vq']" in out, out[-3000:]
    assert "models: {'wan-i2v': 'required'}" in out, out[-3000:]
    assert "client: completed " in out and "True\n" in out, out[-3000:]
    distilled = out.find("judged by classic:sharpness,exposure (not optimised)")
    steered = "optimised reward (what guidance pushed up), final latents: sharpness="
    assert distilled >= 0 and steered in out[distilled:], out[-3000:]
    assert ": 3 of 4 steps" in out and "video: video/mp4 48 48 17 16.0 strength: 0.75 passes: 3" in out, out[-3000:]
    assert "models: {'wan': True}" in out and out.rstrip().endswith("client: completed video/mp4 0.8"), out[-3000:]
