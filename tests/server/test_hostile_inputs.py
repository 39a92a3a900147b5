"""Inputs that used to reach a 5xx or slip through validation, over a real socket: every bad input is a
4xx in the project's error shape naming the field and the limit, and every response keeps the
connection usable (or says ``Connection: close``)."""

from __future__ import annotations

import json
import select
import socket

import httpx
import pytest

from server.schema import Limits
from tests.server.conftest import running_server, wait_for

SMALL = {"prompt": "a red circle moving left", "num_inference_steps": 2, "seed": 1}
ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def server(hosted_wan, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("hostile"), {"tiny-wan": hosted_wan},
                        limits=Limits(max_steps=400, max_body_bytes=64 * 1024)) as (url, app):
        yield url, app


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, body
    return body["error"]


def _post_raw(client: httpx.Client, content: bytes) -> httpx.Response:
    return client.post("/v1/videos", content=content, headers={"content-type": "application/json"})


# -- JSON limits ------------------------------------------------------------------------------------


def test_huge_seconds_is_400_not_overflow(client):
    error = _error(client.post("/v1/videos", json={**SMALL, "seconds": 1.2e307}), 400)
    assert error["param"] == "seconds" and "128" in error["message"]


def test_integer_with_4301_digits_is_400_naming_the_field(client):
    error = _error(_post_raw(client, b'{"prompt": "p", "seed": ' + b"9" * 4301 + b"}"), 400)
    assert error["param"] == "seed" and "4301 digits" in error["message"] and "100" in error["message"]


def test_float_literal_beyond_double_range_is_400(client):
    error = _error(_post_raw(client, b'{"prompt": "p", "reward_guidance": {"weights": {"vq": 1e400}}}'), 400)
    assert error["param"] == "reward_guidance.weights.vq" and "out of range" in error["message"]


def test_3000_levels_of_nesting_is_400(client):
    nested = b"[" * 3000 + b"]" * 3000
    error = _error(_post_raw(client, b'{"prompt": "p", "reward_guidance": {"weights": ' + nested + b"}}"), 400)
    assert "nesting" in error["message"] and "32" in error["message"]


def test_brackets_inside_strings_do_not_count_as_nesting(client):
    job = client.post("/v1/videos", json={**SMALL, "prompt": "[[[[{{{{" * 10 + '\\"]]'}).json()
    assert job["status"] == "queued"
    wait_for(client, job["id"])


def test_deeply_nested_form_keys_are_400(client):
    key = "reward_guidance" + "[a]" * 3000
    error = _error(client.post("/v1/videos", data={"prompt": "p", key: "1"}), 400)
    assert "nesting" in error["message"]


# -- validation gaps --------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [" ", "\t\n  ", "\u3000"])
def test_whitespace_only_prompt_is_400(client, prompt):
    error = _error(client.post("/v1/videos", json={**SMALL, "prompt": prompt}), 400)
    assert error["param"] == "prompt" and "whitespace" in error["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_inference_steps", True), ("seed", False), ("fps", True), ("guidance_scale", True),
     ("width", True), ("num_frames", True), ("seconds", True)],
)
def test_booleans_are_not_numbers(client, field, value):
    error = _error(client.post("/v1/videos", json={**SMALL, field: value}), 400)
    assert error["param"] == field and "boolean" in error["message"]


def test_boolean_guidance_numbers_are_400(client):
    for guidance, param in (({"strength": True}, "reward_guidance.strength"),
                            ({"weights": {"vq": True}}, "reward_guidance.weights.vq"),
                            ({"window": [False, True]}, "reward_guidance.window.0")):
        error = _error(client.post("/v1/videos", json={**SMALL, "reward_guidance": guidance}), 400)
        assert error["param"] == param and "boolean" in error["message"], error


# -- body size while streaming -----------------------------------------------------------------------


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_chunked_body_over_the_limit_is_413_before_the_body_ends(server):
    """The body never ends: a server that buffered it all would never answer."""
    limit = 64 * 1024
    sock = _connect(server[0])
    try:
        sock.sendall(b"POST /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (16 * 1024, b" " * 16 * 1024)
        sent = 0
        while not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed in between; its answer waits in our buffer
            sent += 16 * 1024
            assert sent < 256 * 1024 * 1024, "no answer after 256 MiB"
        status, headers, body = _read_response(sock)
    finally:
        sock.close()
    assert status == 413 and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "body_too_large" and str(limit) in error["message"]


def test_chunked_body_under_the_limit_is_accepted(client):
    def parts():
        text = json.dumps(SMALL).encode()
        yield text[:10]
        yield text[10:]

    job = client.post("/v1/videos", content=parts(), headers={"content-type": "application/json"}).json()
    assert job["status"] == "queued"
    wait_for(client, job["id"])


def test_declared_length_over_the_limit_is_413_with_connection_close(client):
    response = client.post("/v1/videos", content=b" " * (64 * 1024 + 1), headers={"content-type": "application/json"})
    assert _error(response, 413)["code"] == "body_too_large"
    assert response.headers["connection"] == "close"


# -- 5xx keeps clients safe ---------------------------------------------------------------------------


def test_an_internal_error_is_500_json_with_connection_close(server, client, monkeypatch):
    store = server[1].state.runtime.store

    def broken(video_id):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(store, "get", broken)
    response = client.get("/v1/videos/video_x")
    monkeypatch.undo()
    error = _error(response, 500)
    assert error["code"] == "internal_error" and error["type"] == "server_error"
    assert response.headers["connection"] == "close"
    assert client.get("/health").status_code == 200


# -- error shape everywhere -------------------------------------------------------------------------


def test_unknown_route_is_404_in_the_error_shape(client):
    error = _error(client.get("/v2/nothing"), 404)
    assert error["code"] == "not_found" and "/v2/nothing" in error["message"]


def test_wrong_method_is_405_with_allow(client):
    response = client.put("/v1/videos")
    error = _error(response, 405)
    assert error["code"] == "method_not_allowed"
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


@pytest.fixture(scope="module")
def finished_video(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        return wait_for(c, c.post("/v1/videos", json=SMALL).json()["id"])


@pytest.mark.parametrize(("range_header", "status"), [("bytes=abc", 400), ("lines=0-1", 400),
                                                       ("bytes=99999999-", 416)])
def test_bad_ranges_use_the_error_shape(client, finished_video, range_header, status):
    response = client.get(f"/v1/videos/{finished_video['id']}/content", headers={"Range": range_header})
    error = _error(response, status)
    assert error["param"] == "Range"
    if status == 416:
        assert response.headers["content-range"].startswith("bytes */")


def test_a_good_range_is_206(client, finished_video):
    response = client.get(f"/v1/videos/{finished_video['id']}/content", headers={"Range": "bytes=0-7"})
    assert response.status_code == 206 and response.content[4:8] == b"ftyp"


def test_every_response_has_nosniff(client, finished_video):
    for response in (client.get("/health"), client.get("/v2/nothing"), client.get("/metrics"),
                     client.post("/v1/videos", json={}), client.get(f"/v1/videos/{finished_video['id']}/content"),
                     client.get("/openapi.json")):
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url


def test_401_says_bearer(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, api_keys=("k1",)) as (url, _):
        response = httpx.get(f"{url}/v1/models")
    assert _error(response, 401)["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-content-type-options"] == "nosniff"


# -- OpenAPI tells the truth --------------------------------------------------------------------------


def test_openapi_lists_the_real_statuses_with_the_error_schema(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    expected = {
        ("post", "/v1/videos"): {"200", "400", "403", "413", "429", "503"},
        ("get", "/v1/videos"): {"200", "400"},
        ("get", "/v1/videos/{video_id}"): {"200", "400", "404"},
        ("delete", "/v1/videos/{video_id}"): {"200", "400", "403", "404"},
        ("get", "/v1/videos/{video_id}/content"): {"200", "206", "400", "404", "409", "410", "416"},
        ("get", "/v1/videos/{video_id}/events"): {"200", "400", "404"},
        ("get", "/ready"): {"200", "400", "503"},
    }
    for (method, path), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == statuses, (method, path, set(responses))
        for status in statuses - {"200", "206"} - ({"503"} if path == "/ready" else set()):
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorResponse"
    text = json.dumps(schema)
    assert '"422"' not in text and "HTTPValidationError" not in text
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(paths["/ready"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]["properties"]) == {
        "ready", "queued"}
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert "security" not in schema  # no keys configured


def test_openapi_applies_bearer_security_when_keys_are_configured(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}, api_keys=("k1",)) as (url, _):
        schema = httpx.get(f"{url}/openapi.json", headers={"Authorization": "Bearer k1"}).json()
    assert schema["security"] == [{"bearer": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []
    assert "401" in schema["paths"]["/v1/videos"]["post"]["responses"]
    assert "401" not in schema["paths"]["/health"]["get"]["responses"]
