"""The synchronous Client against a live server: generate, events, cancel, list, wait, 429 retry, errors."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

import nrg_client.client

from guidance.video_io import count_video_frames
from nrg_client import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    Event,
    GeneratedVideo,
    NotFoundError,
    NRGError,
    RateLimitError,
    Video,
    VideoDeleted,
    WaitTimeout,
)
from tests.clients.conftest import FAST, LONG
from tests.server.conftest import HANG_S, free_port, until


@pytest.fixture()
def client(server_url):
    with Client(server_url, timeout=30) as c:
        yield c


def _wait_started(client: Client, video_id: str) -> None:
    """Until the job has taken at least one step (so a cancel hits it mid-run)."""
    for event in client.events(video_id):
        if event.type == "step" or event.terminal:
            return


def test_generate_end_to_end(client, tmp_path):
    video = client.generate("a red circle moving right", output=tmp_path, seed=3, reward_weights={"vq": 1.0},
                            strength=5.0, window=(0.0, 0.9), **FAST)
    assert isinstance(video, GeneratedVideo) and video.status == "completed" and video.progress == 100
    assert video.path == tmp_path / f"{video.id}.mp4" and count_video_frames(video.path) == 9
    assert video.width == video.height == 32 and video.num_inference_steps == 2 and video.seed == 3
    assert video.reward_guidance.weights == {"vq": 1.0} and video.reward_guidance.window == (0.0, 0.9)
    assert set(video.rewards) == {"vq", "mq", "ta"} and video.inference_time_s > 0 and video.batch_size == 1
    thumb = client.download(video.id, tmp_path / "thumb.webp", variant="thumbnail")
    assert thumb.read_bytes()[:4] == b"RIFF"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([video.path.name, "thumb.webp"])  # no .part left


def test_events_stream_typed(client):
    video = client.create("a blue square moving up", seed=4, reward_weights={"ta": 1.0, "mq": 0.5},
                          window=(0.0, 1.0), **FAST)
    events = list(client.events(video.id))
    assert all(isinstance(e, Event) and e.id == video.id for e in events)
    types = [e.type for e in events]
    assert types[:2] == ["queued", "started"] and types[-1] == "completed" and events[-1].terminal
    steps = [e for e in events if e.type == "step"]
    assert [e.step for e in steps] == [1, 2] and all(e.steps == 2 for e in steps)
    assert steps[0].t > steps[1].t and set(steps[-1].rewards) == {"vq", "mq", "ta"}
    assert events[1].batch_size >= 1 and events[-1].inference_time_s > 0
    # A finished job's stream replays its history and ends.
    assert [e.type for e in client.events(video.id)] == types


def test_cancel_running_job(client, tmp_path):
    video = client.create("a long one", **LONG)
    _wait_started(client, video.id)
    cancelled = client.cancel(video.id)
    assert cancelled.status == "cancelled" and cancelled.error.code == "cancelled" and cancelled.done
    assert client.cancel(video.id).status == "cancelled"  # a finished job is returned, not deleted
    assert [e.type for e in client.events(video.id)][-1] == "cancelled"
    with pytest.raises(ConflictError) as info:
        client.download(video.id, tmp_path)
    assert info.value.status == 409 and info.value.code == "video_not_ready" and list(tmp_path.iterdir()) == []


def test_wait_timeout_is_typed(client):
    video = client.create("another long one", **LONG)
    try:
        with pytest.raises(WaitTimeout) as info:
            client.wait(video.id, timeout=0.3, poll_interval=0.05)
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, NRGError)
        assert info.value.video.status in ("queued", "in_progress") and info.value.video_id == video.id
    finally:
        client.cancel(video.id)


def test_list_iterate_delete(client):
    ids = [client.create(f"job {i}", seed=i, **{**FAST, "num_inference_steps": 1}).id for i in range(3)]
    for video_id in ids:
        assert client.wait(video_id, poll_interval=0.05).status == "completed"
    page = client.list(after=ids[0], limit=2, order="asc")
    assert [v.id for v in page.data] == ids[1:] and all(isinstance(v, Video) for v in page.data)
    newest = [v.id for v in client.iter_videos(page_size=2)]
    assert newest[:3] == ids[::-1] and len(newest) == len(set(newest))
    deleted = client.delete(ids[0])
    assert isinstance(deleted, VideoDeleted) and deleted.deleted and deleted.id == ids[0]
    with pytest.raises(NotFoundError) as info:
        client.get(ids[0])
    assert info.value.status == 404 and info.value.code == "not_found" and info.value.param == "video_id"


def test_delete_of_active_job_cancels_then_deletes(client):
    video = client.create("to be deleted", **LONG)
    assert client.delete(video.id).deleted
    with pytest.raises(NotFoundError):
        client.get(video.id)


def test_models_health_ready(client):
    (model,) = client.models()
    assert model.id == "tiny-wan" and model.family == "wan" and model.reward_objectives == ["vq", "mq", "ta"]
    assert model.defaults["num_frames"] == 9
    assert client.health() == {"status": "ok"} and client.ready()["ready"] is True
    assert "nrg_batch_size_bucket" in client.metrics()


@pytest.mark.parametrize(
    ("kwargs", "param", "fragment"),
    [
        ({"num_inference_steps": 401}, "num_inference_steps", "less than or equal to 400"),
        ({"num_frames": 8}, "num_frames", "4*k + 1"),
        ({"reward_weights": {"zz": 1.0}}, "reward_guidance.weights", "unknown objective"),
        ({"window": (0.9, 0.1)}, "reward_guidance.window", "t_lo <= t_hi"),
        ({"model": "nope"}, "model", "unknown model"),
        ({"extra_body": {"colour": "red"}}, "colour", "Extra inputs"),
    ],
)
def test_400_is_bad_request_with_param(client, kwargs, param, fragment):
    with pytest.raises(BadRequestError) as info:
        client.create("p", **kwargs)
    error = info.value
    assert error.status == 400 and error.param == param and fragment in error.message
    assert error.type == "invalid_request_error" and error.code and param in str(error)


def test_401_and_api_key_from_env(auth_url, monkeypatch):
    with Client(auth_url, api_key="sk-bad") as bad:
        assert bad.health() == {"status": "ok"}  # /health needs no key
        with pytest.raises(AuthenticationError) as info:
            bad.models()
    assert info.value.status == 401 and info.value.code == "invalid_api_key"
    monkeypatch.setenv("NRG_API_KEY", "sk-good")
    monkeypatch.setenv("NRG_BASE_URL", auth_url + "/")
    with Client() as good:
        assert good.base_url == auth_url and good.models()[0].id == "tiny-wan"


def test_429_retry_honours_retry_after_then_succeeds(queue_of_one_url):
    with Client(queue_of_one_url, timeout=30) as client, httpx.Client(base_url=queue_of_one_url) as raw:
        first = client.create("occupies the queue", **LONG)

        def cancel_once_refused() -> None:
            # After the client has been refused (it counts a retry before it sleeps), never after a
            # fixed time, which a busy machine can let pass before the first attempt is even sent.
            until(lambda: client.retry_count >= 1, "the second create refused", poll_s=0.01)
            raw.delete(f"/v1/videos/{first.id}")

        # The server answers 429 with Retry-After: 2; the first job is cancelled meanwhile.
        canceller = threading.Thread(target=cancel_once_refused, daemon=True)
        canceller.start()
        start = time.monotonic()
        second = client.create("waits for room", **FAST)
        elapsed = time.monotonic() - start  # a lower bound: a sleep never ends early
        assert client.retry_count >= 1 and elapsed >= 1.9, (client.retry_count, elapsed)
        canceller.join(HANG_S)
        assert client.get(first.id).status == "cancelled"
        assert client.wait(second.id, poll_interval=0.05).status == "completed"


def test_429_retries_are_bounded_then_rate_limit_error(queue_of_one_url, monkeypatch):
    # The waits the client chose, not the time they took (a busy machine stretches any interval).
    waits: list[float] = []
    chosen = nrg_client.client.retry_delay

    def recorded(*args):
        waits.append(chosen(*args))
        return waits[-1]

    monkeypatch.setattr(nrg_client.client, "retry_delay", recorded)
    with Client(queue_of_one_url, timeout=30) as client:
        first = client.create("occupies the queue", **LONG)
        try:
            with Client(queue_of_one_url, max_retries=2, max_retry_wait=0.05) as impatient:
                with pytest.raises(RateLimitError) as info:
                    impatient.create("no room", **FAST)
                assert impatient.retry_count == 2 and waits == [0.05, 0.05]  # Retry-After: 2, capped at 0.05 s
            error = info.value
            assert error.status == 429 and error.code == "queue_full" and error.retry_after == 2.0
        finally:
            client.cancel(first.id)


def test_connection_error_is_typed():
    with Client(f"http://127.0.0.1:{free_port()}", max_retries=1, max_retry_wait=0.01, timeout=2) as client:
        with pytest.raises(APIConnectionError):
            client.health()
        assert client.retry_count == 1
