"""A pipeline directory's ``nrg_defaults.json``: read, checked against the family, used by the server."""

from __future__ import annotations

import json

import pytest

from guidance.families.base import VideoShape
from server import pipeline_defaults
from server.config import ServerConfig, load_models


@pytest.mark.parametrize("family", ["wan", "ltx", "hunyuan", "cogvideox"])
def test_the_tiny_defaults_are_valid_for_every_family(tiny_dir, tiny_family, tmp_path, family):
    directory = tmp_path / family
    directory.mkdir()
    pipeline_defaults.write(directory, family)
    defaults = pipeline_defaults.read(directory, tiny_family(family))  # checks the shape
    assert defaults.steps == 4 and defaults.shape.frames == 9


def test_without_a_file_the_family_defaults_apply(tiny_family, tmp_path):
    family = tiny_family("wan")
    assert pipeline_defaults.read(tmp_path, family) == pipeline_defaults.PipelineDefaults(
        family.default_shape, family.default_steps)


@pytest.mark.parametrize(("content", "message"), [
    ({"width": 30}, "width must be a positive multiple of 16 for this Wan model; got 30"),
    ({"num_frames": 0}, "num_frames must be a positive integer; got 0"),
    ({"fps": 8}, "keys among height, num_frames, num_inference_steps, width"),
])
def test_a_bad_file_is_refused_naming_it(tiny_family, tmp_path, content, message):
    (tmp_path / pipeline_defaults.FILENAME).write_text(json.dumps(content))
    with pytest.raises(ValueError, match=f"{pipeline_defaults.FILENAME}: .*{message}"):
        pipeline_defaults.read(tmp_path, tiny_family("wan"))


def test_the_server_uses_the_directory_defaults(tiny_dir, tmp_path):
    directory = tmp_path / "wan"
    directory.mkdir()
    for item in tiny_dir("wan").iterdir():
        (directory / item.name).symlink_to(item)
    pipeline_defaults.write(directory, "wan")
    (hosted,) = load_models(ServerConfig(models={"tiny": directory}, device="cpu")).values()
    assert (hosted.default_shape, hosted.default_steps) == (VideoShape(32, 32, 9), 4)
