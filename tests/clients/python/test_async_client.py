"""The AsyncClient against a live server (each test drives its coroutine with asyncio.run)."""

from __future__ import annotations

import asyncio
import time

import pytest

from guidance.video_io import count_video_frames
from nrg_client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    RateLimitError,
    VideoFailedError,
    WaitTimeout,
)
from tests.clients.conftest import FAST, LONG
from tests.server.conftest import HANG_S


def run(coro):
    """Drive ``coro``; the timeout only turns a hang into a failure (see ``HANG_S``)."""
    return asyncio.run(asyncio.wait_for(coro, timeout=HANG_S))


def test_generate_and_concurrent_jobs_batch(server_url, batch_of_four_url, tmp_path):
    async def main():
        async with AsyncClient(server_url, timeout=30) as client:
            video = await client.generate("a green circle", output=tmp_path / "one.mp4", seed=5,
                                          reward_weights={"ta": 1.0}, **FAST)
            assert video.path == tmp_path / "one.mp4" and count_video_frames(video.path) == 9
            assert video.reward_guidance.weights == {"ta": 1.0} and set(video.rewards) == {"vq", "mq", "ta"}
        # Four at once, mixed guided/unguided, land in one batch of the same shape (on a server that
        # starts a batch once it is full, however far apart a busy machine sends the four requests).
        async with AsyncClient(batch_of_four_url, timeout=30) as client:
            videos = await asyncio.gather(*(
                client.generate(f"prompt {i}", output=tmp_path, seed=10 + i,
                                reward_weights={"vq": 1.0} if i % 2 else None, **FAST)
                for i in range(4)
            ))
            assert {v.status for v in videos} == {"completed"} and len({v.path for v in videos}) == 4
            assert [v.batch_size for v in videos] == [4, 4, 4, 4]
            names = {p.name for p in tmp_path.iterdir()}
            assert names == {"one.mp4"} | {f"{v.id}.mp4" for v in videos}
    run(main())


def test_events_stream(server_url):
    async def main():
        async with AsyncClient(server_url) as client:
            video = await client.create("a yellow triangle", seed=6, reward_weights={"mq": 1.0}, window=(0.0, 1.0),
                                        **FAST)
            events = [e async for e in client.events(video.id)]
            types = [e.type for e in events]
            assert types[:2] == ["queued", "started"] and types[-1] == "completed"
            steps = [e for e in events if e.type == "step"]
            assert [e.step for e in steps] == [1, 2] and steps[0].t > steps[1].t
            assert set(steps[-1].rewards) == {"vq", "mq", "ta"}
    run(main())


def test_cancel_wait_timeout_and_failure_error(server_url, tmp_path):
    async def main():
        async with AsyncClient(server_url) as client:
            video = await client.create("long", **LONG)
            async for event in client.events(video.id):
                if event.type == "step":
                    break
            with pytest.raises(WaitTimeout):
                await client.wait(video.id, timeout=0.2, poll_interval=0.05)
            cancelled = await client.cancel(video.id)
            assert cancelled.status == "cancelled" and cancelled.error.code == "cancelled"
            assert (await client.wait(video.id)).status == "cancelled"
            with pytest.raises(ConflictError) as info:
                await client.download(video.id, tmp_path)
            assert info.value.status == 409 and info.value.code == "video_not_ready"
            # generate() raises a typed error when its job does not complete.
            task = asyncio.create_task(client.generate("cancel me", output=tmp_path, poll_interval=0.05, **LONG))
            while not (page := await client.list(limit=1)).data or page.data[0].prompt != "cancel me":
                await asyncio.sleep(0.02)
            await client.cancel(page.data[0].id)
            with pytest.raises(VideoFailedError) as failed:
                await task
            assert failed.value.code == "cancelled" and failed.value.video.status == "cancelled"
    run(main())


def test_list_iterate_delete(server_url):
    async def main():
        async with AsyncClient(server_url) as client:
            ids = [(await client.create(f"async job {i}", **{**FAST, "num_inference_steps": 1})).id for i in range(2)]
            for video_id in ids:
                await client.wait(video_id, poll_interval=0.05)
            listed = [v.id async for v in client.iter_videos(page_size=1)]
            assert listed[:2] == ids[::-1]
            assert (await client.delete(ids[0])).deleted
            with pytest.raises(NotFoundError):
                await client.get(ids[0])
    run(main())


def test_typed_errors(server_url, auth_url):
    async def main():
        async with AsyncClient(server_url) as client:
            with pytest.raises(BadRequestError) as info:
                await client.create("p", num_inference_steps=401)
            assert info.value.status == 400 and info.value.param == "num_inference_steps"
            with pytest.raises(BadRequestError) as info:
                await client.create("p", reward_weights={"vq": 1.0}, mode="max")
            assert info.value.param == "reward_guidance.mode"
            with pytest.raises(NotFoundError) as info:
                await client.get("video_nope")
            assert info.value.status == 404 and info.value.code == "not_found"
            assert (await client.models())[0].id == "tiny-wan" and (await client.health())["status"] == "ok"
        async with AsyncClient(auth_url, api_key="sk-bad") as bad:
            with pytest.raises(AuthenticationError) as info:
                await bad.list()
            assert info.value.status == 401
        async with AsyncClient(auth_url, api_key="sk-good") as good:
            assert (await good.list()).data == []
    run(main())


def test_429_retry_then_bounded(queue_of_one_url):
    async def main():
        async with AsyncClient(queue_of_one_url) as client:
            first = await client.create("occupies the queue", **LONG)

            async def cancel_once_refused():
                # After the client has been refused (it counts a retry before it sleeps), never after a
                # fixed time, which a busy machine can let pass before the server has seen the create.
                while client.retry_count < 1:
                    await asyncio.sleep(0.01)
                await client.cancel(first.id)

            canceller = asyncio.create_task(cancel_once_refused())
            start = time.monotonic()
            second = await client.create("waits for room", **FAST)
            assert client.retry_count >= 1 and time.monotonic() - start >= 1.9  # a sleep never ends early
            await canceller
            assert (await client.wait(second.id, poll_interval=0.05)).status == "completed"

            blocker = await client.create("occupies the queue again", **LONG)
            async with AsyncClient(queue_of_one_url, max_retries=1, max_retry_wait=0.05) as impatient:
                with pytest.raises(RateLimitError) as info:
                    await impatient.create("no room", **FAST)
                assert impatient.retry_count == 1
            assert info.value.status == 429 and info.value.retry_after == 2.0
            await client.cancel(blocker.id)
    run(main())
