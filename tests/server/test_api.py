"""The HTTP API over real sockets: lifecycle, SSE, cancel, queue limits, validation, auth, batching."""

from __future__ import annotations

import copy
import dataclasses
import json

import httpx
import numpy as np
import pytest

from guidance.nrg import GuidanceDefaults
from guidance.reward_model import RewardCalibration
from guidance.video_io import count_video_frames
from server.schema import Limits
from tests.server.conftest import decoded, full_batches_only, running_server, until, wait_for

SMALL = {"prompt": "a red circle moving left", "num_inference_steps": 4, "seed": 1}


@pytest.fixture(scope="module")
def server(hosted_wan, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("api"), {"tiny-wan": hosted_wan}, max_batch=2,
                        batch_wait_ms=300) as (url, app):
        yield url, app


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


def _events(client, video_id):
    events = []
    with client.stream("GET", f"/v1/videos/{video_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events


def test_full_lifecycle(client, tmp_path):
    job = client.post("/v1/videos", json={**SMALL, "reward_guidance": {"weights": {"vq": 1.0}, "strength": 5}}).json()
    assert job["object"] == "video" and job["status"] == "queued" and job["size"] == "32x32"
    events = _events(client, job["id"])
    kinds = [k for k, _ in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "completed"
    steps = [d for k, d in events if k == "step"]
    assert [d["step"] for d in steps] == [1, 2, 3, 4]
    assert all(a["t"] > b["t"] for a, b in zip(steps, steps[1:]))
    # The reward is evaluated (and reported) on the steps it guides: those inside the default window.
    scored = [d["step"] for d in steps if "rewards" in d]
    assert scored == [d["step"] for d in steps if 0.2 <= d["t"] <= 0.8] and scored
    assert all(set(d["rewards"]) == {"vq", "mq", "ta"} for d in steps if "rewards" in d)
    done = wait_for(client, job["id"])
    assert done["progress"] == 100 and set(done["rewards"]) == {"vq", "mq", "ta"}
    assert done["inference_time_s"] > 0 and done["queue_time_s"] >= 0 and done["encode_time_s"] > 0
    # The job reports the settings it ran with: the strength it gave, the reward model's defaults for the rest.
    assert done["reward_guidance"] == {"weights": {"vq": 1.0}, "strength": 5.0, "window": [0.2, 0.8],
                                       "mode": "relative", "particles": None, "judge": None}
    video = client.get(f"/v1/videos/{job['id']}/content")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "v.mp4").write_bytes(video.content)
    assert count_video_frames(tmp_path / "v.mp4") == 9
    thumb = client.get(f"/v1/videos/{job['id']}/content", params={"variant": "thumbnail"})
    assert thumb.status_code == 200 and thumb.content[:4] == b"RIFF"
    assert any(j["id"] == job["id"] for j in client.get("/v1/videos").json()["data"])
    assert client.delete(f"/v1/videos/{job['id']}").json() == {"id": job["id"], "object": "video.deleted",
                                                              "deleted": True}
    assert client.get(f"/v1/videos/{job['id']}").status_code == 404


def test_two_jobs_with_different_weights_batch_together_and_match_each_alone(server, client):
    app = server[1]
    bodies = [
        {**SMALL, "seed": 21, "reward_guidance": {"weights": {"vq": 1.0}, "strength": 30}},
        {**SMALL, "seed": 22, "prompt": "a blue square moving up", "guidance_scale": 2.0,
         "reward_guidance": {"weights": {"ta": 2.0, "mq": -1.0}, "strength": 10}},
    ]
    with full_batches_only(app):  # max_batch is 2: the two start together once both are queued
        together = [client.post("/v1/videos", json=b).json()["id"] for b in bodies]
        together = [wait_for(client, i) for i in together]
    assert [j["batch_size"] for j in together] == [2, 2]
    for body, job in zip(bodies, together):
        alone = wait_for(client, client.post("/v1/videos", json=body).json()["id"])
        assert alone["batch_size"] == 1
        for name, value in job["rewards"].items():
            assert alone["rewards"][name] == pytest.approx(value, abs=1e-4)
        # Batched float kernels round differently from one row's (docs/server.md, Reproducibility), and
        # H.264 can turn one level into a few; a mixed-up row would differ by tens of levels everywhere.
        a, b = (decoded(client.get(f"/v1/videos/{j['id']}/content").content).astype(int) for j in (alone, job))
        assert a.shape == b.shape and np.abs(a - b).mean() < 1.0


def test_cancel_mid_run(client):
    job = client.post("/v1/videos", json={**SMALL, "num_inference_steps": 400}).json()
    until(lambda: client.get(f"/v1/videos/{job['id']}").json()["progress"] > 0, "the job mid-run")
    cancelled = client.delete(f"/v1/videos/{job['id']}").json()
    assert cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
    assert _events(client, job["id"])[-1][0] == "cancelled"
    assert client.get(f"/v1/videos/{job['id']}/content").status_code == 409
    # The worker is free again: the next job completes.
    assert wait_for(client, client.post("/v1/videos", json=SMALL).json()["id"])["status"] == "completed"


def test_cancel_queued_job(client):
    running = client.post("/v1/videos", json={**SMALL, "num_inference_steps": 200}).json()
    queued = client.post("/v1/videos", json={**SMALL, "num_frames": 5}).json()
    assert client.delete(f"/v1/videos/{queued['id']}").json()["status"] == "cancelled"
    assert wait_for(client, running["id"])["status"] == "completed"
    assert client.get(f"/v1/videos/{queued['id']}").json()["status"] == "cancelled"


def test_list_pagination(client):
    ids = [client.post("/v1/videos", json={**SMALL, "num_inference_steps": 1}).json()["id"] for _ in range(3)]
    for i in ids:
        wait_for(client, i)
    page = client.get("/v1/videos", params={"limit": 2, "order": "asc", "after": ids[0]}).json()
    assert [j["id"] for j in page["data"]] == ids[1:3]
    newest = client.get("/v1/videos", params={"limit": 1}).json()
    assert newest["data"][0]["id"] == ids[-1] and newest["has_more"] is True


def test_models_listing(client):
    model = client.get("/v1/models").json()["data"][0]
    assert model["id"] == "tiny-wan" and model["family"] == "wan"
    assert model["reward_objectives"] == ["vq", "mq", "ta"] and model["checkpoints"] == []


def test_a_request_with_only_weights_gets_the_reward_models_recommended_settings(hosted_wan, tmp_path):
    """The reward model's own defaults (written by nrg eval --tune) fill in what a request leaves out,
    and /v1/models publishes them."""
    reward = copy.copy(hosted_wan.reward)
    reward.guidance_defaults = GuidanceDefaults("relative", 1.5, (0.3, 0.9), "test")
    reward.calibration = RewardCalibration({"vq": 0.1, "mq": -0.2, "ta": 0.0}, {"vq": 0.5, "mq": 2.0, "ta": 0.25}, 32, "t")
    hosted = dataclasses.replace(hosted_wan, reward=reward)
    with running_server(tmp_path, {"tiny-wan": hosted}) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        card = client.get("/v1/models").json()["data"][0]
        assert card["reward_guidance_defaults"] == {"mode": "relative", "strength": 1.5, "window": [0.3, 0.9],
                                                    "source": "test"}
        only_weights = client.post("/v1/videos", json={**SMALL, "reward_guidance": {"weights": {"ta": 1}}}).json()
        assert only_weights["reward_guidance"] == {"weights": {"ta": 1.0}, "strength": 1.5, "window": [0.3, 0.9],
                                                   "mode": "relative", "particles": None, "judge": None}
        paper = client.post("/v1/videos", json={**SMALL, "reward_guidance": {"weights": {"ta": 1}, "mode": "sum"}})
        assert paper.json()["reward_guidance"]["strength"] == 100.0  # the paper's w, not the tuned relative one
        done = wait_for(client, only_weights["id"])
        assert done["status"] == "completed"
        # Calibrated: the final rewards also as z-scores against the model's unguided samples.
        mean, std = reward.calibration.mean, reward.calibration.std
        assert done["rewards_z"] == {k: pytest.approx((v - mean[k]) / std[k], abs=1e-3) for k, v in done["rewards"].items()}


def test_search_modes_batch_with_gradient_guided_jobs_and_report_their_cost(client):
    fk = client.post("/v1/videos", json={**SMALL, "seed": 21, "reward_guidance": {
        "weights": {"ta": 1}, "mode": "fk", "particles": 3, "window": [0, 1]}}).json()
    relative = client.post("/v1/videos", json={**SMALL, "seed": 22, "reward_guidance": {"weights": {"vq": 1}}}).json()
    assert fk["reward_guidance"] == {"weights": {"ta": 1.0}, "strength": 10.0, "window": [0.0, 1.0], "mode": "fk",
                                     "particles": 3, "judge": None}
    done = [wait_for(client, job["id"]) for job in (fk, relative)]
    assert [d["status"] for d in done] == ["completed", "completed"]
    # --max-batch counts rows: the fk job's 3 particles are more than this server's 2, so it runs alone
    # (modes are not in the batch key: tests/guidance/test_batch_state.py steps search and gradient rows together).
    assert done[0]["batch_size"] == done[1]["batch_size"] == 1
    steps = SMALL["num_inference_steps"]
    assert done[0]["denoiser_passes"] == 3 * steps and done[1]["denoiser_passes"] == steps
    # Measured time against an unguided row of the same calls: the particles' passes and scoring, the
    # gradient job's reward backward (it is guided at some of its steps) on top of one row's passes.
    assert done[0]["cost_vs_unguided"] > 1 and done[1]["cost_vs_unguided"] > 1


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"prompt": "p", "reward_guidance": {"weights": {"ta": 1}, "mode": "fk", "particles": 99}},
         "reward_guidance.particles", "less than or equal to 8"),
        ({"prompt": "p", "reward_guidance": {"weights": {"ta": 1}, "mode": "best_of_n", "particles": 2.5}},
         "reward_guidance.particles", "integer"),
        ({}, "prompt", "Field required"),
        ({"prompt": ""}, "prompt", "at least 1 character"),
        ({"prompt": "x" * 2001}, "prompt", "at most 2000 characters"),
        ({**SMALL, "num_inference_steps": 401}, "num_inference_steps", "less than or equal to 400"),
        ({**SMALL, "num_frames": 8}, "num_frames", "frames must be 4*k + 1"),
        ({**SMALL, "num_frames": 500}, "num_frames", "less than or equal to 129"),
        ({**SMALL, "size": "32by32"}, "size", "should match pattern"),
        ({**SMALL, "size": "1280x1280"}, None, "exceeds max_pixels 921600"),
        ({**SMALL, "size": "40x32"}, "width", "multiple of 16"),
        ({**SMALL, "guidance_scale": 51}, "guidance_scale", "less than or equal to 50"),
        ({**SMALL, "seed": -1}, "seed", "greater than or equal to 0"),
        ({**SMALL, "model": "nope"}, "model", "unknown model 'nope'"),
        ({**SMALL, "checkpoint": "dpo"}, "checkpoint", "unknown checkpoint 'dpo'"),
        ({**SMALL, "reward_guidance": {"weights": {"zz": 1}}}, "reward_guidance.weights", "unknown objective"),
        ({**SMALL, "reward_guidance": {"weights": {"vq": 1e9}}}, "reward_guidance.weights", "|value| <= 1000"),
        ({**SMALL, "reward_guidance": {"strength": 1e6}}, "reward_guidance.strength", "less than or equal to 10000"),
        ({**SMALL, "reward_guidance": {"window": [0.9, 0.1]}}, "reward_guidance.window", "t_lo <= t_hi"),
        ({**SMALL, "reward_guidance": {"mode": "max"}}, "reward_guidance.mode", "'best_of_n' or 'fk'"),
        ({**SMALL, "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({**SMALL, "seconds": "abc"}, "seconds", "valid number"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(client, body, param, fragment):
    response = client.post("/v1/videos", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "must be a JSON object"),
     (b'{"prompt": "p", "reward_guidance": {"weights": {"vq": NaN}}}', "finite"),
     (b"\xff\xfe", "not valid JSON")],
)
def test_malformed_bodies_are_400(client, content, fragment):
    response = client.post("/v1/videos", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400 and fragment in response.json()["error"]["message"]


def test_oversized_body_is_413(client):
    response = client.post("/v1/videos", content=b"x" * (Limits().max_body_bytes + 1),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "max_body_bytes" in response.json()["error"]["message"]


def test_bad_queries_and_unknown_ids(client):
    assert client.get("/v1/videos", params={"limit": 0}).status_code == 400
    assert client.get("/v1/videos", params={"order": "up"}).json()["error"]["param"] == "order"
    assert client.get("/v1/videos", params={"after": "video_nope"}).status_code == 400
    assert client.get("/v1/videos/video_nope").json()["error"]["code"] == "not_found"
    assert client.delete("/v1/videos/video_nope").status_code == 404
    assert client.get("/v1/videos/video_nope/content").status_code == 404
    assert client.get("/v1/videos/video_nope/events").status_code == 404


@pytest.mark.parametrize("multipart", [False, True])
def test_form_body_with_nested_extension_fields(client, multipart):
    form = {"prompt": "a green circle", "num_inference_steps": "2", "seed": "5", "size": "32x32",
            "reward_guidance[weights][ta]": "0.5", "reward_guidance[strength]": "3",
            "reward_guidance[window][]": ["0.1", "0.9"]}
    if multipart:
        parts = [(k, (None, v)) for k, vs in form.items() for v in (vs if isinstance(vs, list) else [vs])]
        response = client.post("/v1/videos", files=parts)
        assert response.request.headers["content-type"].startswith("multipart/form-data")
    else:
        response = client.post("/v1/videos", data=form)
    job = response.json()
    assert job["reward_guidance"]["window"] == [0.1, 0.9]
    assert job["reward_guidance"]["weights"] == {"ta": 0.5} and job["num_inference_steps"] == 2
    assert wait_for(client, job["id"])["status"] == "completed"


def test_metrics_are_exported(client):
    wait_for(client, client.post("/v1/videos", json={**SMALL, "reward_guidance": {"weights": {"vq": 1}}}).json()["id"])
    text = client.get("/metrics").text
    assert "nrg_requests_total{status=\"completed\"}" in text and "nrg_queue_depth 0.0" in text
    # What the engine measured carries its worker id (a single-process server's is "local").
    for name in ("nrg_batch_size_bucket", "nrg_step_seconds_bucket", "nrg_queue_wait_seconds_bucket",
                 "nrg_e2e_latency_seconds_bucket", "nrg_guidance_time_share_bucket"):
        assert f'{name}{{le="+Inf",worker="local"}} ' in text, name
    for name in ('nrg_final_reward_bucket{le="0.0",objective="vq",worker="local"}',
                 'nrg_guidance_skipped_steps_total{worker="local"}', 'nrg_device_memory_bytes{worker="local"}'):
        assert name in text, name


def test_openapi_documents_fields_with_limits(client):
    schema = client.get("/openapi.json").json()
    body = schema["components"]["schemas"]["VideoCreateRequest"]["properties"]
    assert body["num_inference_steps"]["anyOf"][0]["maximum"] == 400
    assert body["prompt"]["maxLength"] == 2000
    assert "reward_guidance" in body and "/v1/videos/{video_id}/events" in schema["paths"]


_JSON_TYPES = {"integer": int, "number": (int, float), "object": dict, "string": str}


def test_openapi_describes_the_event_stream_event_by_event(client):
    """Each event the stream sends matches one branch of the documented per-event schema."""
    route = client.get("/openapi.json").json()["paths"]["/v1/videos/{video_id}/events"]["get"]
    content = route["responses"]["200"]["content"]
    assert list(content) == ["text/event-stream"]
    branches = {b["properties"]["event"]["const"]: b for b in content["text/event-stream"]["schema"]["oneOf"]}
    assert set(branches) == {"queued", "started", "step", "completed", "failed", "cancelled"}
    done = client.post("/v1/videos", json=SMALL).json()["id"]
    cancelled = client.post("/v1/videos", json={**SMALL, "num_inference_steps": 300}).json()["id"]
    client.delete(f"/v1/videos/{cancelled}")
    streamed = _events(client, done) + _events(client, cancelled)
    assert {"step", "completed", "cancelled"} <= {kind for kind, _ in streamed}
    for kind, data in streamed:
        branch = branches[kind]
        assert branch["required"] == ["event", "data"] and branch["properties"]["data"]["type"] == "string"
        shape = branch["properties"]["data"]["contentSchema"]
        assert set(shape["required"]) <= set(data), (kind, data)
        for name, value in data.items():
            if name in shape["properties"]:
                assert isinstance(value, _JSON_TYPES[shape["properties"][name]["type"]]), (kind, name, value)


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200


def test_queue_full_is_429_with_retry_after(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, max_queue=1) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            first = client.post("/v1/videos", json={**SMALL, "num_inference_steps": 300}).json()
            response = client.post("/v1/videos", json=SMALL)
            assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
            assert response.json()["error"]["code"] == "queue_full"
            client.delete(f"/v1/videos/{first['id']}")
            assert "nrg_requests_total{status=\"rejected\"} 1.0" in client.get("/metrics").text


def test_api_keys(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, api_keys=("k1", "k2")) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/health").status_code == 200
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "k1"}):
                response = client.get("/v1/models", headers=headers)
                assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
            assert client.post("/v1/videos", json=SMALL).status_code == 401
            assert client.get("/metrics").status_code == 401
            assert client.get("/v1/models", headers={"Authorization": "Bearer k2"}).status_code == 200
