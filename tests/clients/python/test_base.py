"""Client mechanics without a server (httpx.MockTransport): retries, Retry-After, SSE parsing and
reconnects, error mapping, request bodies."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time

import httpx
import pytest

from nrg_client import (
    APIStatusError,
    AsyncClient,
    BadRequestError,
    Client,
    ClientValidationError,
    ConflictError,
    NRGError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
)
from nrg_client._base import SSEDecoder, create_body, parse_retry_after, retry_delay

VIDEO = {"id": "video_1", "object": "video", "model": "m", "status": "queued", "progress": 0, "created_at": 1,
         "prompt": "p", "size": "32x32", "seconds": "0.5", "width": 32, "height": 32, "num_frames": 9, "fps": 16,
         "seed": 1, "num_inference_steps": 2, "guidance_scale": 5.0, "a_future_field": {"x": 1}}


def _error(status: int, code: str, headers=None) -> httpx.Response:
    body = {"error": {"message": f"{code} happened", "type": "invalid_request_error", "param": None, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


def _sse(*events: tuple[str, dict]) -> bytes:
    text = "".join(f"event: {kind}\ndata: {json.dumps({'id': 'video_1', **data})}\n\n" for kind, data in events)
    return text.encode()


STREAM = [("queued", {}), ("started", {"batch_size": 2}), ("step", {"step": 1, "steps": 2, "t": 0.9}),
          ("step", {"step": 2, "steps": 2, "t": 0.4, "rewards": {"vq": 0.5}}), ("completed", {"batch_size": 2})]


def test_503_is_retried_with_retry_after_then_succeeds():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return _error(503, "unavailable", {"Retry-After": "0"})
        return httpx.Response(200, json=VIDEO)

    with Client("http://test", transport=httpx.MockTransport(handler)) as client:
        video = client.create("p", seed=1)
    assert video.id == "video_1" and client.retry_count == 2 and len(calls) == 3
    assert video.model_extra == {"a_future_field": {"x": 1}}  # unknown fields are kept, not refused
    assert json.loads(calls[0].content) == {"prompt": "p", "seed": 1}


def test_retries_are_bounded_and_errors_typed():
    def handler(request: httpx.Request) -> httpx.Response:
        return _error(503, "unavailable", {"Retry-After": "0"})

    with Client("http://test", max_retries=2, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ServiceUnavailableError) as info:
            client.get("video_1")
    assert isinstance(info.value, ServerError) and info.value.status == 503 and client.retry_count == 2


@pytest.mark.parametrize(("status", "cls"), [(400, BadRequestError), (403, PermissionDeniedError),
                                             (409, ConflictError), (418, APIStatusError), (500, ServerError)])
def test_status_maps_to_typed_error_without_retry(status, cls):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return _error(status, "some_code")

    with Client("http://test", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(cls) as info:
            client.models()
    assert len(calls) == 1 and info.value.status == status and info.value.code == "some_code"
    assert info.value.message == "some_code happened" and isinstance(info.value, NRGError)


def test_non_json_error_body():
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="<html>bad gateway</html>"))
    with Client("http://test", transport=transport) as client:
        with pytest.raises(ServerError) as info:
            client.health()
    assert info.value.status == 502 and info.value.code is None and "bad gateway" in info.value.message


def test_retry_after_parsing_and_cap():
    assert parse_retry_after("2") == 2.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < parse_retry_after(future) <= 30
    hinted = httpx.Response(429, headers={"Retry-After": "120"})
    assert retry_delay(0, hinted, max_wait=5.0) == 5.0
    assert [retry_delay(i, None, max_wait=3.0) for i in range(4)] == [0.5, 1.0, 2.0, 3.0]


def test_rate_limit_error_carries_retry_after():
    transport = httpx.MockTransport(lambda request: _error(429, "queue_full", {"Retry-After": "7"}))
    with Client("http://test", max_retries=1, max_retry_wait=0.0, transport=transport) as client:
        with pytest.raises(RateLimitError) as info:
            client.create("p")
    assert info.value.retry_after == 7.0 and client.retry_count == 1


def test_create_body_maps_reward_guidance_and_rejects_bad_types():
    common = dict(model=None, negative_prompt=None, width=None, height=None, seconds=None, num_frames=None,
                  fps=None, seed=None, num_inference_steps=None, guidance_scale=None, checkpoint=None, extra_body=None)
    body = create_body(prompt="p", size=(64, 32), reward_weights={"vq": 1}, strength=None, window=(0, 0.5),
                       mode=None, **common)
    assert body == {"prompt": "p", "size": "64x32", "reward_guidance": {"weights": {"vq": 1.0}, "window": [0.0, 0.5]}}
    unguided = create_body(prompt="p", size=None, reward_weights=None, strength=None, window=None, mode=None, **common)
    assert unguided == {"prompt": "p"}
    aligned = create_body(prompt="p", size=None, reward_weights=None, strength=None, window=None, mode=None,
                          **{**common, "checkpoint": "dpo"}, checkpoint_scale=0.5)
    assert aligned == {"prompt": "p", "checkpoint": "dpo", "checkpoint_scale": 0.5}
    with pytest.raises(ClientValidationError) as info:
        create_body(prompt="p", size=None, reward_weights=None, strength=None, window=(0.1,), mode=None, **common)
    assert info.value.param == "reward_guidance.window" and isinstance(info.value, ValueError)
    with Client("http://test", transport=httpx.MockTransport(lambda r: httpx.Response(200, json=VIDEO))) as client:
        with pytest.raises(ClientValidationError) as info:
            client.create("p", seed="many")
        assert info.value.param == "seed"


def test_input_reference_is_sent_as_a_data_url_of_its_own_media_type(tmp_path):
    """Images and videos alike, from bytes or a path; a data: URL as given; anything else refused here."""
    common = dict(model=None, negative_prompt=None, size=None, width=None, height=None, seconds=None, num_frames=None,
                  fps=None, seed=None, num_inference_steps=None, guidance_scale=None, checkpoint=None,
                  reward_weights=None, strength=None, window=None, mode=None, extra_body=None)
    mp4, webm = b"\0\0\0\x20ftypisom" + b"\0" * 20, b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm" + b"\0" * 8
    (tmp_path / "clip.webm").write_bytes(webm)
    for given, media_type in ((mp4, "video/mp4"), (tmp_path / "clip.webm", "video/webm"),
                              (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "image/png")):
        body = create_body(prompt="p", input_reference=given, **common)
        assert body["input_reference"].startswith(f"data:{media_type};base64,")
    body = create_body(prompt="p", input_reference="data:video/mp4;base64,AAAA", denoise_strength=0.5, **common)
    assert body == {"prompt": "p", "input_reference": "data:video/mp4;base64,AAAA", "denoise_strength": 0.5}
    with pytest.raises(ClientValidationError, match="nor an MP4 or WebM video") as info:
        create_body(prompt="p", input_reference=b"GIF89a", **common)
    assert info.value.param == "input_reference"
    with pytest.raises(ClientValidationError, match="no file at"):
        create_body(prompt="p", input_reference=tmp_path / "missing.mp4", **common)


def test_sse_decoder_handles_comments_multiline_and_crlf():
    decoder = SSEDecoder()
    lines = [": ping", "event: step\r", 'data: {"id": "v", "step": 1,', 'data:  "t": 0.5}', "", "", "event: x",
             "data: not json", ""]
    events = list(decoder.decode(lines))
    assert [(e.type, e.step, e.t) for e in events[:1]] == [("step", 1, 0.5)]
    assert events[1].type == "x" and events[1].model_extra["data"] == "not json" and len(events) == 2


def test_events_reconnect_and_skip_replayed_events():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:  # the connection drops after three events
            return httpx.Response(200, content=_sse(*STREAM[:3]), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, content=_sse(*STREAM), headers={"content-type": "text/event-stream"})

    with Client("http://test", max_retry_wait=0.0, transport=httpx.MockTransport(handler)) as client:
        events = list(client.events("video_1"))
    assert [e.type for e in events] == ["queued", "started", "step", "step", "completed"] and len(calls) == 2
    assert events[3].rewards == {"vq": 0.5} and events[1].batch_size == 2 and events[-1].terminal

    async def main():
        calls.clear()
        async with AsyncClient("http://test", max_retry_wait=0.0, transport=httpx.MockTransport(handler)) as client:
            return [e.type async for e in client.events("video_1")]

    assert asyncio.run(main()) == ["queued", "started", "step", "step", "completed"]


def test_events_give_up_after_max_retries():
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, content=_sse(*STREAM[:2]), headers={"content-type": "text/event-stream"}))
    with Client("http://test", max_retries=1, max_retry_wait=0.0, transport=transport) as client:
        with pytest.raises(NRGError, match="ended before a terminal event"):
            list(client.events("video_1"))


def test_download_failure_leaves_no_file(tmp_path):
    transport = httpx.MockTransport(lambda request: _error(409, "video_not_ready"))
    with Client("http://test", transport=transport) as client:
        with pytest.raises(ConflictError):
            client.download("video_1", tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"\x00\x00\x00\x18ftypmp42"))
    with Client("http://test", transport=transport) as client:
        path = client.download("video_1", tmp_path)
    assert path == tmp_path / "video_1.mp4" and path.read_bytes()[4:8] == b"ftyp"
    assert [p.name for p in tmp_path.iterdir()] == ["video_1.mp4"]
