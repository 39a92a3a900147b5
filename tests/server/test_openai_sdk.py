"""The official ``openai`` SDK drives the server; extension fields travel in ``extra_body``."""

import openai
import pytest

from tests.server.conftest import running_server


def test_openai_sdk_round_trip(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, api_keys=("sk-test",)) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)
        video = client.videos.create(
            model="tiny-wan", prompt="a yellow triangle moving down", size="32x32", seconds="1",
            extra_body={"fps": 8, "num_inference_steps": 3, "seed": 9,
                        "reward_guidance": {"weights": {"ta": 1.0, "vq": 0.25}, "strength": 20, "window": [0, 0.8]}},
        )
        assert video.status == "queued" and video.id.startswith("video_")
        done = client.videos.create_and_poll(model="tiny-wan", prompt="a red square", size="32x32",
                                             extra_body={"num_inference_steps": 2, "num_frames": 5},
                                             poll_interval_ms=50)
        assert done.status == "completed" and done.progress == 100
        video = client.videos.retrieve(video.id)
        while video.status in ("queued", "in_progress"):
            video = client.videos.retrieve(video.id)
        extra = video.model_extra
        assert video.status == "completed" and extra["num_frames"] == 9 and extra["seed"] == 9
        assert extra["reward_guidance"]["weights"] == {"ta": 1.0, "vq": 0.25}
        assert extra["reward_guidance"]["window"] == [0.0, 0.8]
        content = client.videos.download_content(video.id, variant="video")
        assert content.read()[4:8] == b"ftyp"
        listed = client.videos.list(limit=10)
        assert {v.id for v in listed.data} == {video.id, done.id}
        assert client.videos.delete(done.id).deleted is True
        with pytest.raises(openai.BadRequestError, match="unknown objective"):
            client.videos.create(model="tiny-wan", prompt="p", extra_body={"reward_guidance": {"weights": {"x": 1}}})
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).videos.list()
