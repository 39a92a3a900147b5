"""Webhooks end to end: a real server POSTs each job's outcome to a receiver on the loopback, signed,
once per job, retried until delivered; requests whose webhook_url the rules refuse get a 400."""

from __future__ import annotations

import ipaddress
import re

import httpx
import pytest

from guidance.families.wan import WanFamily
from nrg_client import verify_webhook
from server.cli import build_parser
from server.cli.serve import server_config
from server.hosted_model import HostedModel
from server.metrics import Metrics
from server.webhooks.deliverer import WebhookDeliverer
from server.webhooks.allow_rules import Destination
from server.webhooks.sender import WebhookSender
from server.webhooks.settings import WebhookSettings
from tests.server.conftest import full_batches_only, running_server, until
from tests.server.job_specs import spec
from tests.server.postgres import pg_server, pg_url  # noqa: F401 - fixtures
from tests.server.webhook_receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"prompt": "a red circle", "num_inference_steps": 2, "seed": 1}
#: The receiver's rule names the loopback address; the others allow hosts this test never resolves
#: but localhost, which resolves to a loopback address that no rule names.
RULES = ("http://127.0.0.1:*", "*.example.com", "localhost:*")


class PoisonWan(WanFamily):
    """A prompt with 'poison' fails the job."""

    def encode_prompts(self, prompts, negative_prompts):
        if any("poison" in p for p in prompts):
            raise RuntimeError("poisoned prompt")
        return super().encode_prompts(prompts, negative_prompts)


@pytest.fixture(scope="module")
def receiver():
    with Receiver(lambda request, nth: {"/flaky": 500 if nth <= 2 else 204, "/gone": 410}.get(request.path, 204)) as r:
        yield r


@pytest.fixture(scope="module")
def server(hosted_wan, tmp_path_factory):
    model = HostedModel("tiny-wan", PoisonWan(hosted_wan.family.pipe), None, None, hosted_wan.default_shape, 2)
    settings = WebhookSettings(allow=RULES, secret=SECRET, backoff_s=(0.0, 0.0, 0.0), poll_s=0.02)
    with running_server(tmp_path_factory.mktemp("webhooks"), {"tiny-wan": model}, max_batch=2, batch_wait_ms=0,
                        webhooks=settings) as (url, app):
        yield url, app


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


def settled(client: httpx.Client, video_id: str) -> dict:
    """The job once its webhook is delivered or failed (no attempt comes after that)."""
    def done():
        job = client.get(f"/v1/videos/{video_id}").json()
        return job if (job["webhook_status"] or {}).get("status") in ("delivered", "failed") else None
    return until(done, f"{video_id}'s webhook settled", poll_s=0.02)


def deliveries(client: httpx.Client, metric: str = "nrg_webhook_deliveries_total") -> dict[str, float]:
    text = client.get("/metrics").text
    return {outcome: float(value) for outcome, value in re.findall(rf'{metric}{{outcome="(\w+)"}} (\S+)', text)}


def test_each_outcome_is_delivered_once_signed(client, server, receiver):
    app = server[1]
    completed = client.post("/v1/videos", json={**FAST, "webhook_url": f"{receiver.url}/completed?token=t"}).json()
    assert completed["webhook_status"] == {"status": "waiting", "attempts": 0, "last_error": None}
    failed = client.post("/v1/videos", json={**FAST, "prompt": "poison", "webhook_url": f"{receiver.url}/failed"})
    with full_batches_only(app):  # alone in its key, it stays queued until the test cancels it
        cancelled = client.post("/v1/videos", json={**FAST, "num_frames": 5,
                                                    "webhook_url": f"{receiver.url}/cancelled"}).json()
        assert client.delete(f"/v1/videos/{cancelled['id']}").json()["status"] == "cancelled"
    for job, path in ((completed, "/completed?token=t"), (failed.json(), "/failed"), (cancelled, "/cancelled")):
        final = settled(client, job["id"])
        assert final["webhook_status"] == {"status": "delivered", "attempts": 1, "last_error": None}
        (delivery,) = receiver.to(path)
        event = verify_webhook(delivery.body, delivery.headers, SECRET)
        assert event["type"] == f"video.{final['status']}" and event["data"]["id"] == job["id"]
        assert event["data"]["status"] == final["status"] and event["timestamp"].endswith("Z")
        assert delivery.headers["webhook-id"] == f"msg_{job['id']}_{final['status']}"
        assert delivery.headers["content-type"] == "application/json"
    assert [settled(client, j["id"])["status"] for j in (completed, failed.json(), cancelled)] == \
        ["completed", "failed", "cancelled"]
    # A job without a webhook_url has no webhook.
    plain = client.post("/v1/videos", json=FAST).json()
    assert plain["webhook_status"] is None


def test_a_delivery_that_fails_twice_is_retried_and_delivered_once(client, receiver):
    before = deliveries(client)
    job = client.post("/v1/videos", json={**FAST, "webhook_url": f"{receiver.url}/flaky"}).json()
    final = settled(client, job["id"])
    assert final["webhook_status"] == {"status": "delivered", "attempts": 3, "last_error": None}
    attempts = receiver.to("/flaky")
    assert len(attempts) == 3 and len({a.headers["webhook-id"] for a in attempts}) == 1  # one event, three tries
    assert all(verify_webhook(a.body, a.headers, SECRET)["data"]["id"] == job["id"] for a in attempts)
    after = deliveries(client)
    assert after["retried"] - before["retried"] == 2 and after["delivered"] - before["delivered"] == 1


def test_410_gone_stops_at_once(client, receiver):
    job = client.post("/v1/videos", json={**FAST, "webhook_url": f"{receiver.url}/gone"}).json()
    status = settled(client, job["id"])["webhook_status"]
    assert status["status"] == "failed" and status["attempts"] == 1 and "410" in status["last_error"]
    assert len(receiver.to("/gone")) == 1


@pytest.mark.parametrize("url, says", [
    ("https://evil.example.net/hook", "webhook_url: evil.example.net:443 is not an allowed destination; this server "
                                      "sends webhooks only to http://127.0.0.1:*, *.example.com, localhost:*"),
    ("https://localhost:8443/hook", "webhook_url: localhost resolves to"),  # a loopback address no rule names
    ("https://10.1.2.3/hook", "10.1.2.3:443 is not an allowed destination"),
    ("http://hooks.example.com/hook", "webhook_url: https is required: the rule *.example.com allows https only"),
    ("ftp://hooks.example.com/hook", "must be an absolute https:// URL"),
])
def test_refused_urls_are_400s_naming_webhook_url(client, url, says):
    response = client.post("/v1/videos", json={**FAST, "webhook_url": url})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "webhook_url" and error["code"] == "invalid_webhook_url" and says in error["message"]


def test_without_rules_any_webhook_url_is_a_400(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}) as (url, _):
        response = httpx.post(f"{url}/v1/videos", json={**FAST, "webhook_url": "https://hooks.example.com/"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "webhook_url" and error["code"] == "webhooks_disabled"
    assert "webhooks are off on this server" in error["message"]


def test_the_sender_connects_to_the_checked_address_with_the_name_in_host():
    """The name is never resolved again for the connection: what the policy checked is what is called."""
    with Receiver() as receiver:
        port = int(receiver.url.rsplit(":", 1)[1])
        url = httpx.URL(f"http://receiver.test:{port}/pinned")  # no DNS knows receiver.test
        sender = WebhookSender(timeout_s=30)
        try:
            status = sender.post(Destination(url, "receiver.test", port, (ipaddress.ip_address("127.0.0.1"),)),
                                 b"{}", {"webhook-id": "msg_1"})
        finally:
            sender.close()
        (request,) = receiver.to("/pinned")
    assert status == 204 and request.headers["host"] == f"receiver.test:{port}"


def test_flags_and_their_environment_variables(monkeypatch):
    monkeypatch.setenv("NRG_WEBHOOK_ALLOW", "hooks.example.com, *.example.org:8443")
    monkeypatch.setenv("NRG_WEBHOOK_SECRET", SECRET)
    settings = server_config(build_parser().parse_args(["serve"])).webhooks
    assert settings.allow == ("hooks.example.com", "*.example.org:8443") and settings.secret == SECRET
    assert settings.enabled and settings.attempts == 6
    flags = ["serve", "--webhook-allow", "http://127.0.0.1:*", "--webhook-backoff", "1,2.5", "--webhook-timeout", "3"]
    settings = server_config(build_parser().parse_args(flags)).webhooks
    assert (settings.allow, settings.backoff_s, settings.attempts, settings.timeout_s) == \
        (("http://127.0.0.1:*",), (1.0, 2.5), 3, 3.0)
    with pytest.raises(ValueError, match="--webhook-allow 'hooks.example.com/x'"):
        server_config(build_parser().parse_args(["serve", "--webhook-allow", "hooks.example.com/x"]))
    monkeypatch.delenv("NRG_WEBHOOK_SECRET")
    with pytest.raises(ValueError, match="--webhook-allow needs --webhook-secret"):
        server_config(build_parser().parse_args(["serve"]))
    monkeypatch.delenv("NRG_WEBHOOK_ALLOW")
    assert not server_config(build_parser().parse_args(["serve"])).webhooks.enabled


def test_two_deliverers_on_one_postgres_store_deliver_each_webhook_once(pg_url, tmp_path):  # noqa: F811
    """A scaled-out deployment: every process runs a deliverer, and each webhook goes out once."""
    from server.store.postgres import PostgresJobStore

    stores = [PostgresJobStore(pg_url, tmp_path / "data") for _ in range(2)]
    settings = WebhookSettings(allow=RULES, secret=SECRET, poll_s=0.01)
    with Receiver() as receiver:
        ids = []
        for i in range(12):
            job = stores[0].create(spec(webhook_url=f"{receiver.url}/job{i}"))
            stores[0].finish(job.id, "completed")
            ids.append(job.id)
        deliverers = [WebhookDeliverer(settings, store, Metrics(f"w{i}"), f"w{i}", render=lambda job: {"id": job.id})
                      for i, store in enumerate(stores)]
        for deliverer in deliverers:
            deliverer.start()
        try:
            until(lambda: all(stores[1].get(i).webhook.status == "delivered" for i in ids), "every webhook delivered")
        finally:
            for deliverer in deliverers:
                deliverer.stop()
        received = [verify_webhook(r.body, r.headers, SECRET)["data"]["id"] for r in receiver.received]
    assert sorted(received) == sorted(ids)  # each once, by one deliverer or the other
    assert {stores[0].get(i).webhook.attempts for i in ids} == {1}
    for store in stores:
        store.close()
