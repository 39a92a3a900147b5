"""A completed job whose file is gone answers 410 ``video_file_missing``, and is reported at start."""

from __future__ import annotations

import logging

import httpx

from tests.server.conftest import running_server, wait_for

BODY = {"prompt": "a red circle", "num_inference_steps": 2, "seed": 5}


def test_a_lost_video_file_is_410_and_reported_at_start(hosted_wan, tmp_path, caplog):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}) as (url, app):
        store = app.state.runtime.store
        with httpx.Client(base_url=url, timeout=60) as client:
            job = wait_for(client, client.post("/v1/videos", json=BODY).json()["id"])
            assert job["status"] == "completed"
            store.video_path(job["id"]).unlink()
            response = client.get(f"/v1/videos/{job['id']}/content")
            assert response.status_code == 410
            assert response.json() == {"error": {
                "message": response.json()["error"]["message"], "type": "invalid_request_error",
                "param": "video_id", "code": "video_file_missing"}}
            assert job["id"] in response.json()["error"]["message"]
            assert client.get(f"/v1/videos/{job['id']}/content?variant=thumbnail").status_code == 200
            store.thumbnail_path(job["id"]).unlink()
            assert client.get(f"/v1/videos/{job['id']}/content?variant=thumbnail").status_code == 410
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nrg.engine"):
        with running_server(tmp_path, {"tiny-wan": hosted_wan}) as (url, app):
            with httpx.Client(base_url=url, timeout=60) as client:
                # Kept as completed, with its metadata; only the content is gone.
                assert client.get(f"/v1/videos/{job['id']}").json()["status"] == "completed"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(job["id"] in w and "lost their video file" in w for w in warnings), warnings
