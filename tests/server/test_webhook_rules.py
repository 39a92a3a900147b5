"""Where a webhook may go (``--webhook-allow``) and the SSRF checks, with a fake DNS: no network."""

from __future__ import annotations

import ipaddress

import pytest

from server.webhooks.allow_rules import WebhookPolicy, WebhookRefused, WebhookUnresolved, is_public, parse_rule
from server.webhooks.settings import WebhookSettings
from server.webhooks.signing import secret_key, signature

PUBLIC, PRIVATE = "93.184.215.14", "10.0.0.5"
DNS = {"hooks.example.com": [PUBLIC], "a.b.example.com": [PUBLIC], "example.com": [PUBLIC],
       "inside.example.com": [PRIVATE], "split.example.com": [PUBLIC, "127.0.0.1"], "localhost": ["127.0.0.1"],
       "mapped.example.com": ["::ffff:10.0.0.5"], "internal.corp": [PRIVATE]}


def fake_dns(host: str, port: int, timeout_s: float):
    if host not in DNS:
        raise WebhookUnresolved(f"{host} does not resolve")
    return [ipaddress.ip_address(a) for a in DNS[host]]


def policy(*rules: str) -> WebhookPolicy:
    return WebhookPolicy(rules, resolve=fake_dns)


def refused(check, url: str) -> str:
    with pytest.raises(WebhookRefused) as caught:
        check(url)
    return str(caught.value)


@pytest.mark.parametrize("rules, url", [
    (("hooks.example.com",), "https://hooks.example.com/nrg?token=1"),
    (("hooks.example.com",), "https://HOOKS.example.com./x"),
    (("*.example.com",), "https://a.b.example.com/x"),
    (("hooks.example.com:8443",), "https://hooks.example.com:8443/"),
    (("hooks.example.com:*",), "https://hooks.example.com:9000/"),
    (("*",), "https://hooks.example.com/"),
    (("http://hooks.example.com",), "http://hooks.example.com/"),  # an http rule: http, on port 80
    (("http://hooks.example.com",), "https://hooks.example.com/"),  # and https
    (("http://127.0.0.1:*",), "http://127.0.0.1:8123/hook"),  # the rule names the loopback address
    (("http://[::1]:*",), "http://[::1]:8123/hook"),
    (("10.0.0.5",), "https://10.0.0.5/"),  # a private address, named by a rule
])
def test_allowed(rules, url):
    assert policy(*rules).check(url).url == url


@pytest.mark.parametrize("rules, url, says", [
    (("hooks.example.com",), "https://evil.example.net/", "evil.example.net:443 is not an allowed destination; "
                                                          "this server sends webhooks only to hooks.example.com"),
    (("*.example.com",), "https://example.com/", "example.com:443 is not an allowed"),  # the domain itself is not
    (("*.example.com",), "https://notexample.com/", "notexample.com:443 is not an allowed"),
    (("hooks.example.com",), "https://hooks.example.com:8443/", "hooks.example.com:8443 is not an allowed"),
    (("hooks.example.com",), "http://hooks.example.com:443/", "https is required: the rule hooks.example.com "
                                                              "allows https only"),
    (("hooks.example.com",), "http://hooks.example.com/", "https is required: the rule hooks.example.com"),
    (("http://hooks.example.com:8080",), "http://hooks.example.com/", "hooks.example.com:80 is not an allowed"),
    (("*.example.com",), "https://inside.example.com/", "inside.example.com resolves to 10.0.0.5, a private"),
    (("*.example.com",), "https://split.example.com/", "resolves to 127.0.0.1"),  # every address must pass
    (("*.example.com",), "https://mapped.example.com/", "mapped.example.com resolves to ::ffff:"),
    (("http://localhost:*",), "http://localhost:8123/", "localhost resolves to 127.0.0.1, a private, loopback"),
    (("*",), "https://169.254.169.254/latest/meta-data", "169.254.169.254 is a private, loopback or link-local"),
    (("*",), "https://[fe80::1]/", "fe80::1 is a private"),
    # A name never reaches a private address, even one a rule names: only a URL with the address does.
    (("internal.corp", "10.0.0.5"), "https://internal.corp/", "internal.corp resolves to 10.0.0.5, a private"),
    (("*",), "https://user:pw@hooks.example.com/", "credentials in the URL"),
    (("*",), "ftp://hooks.example.com/", "must be an absolute https:// URL"),
    (("*",), "/relative", "must be an absolute https:// URL"),
])
def test_refused(rules, url, says):
    assert says in refused(policy(*rules).check, url)


def test_without_rules_webhooks_are_off():
    with pytest.raises(WebhookRefused, match="webhooks are off on this server") as caught:
        WebhookPolicy().check("https://hooks.example.com/")
    assert caught.value.code == "webhooks_disabled"


def test_a_host_that_does_not_resolve_is_unresolved_not_refused():
    with pytest.raises(WebhookUnresolved):
        policy("*.example.com").check("https://nowhere.example.com/")


@pytest.mark.parametrize("text", ["", "https://", "hooks.example.com/path", "hooks.example.com:0",
                                  "hooks.example.com:x", "ftp://hooks.example.com", "::1", "*.*.example.com",
                                  "user@hooks.example.com", "bad_name.example.com"])
def test_a_bad_rule_names_the_flag(text):
    with pytest.raises(ValueError, match="--webhook-allow"):
        parse_rule(text)


@pytest.mark.parametrize("address, public", [
    ("93.184.215.14", True), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("127.0.0.1", False), ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("2606:2800:220:1::1", True), ("::1", False), ("fc00::1", False), ("fe80::1", False),
    ("::ffff:127.0.0.1", False), ("2002:7f00:1::", False), ("2002:5db8:d70e::", True),
])
def test_public_addresses(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


def test_settings_need_a_secret_and_sane_numbers():
    with pytest.raises(ValueError, match="--webhook-allow needs --webhook-secret"):
        WebhookSettings(allow=("hooks.example.com",))
    with pytest.raises(ValueError, match="--webhook-backoff"):
        WebhookSettings(backoff_s=(1.0, -1.0))
    assert WebhookSettings().attempts == 6 and sum(WebhookSettings().backoff_s) < 3700


def test_secrets_in_both_forms_and_the_standard_webhooks_signature():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        secret_key("short")
    with pytest.raises(ValueError, match="base64"):
        secret_key("whsec_not base64!")
    assert secret_key("a raw secret of some length") == b"a raw secret of some length"
    # The example of the Standard Webhooks specification's reference libraries.
    key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    assert signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
