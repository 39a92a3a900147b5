"""API keys are tenants: a key sees only its own jobs (others' are 404, never 403); the operator's key
sees all; keys are stored and compared only as digests."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from server.cli import build_parser
from server.cli.serve import server_config
from server.tenancy import SINGLE_TENANT, KeyRing, owner_id
from tests.server.conftest import running_server, wait_for

KEY_A, KEY_B, OPERATOR = "sk-tenant-a-4f1e", "sk-tenant-b-9c2d", "sk-operator-77aa"
SMALL = {"prompt": "a red circle moving left", "num_inference_steps": 2, "seed": 1}
#: Every route that names one job, as (method, path suffix).
ONE_JOB_ROUTES = [("GET", ""), ("GET", "/events"), ("GET", "/content"), ("GET", "/content?variant=thumbnail"),
                  ("DELETE", "")]


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def tenants(hosted_wan, tmp_path_factory):
    """A server with two tenant keys and an operator key; A's completed job."""
    with running_server(tmp_path_factory.mktemp("tenants"), {"tiny-wan": hosted_wan}, api_keys=(KEY_A, KEY_B),
                        admin_key=OPERATOR) as (url, app):
        with _client(url, KEY_A) as a:
            job = wait_for(a, a.post("/v1/videos", json=SMALL).json()["id"])
            assert job["status"] == "completed"
        yield url, app, job["id"]


def _ids(client: httpx.Client) -> list[str]:
    return [v["id"] for v in client.get("/v1/videos", params={"limit": 100}).json()["data"]]


def test_another_key_gets_404_for_every_route_of_a_job_as_for_an_id_that_does_not_exist(tenants):
    url, _, video_id = tenants
    with _client(url, KEY_B) as b, _client(url, KEY_A) as a:
        for method, suffix in ONE_JOB_ROUTES:
            theirs = b.request(method, f"/v1/videos/{video_id}{suffix}")
            missing = b.request(method, f"/v1/videos/video_{'0' * 24}{suffix}")
            assert theirs.status_code == missing.status_code == 404, (method, suffix)
            assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
        assert video_id not in _ids(b)
        assert b.get("/v1/videos", params={"after": video_id}).status_code == 400  # as an unknown id
        # B's DELETE did nothing: A still has the job and its video.
        assert video_id in _ids(a)
        assert a.get(f"/v1/videos/{video_id}/content").content[4:8] == b"ftyp"


def test_a_key_sees_only_its_own_jobs_and_the_operator_sees_all(tenants):
    url, _, a_job = tenants
    with _client(url, KEY_A) as a, _client(url, KEY_B) as b, _client(url, OPERATOR) as op:
        b_job = b.post("/v1/videos", json=SMALL).json()["id"]
        assert b_job in _ids(b) and a_job not in _ids(b)
        assert a_job in _ids(a) and b_job not in _ids(a)
        assert {a_job, b_job} <= set(_ids(op))
        assert op.get(f"/v1/videos/{b_job}").status_code == 200
        # Paging with another tenant's id as the anchor is refused; one's own anchor pages one's own jobs.
        assert b.get("/v1/videos", params={"after": b_job, "order": "asc"}).json()["data"] == []
        assert op.delete(f"/v1/videos/{b_job}").status_code == 200  # the operator may cancel anyone's job
        assert wait_for(b, b_job)["status"] == "cancelled"


def test_metrics_and_models_stay_shared(tenants):
    url, _, _ = tenants
    with _client(url, KEY_B) as b:
        assert b.get("/v1/models").status_code == 200
        assert 'nrg_requests_total{status="completed"}' in b.get("/metrics").text


def test_the_store_keeps_the_owner_as_a_digest_never_the_key(tenants):
    url, app, video_id = tenants
    assert app.state.runtime.store.get(video_id).owner == hashlib.sha256(KEY_A.encode()).hexdigest()
    data_dir = app.state.runtime.store.data_dir
    for path in data_dir.glob("jobs.sqlite3*"):
        assert KEY_A.encode() not in path.read_bytes()


def test_jobs_from_before_keys_are_the_operators_alone(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}) as (url, _):  # no keys: one tenant
        with httpx.Client(base_url=url, timeout=60) as anyone:
            old = anyone.post("/v1/videos", json={**SMALL, "num_inference_steps": 300}).json()["id"]
            assert anyone.delete(f"/v1/videos/{old}").status_code == 200
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, api_keys=(KEY_A,), admin_key=OPERATOR) as (url, _):
        with _client(url, KEY_A) as a, _client(url, OPERATOR) as op:
            assert a.get(f"/v1/videos/{old}").status_code == 404 and old not in _ids(a)
            assert op.get(f"/v1/videos/{old}").status_code == 200 and old in _ids(op)


def test_without_keys_everyone_sees_every_job(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as one, httpx.Client(base_url=url, timeout=60) as other:
            video_id = one.post("/v1/videos", json={**SMALL, "num_inference_steps": 300}).json()["id"]
            assert video_id in _ids(other) and other.delete(f"/v1/videos/{video_id}").status_code == 200
        assert app.state.runtime.store.get(video_id).owner is None


def test_key_ring_compares_digests_and_accepts_configured_digests():
    digest = hashlib.sha256(b"sk-hashed").hexdigest()
    ring = KeyRing(["sk-plain", f"sha256:{digest.upper()}"], ["sk-op"])
    assert ring.caller(b"sk-plain").owner == owner_id(b"sk-plain") and not ring.caller(b"sk-plain").sees_all
    assert ring.caller(b"sk-hashed").owner == digest
    assert ring.caller(b"sk-op").sees_all
    assert ring.caller(b"sk-nope") is None and ring.caller(b"") is None
    assert ring.caller(f"sha256:{digest}".encode()) is None  # the digest itself is no key
    assert b"sk-plain" not in repr(vars(ring)).encode()
    assert KeyRing(["sk-op"], ["sk-op"]).caller(b"sk-op").sees_all
    assert not KeyRing().enabled and SINGLE_TENANT.sees_all


def test_admin_key_flag_and_env(monkeypatch):
    assert server_config(build_parser().parse_args(["serve"])).admin_key is None
    monkeypatch.setenv("NRG_ADMIN_KEY", "from-env")
    assert server_config(build_parser().parse_args(["serve"])).admin_key == "from-env"
    assert server_config(build_parser().parse_args(["serve", "--admin-key", "flag"])).admin_key == "flag"


def test_an_operator_key_alone_turns_auth_on(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, admin_key=OPERATOR) as (url, _):
        assert httpx.get(f"{url}/v1/videos").status_code == 401
        assert httpx.get(f"{url}/v1/videos", headers={"Authorization": f"Bearer {OPERATOR}"}).status_code == 200
        schema = httpx.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {OPERATOR}"}).json()
        assert schema["security"] == [{"bearer": []}]
