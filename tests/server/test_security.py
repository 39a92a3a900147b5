"""Security of ``nrg serve``: flags replace their environment variables, Host and Origin checks
(DNS rebinding, CSRF from a page in the user's browser), CORS for listed origins, and redacted
query strings in the access log."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import httpx
import pytest

from server.access_log import redact_query
from server.cli import build_parser
from server.cli.serve import server_config
from server.origin_policy import HostPolicy, host_name, same_origin
from tests.server.conftest import running_server, wait_for

SMALL = {"prompt": "a red circle moving left", "num_inference_steps": 1, "seed": 1}

# -- flags replace their environment variables --------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "flag", "dest"),
    [("NRG_API_KEYS", "--api-key", "api_keys"), ("NRG_MODEL", "--model", "model"),
     ("NRG_REWARD", "--reward", "reward"), ("NRG_CHECKPOINT", "--checkpoint", "checkpoint"),
     ("NRG_ALLOWED_HOSTS", "--allowed-host", "allowed_hosts"), ("NRG_CORS_ORIGINS", "--cors-origin", "cors_origins")],
)
def test_a_repeatable_flag_replaces_its_environment_list(monkeypatch, env, flag, dest):
    monkeypatch.setenv(env, "from-env-1,from-env-2")
    assert getattr(build_parser().parse_args(["serve"]), dest) == ["from-env-1", "from-env-2"]
    assert getattr(build_parser().parse_args(["serve", flag, "a"]), dest) == ["a"]
    assert getattr(build_parser().parse_args(["serve", flag, "a", flag, "b"]), dest) == ["a", "b"]
    monkeypatch.delenv(env)
    assert getattr(build_parser().parse_args(["serve"]), dest) == []


def test_flags_replace_env_in_the_served_config(monkeypatch, hosted_wan, tmp_path):
    """NRG_API_KEYS=k1 plus --api-key k2 accepts k2 only; NRG_MODEL plus --model hosts the flag's model only."""
    monkeypatch.setenv("NRG_API_KEYS", "k1")
    monkeypatch.setenv("NRG_MODEL", "env-model=/models/env")
    config = server_config(build_parser().parse_args(["serve", "--api-key", "k2", "--model", "flag=/models/flag"]))
    assert config.api_keys == ("k2",) and config.models == {"flag": Path("/models/flag")}
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, api_keys=config.api_keys) as (url, _):
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer k2"}).status_code == 200


def test_retention_flag_and_env(monkeypatch, capsys):
    assert build_parser().parse_args(["serve"]).retention == 7.0
    monkeypatch.setenv("NRG_RETENTION_DAYS", "0.5")
    assert build_parser().parse_args(["serve"]).retention == 0.5
    assert build_parser().parse_args(["serve", "--retention", "0"]).retention == 0.0
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", "--retention", "-1"])
    assert exit_info.value.code == 2 and "retention" in capsys.readouterr().err


# -- Host: DNS rebinding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [("localhost:8000", "localhost"), ("[::1]:8000", "::1"), ("[::1]", "::1"), ("Example.COM.", "example.com"),
     ("10.0.0.7", "10.0.0.7"), ("a b", None), ("[::1", None), ("host:port", None), ("[nothost]:1", None), ("", None)],
)
def test_host_name(header, name):
    assert host_name(header) == name


def test_host_policy_defaults():
    loopback = HostPolicy("127.0.0.1")
    for host in ("127.0.0.1:8000", "localhost:1", "[::1]:9", "192.168.1.5:8000"):
        assert loopback.allows(host), host
    for host in ("evil.example", "evil.example:8000", "localhost.evil.example", "a b"):
        assert not loopback.allows(host), host
    assert HostPolicy("gpu-box.lan").allows("GPU-BOX.lan:8000")
    everywhere = HostPolicy("0.0.0.0")
    assert everywhere.allows("10.1.2.3:8000") and everywhere.allows("localhost")
    assert not everywhere.allows("0.0.0.0.evil.example") and not everywhere.allows("gpu-box")
    assert HostPolicy("0.0.0.0", ["gpu-box"]).allows("gpu-box:8000")
    assert HostPolicy("0.0.0.0", ["*"]).allows("anything.example")


@pytest.fixture(scope="module")
def server(hosted_wan, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("security"), {"tiny-wan": hosted_wan},
                        allowed_hosts=("api.example",)) as (url, app):
        yield url, app


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io"])
def test_a_foreign_host_is_400_invalid_host(client, host):
    for response in (client.get("/v1/models", headers={"Host": host}),
                     client.post("/v1/videos", json=SMALL, headers={"Host": host}),
                     client.get("/health", headers={"Host": host})):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_host" and error["param"] == "Host" and "--allowed-host" in error["message"]


@pytest.mark.parametrize("host", ["localhost:1234", "127.0.0.1", "[::1]:80", "api.example", "API.example:443"])
def test_local_and_listed_hosts_are_served(client, host):
    assert client.get("/v1/models", headers={"Host": host}).status_code == 200


def _raw_status(url: str, request: bytes) -> int:
    """The status code a real server answers to ``request`` sent as raw bytes on its own connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed without an answer: {head!r}"
            head += chunk
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize("path", ["/health", "/v1/models"])
def test_two_host_headers_or_none_in_http_1_1_are_400(server, path):
    url = server[0]
    assert _raw_status(url, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()) == 200
    two = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    assert _raw_status(url, two.encode()) == 400
    assert _raw_status(url, f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode()) == 400
    assert _raw_status(url, f"GET {path} HTTP/1.0\r\n\r\n".encode()) == 200  # HTTP/1.0 has no Host rule


# -- Origin: cross-site requests ------------------------------------------------------------------------


def test_same_origin():
    assert same_origin("http://127.0.0.1:8000", "127.0.0.1:8000", "http")
    assert same_origin("http://localhost", "localhost:80", "http")
    assert not same_origin("http://localhost:8001", "localhost:8000", "http")
    assert not same_origin("https://localhost:8000", "localhost:8000", "http")
    assert not same_origin("null", "localhost:8000", "http")
    assert not same_origin("http://[::1", "localhost:8000", "http")


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
def test_a_cross_origin_post_or_delete_is_403_without_cors_headers(client, origin):
    before = client.get("/v1/videos").json()["data"]
    response = client.post("/v1/videos", json=SMALL, headers={"Origin": origin})
    assert response.status_code == 403 and response.json()["error"]["code"] == "cross_origin_forbidden"
    assert "access-control-allow-origin" not in response.headers
    assert client.get("/v1/videos").json()["data"] == before  # nothing was queued
    # A form post is what a foreign page can send without a preflight.
    response = client.post("/v1/videos", data={"prompt": "p"}, headers={"Origin": origin})
    assert response.status_code == 403
    assert client.delete("/v1/videos/video_x", headers={"Origin": origin}).status_code == 403
    preflight = client.options("/v1/videos", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers


def test_a_cross_origin_get_is_answered_without_cors_headers(client):
    response = client.get("/v1/models", headers={"Origin": "http://evil.example"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_a_same_origin_post_is_accepted(client, server):
    job = client.post("/v1/videos", json=SMALL, headers={"Origin": server[0]}).json()
    assert job["status"] == "queued"
    wait_for(client, job["id"])


def test_listed_cors_origins_get_cors_headers_and_preflight(hosted_wan, tmp_path):
    app_origin = "http://app.example:3000"
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, cors_origins=(app_origin,), api_keys=("k1",)) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            preflight = client.options("/v1/videos", headers={
                "Origin": app_origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"})
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == app_origin
            assert "POST" in preflight.headers["access-control-allow-methods"]
            assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
            response = client.post("/v1/videos", json=SMALL,
                                   headers={"Origin": app_origin, "Authorization": "Bearer k1"})
            assert response.status_code == 200 and response.headers["access-control-allow-origin"] == app_origin
            wait_for(httpx.Client(base_url=url, headers={"Authorization": "Bearer k1"}), response.json()["id"])
            refused = client.post("/v1/videos", json=SMALL, headers={"Origin": "http://evil.example",
                                                                     "Authorization": "Bearer k1"})
            assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


# -- the access log ---------------------------------------------------------------------------------------


def test_redact_query():
    assert redact_query("/v1/models") == "/v1/models"
    assert redact_query("/v1/models?api_key=sk-1&limit=2") == "/v1/models?api_key=REDACTED&limit=2"
    assert redact_query("/v1/videos?after=video_1&order=asc&token=t") == "/v1/videos?after=video_1&order=asc&token=REDACTED"
    assert redact_query("/x?sk-bare&x-auth=1&") == "/x?REDACTED&x-auth=REDACTED&"


def test_the_access_log_never_contains_query_secrets(client):
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("uvicorn.access")
    handler, level = Capture(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert client.get("/v1/models", params={"api_key": "sk-secret-1", "limit": "2"}).status_code == 200
        assert client.get("/v1/videos", params={"access_token": "sk-secret-2", "limit": 1}).status_code == 200
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    logged = "\n".join(lines)
    assert "/v1/models?api_key=REDACTED&limit=2" in logged and "/v1/videos?access_token=REDACTED&limit=1" in logged
    assert "sk-secret" not in logged
