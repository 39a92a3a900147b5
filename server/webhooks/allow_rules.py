"""Where webhooks may go: the operator's ``--webhook-allow`` rules, and the SSRF checks behind them.

A webhook makes the server send a request to a URL a client chose, from inside the operator's network.
So nothing is called that the operator did not allow, and an allowed name cannot be pointed inside:

* **Rules.** ``[http://]HOST[:PORT]``. HOST is a name (``hooks.example.com``), every name under a
  domain (``*.example.com``, not the domain itself), an IP address (``10.0.0.7``, ``[fd00::7]``) or
  ``*`` (any host). PORT is a number or ``*``; without it, the default port of the URL's scheme.
* **https** unless the matching rule starts with ``http://`` (a rule written for a test receiver or a
  trusted internal network): a plain-http webhook can be read and forged on the way.
* **Addresses.** A name is resolved, and every address it resolves to must be public (not private,
  loopback, link-local, shared, reserved or multicast; an IPv4 address inside IPv6 counts as
  itself). A private address is reached only by a URL that is that address, under a rule that names
  it: ``http://127.0.0.1:*`` allows ``http://127.0.0.1:8123/hook``, while ``localhost``, a name,
  never reaches the loopback. The deliverer checks again at every attempt and connects to the address
  it checked (``server.webhooks.sender``), so a name re-pointed after the check (DNS rebinding) gains
  nothing.
* **No credentials** in the URL (``user:password@``): a token belongs in the path or query.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``resolve(host, port, timeout_s)``: the addresses of ``host`` (the deliverer's and the tests' DNS).
Resolver = Callable[[str, int, float], list[IPAddress]]
DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_PORT = -1


class WebhookRefused(ValueError):
    """A webhook URL this server will never call; ``code`` is the API error code."""

    def __init__(self, message: str, code: str = "invalid_webhook_url") -> None:
        super().__init__(message)
        self.code = code


class WebhookUnresolved(OSError):
    """The host did not resolve (now): refused at request time, retried at delivery."""


@dataclass(frozen=True)
class AllowRule:
    """One ``--webhook-allow`` pattern."""

    text: str
    #: Also plain http (the rule started with ``http://``); https always.
    http: bool
    kind: Literal["any", "domain", "name", "address"]
    #: The name, the domain (``*.example.com`` -> ``example.com``), or the address as text.
    host: str
    #: A port, ``ANY_PORT``, or None for the URL scheme's default port.
    port: int | None

    @property
    def address(self) -> IPAddress | None:
        return ipaddress.ip_address(self.host) if self.kind == "address" else None

    def matches(self, host: str, port: int, scheme: str) -> bool:
        """``host`` (lower case, ASCII, no trailing dot; an address in its compressed form) and ``port``."""
        if self.port is None and port != DEFAULT_PORTS[scheme] or self.port not in (None, ANY_PORT, port):
            return False
        return self.matches_host(host)

    def matches_host(self, host: str) -> bool:
        if self.kind == "any":
            return True
        if self.kind == "domain":
            return host.endswith("." + self.host)
        return host == self.host


def parse_rule(text: str) -> AllowRule:
    """``--webhook-allow TEXT`` as a rule; ValueError naming the flag and the form otherwise."""
    form = "the form is [http://]HOST[:PORT], HOST a name, *.DOMAIN, an IP address or *, PORT a number or *"
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "https", raw
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS or not rest or any(c in rest for c in "/?#@ "):
        raise ValueError(f"--webhook-allow {text!r}: {form}")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError(f"--webhook-allow {text!r}: {form}")
        port_text = port_text[1:]
    elif rest.count(":") > 1:
        raise ValueError(f"--webhook-allow {text!r}: write an IPv6 address in brackets, e.g. [fd00::7]:8443")
    else:
        host, _, port_text = rest.partition(":")
    port = _rule_port(text, port_text)
    host = host.lower().rstrip(".")
    address = _address(host)
    if address is not None:
        return AllowRule(raw, scheme == "http", "address", str(address), port)
    if host == "*":
        return AllowRule(raw, scheme == "http", "any", "", port)
    domain = host[2:] if host.startswith("*.") else host
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"--webhook-allow {text!r}: {host!r} is not a host name") from None
    labels = ascii_domain.split(".")
    if not all(label and all(c.isalnum() or c == "-" for c in label) for label in labels):
        raise ValueError(f"--webhook-allow {text!r}: {host!r} is not a host name ({form})")
    return AllowRule(raw, scheme == "http", "domain" if host.startswith("*.") else "name", ascii_domain, port)


def _rule_port(text: str, port_text: str) -> int | None:
    if not port_text:
        return None
    if port_text == "*":
        return ANY_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--webhook-allow {text!r}: the port must be 1..65535 or *; got {port_text!r}")
    return int(port_text)


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_public(address: IPAddress) -> bool:
    """An address on the public internet: what a webhook may reach without a rule naming it."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public(embedded)
        if address.teredo is not None:
            return all(is_public(part) for part in address.teredo)
    return address.is_global and not address.is_multicast


def resolve_host(host: str, port: int, timeout_s: float) -> list[IPAddress]:
    """The addresses of ``host``, waiting at most ``timeout_s`` (the resolver has no timeout of its own,
    so the lookup runs on a daemon thread that is abandoned if it hangs)."""
    found: list[IPAddress] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.extend(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        except (OSError, UnicodeError) as exc:
            failure.append(exc)

    thread = threading.Thread(target=lookup, name="nrg-webhook-dns", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise WebhookUnresolved(f"{host} did not resolve within {timeout_s:g} s")
    if failure or not found:
        raise WebhookUnresolved(f"{host} does not resolve ({failure[0] if failure else 'no addresses'})")
    return found


@dataclass(frozen=True)
class Destination:
    """A checked webhook URL and the addresses its host had when checked (the deliverer connects to the
    first)."""

    url: httpx.URL
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


class WebhookPolicy:
    """The rules and the checks of the module docstring; ``check`` is called at request time (a 400)
    and before every attempt."""

    def __init__(self, rules: tuple[str, ...] = (), timeout_s: float = 10.0,
                 resolve: Resolver = resolve_host) -> None:
        self.rules = tuple(parse_rule(rule) for rule in rules)
        self.timeout_s = timeout_s
        self._resolve = resolve

    @property
    def enabled(self) -> bool:
        return bool(self.rules)

    def describe(self) -> str:
        return ", ".join(rule.text for rule in self.rules)

    def check(self, url: str, dns_timeout_s: float | None = None) -> Destination:
        """``url`` checked; WebhookRefused (the message says which rule, or why none applies) or, while
        its host does not resolve (within ``dns_timeout_s``, default the policy's), WebhookUnresolved."""
        if not self.enabled:
            raise WebhookRefused("webhooks are off on this server (the operator enables them with --webhook-allow)",
                                 code="webhooks_disabled")
        parsed = _parse_url(url)
        scheme = parsed.scheme
        host = parsed.raw_host.decode("ascii").lower().rstrip(".")
        address = _address(host)
        if address is not None:
            host = str(address)
        port = parsed.port or DEFAULT_PORTS[scheme]
        matching = [rule for rule in self.rules if rule.matches(host, port, scheme)]
        if scheme == "http" and not any(rule.http for rule in matching):
            https_only = [rule for rule in self.rules if rule.matches_host(host) and not rule.http]
            if https_only:
                raise WebhookRefused(f"https is required: the rule {https_only[0].text} allows https only (a rule "
                                     "that starts with http:// allows http)")
        if not any(rule.http or scheme == "https" for rule in matching):
            raise WebhookRefused(f"{_authority(host, port)} is not an allowed destination; this server sends "
                                 f"webhooks only to {self.describe()} (--webhook-allow)")
        if address is not None:
            if not is_public(address) and not any(rule.kind == "address" for rule in matching):
                raise WebhookRefused(f"{address} is a private, loopback or link-local address; webhooks go to public "
                                     "addresses only, unless a --webhook-allow rule names the address itself "
                                     f"(rules: {self.describe()})")
            return Destination(parsed, host, port, (address,))
        addresses = tuple(self._resolve(host, port, dns_timeout_s or self.timeout_s))
        for found in addresses:
            if not is_public(found):
                raise WebhookRefused(f"{host} resolves to {found}, a private, loopback or link-local address; a "
                                     "name must resolve to public addresses only (an internal receiver is "
                                     "reached by a URL with its address, under a rule that names it)")
        return Destination(parsed, host, port, addresses)


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise WebhookRefused(f"not a URL ({exc})") from None
    if parsed.scheme not in DEFAULT_PORTS or not parsed.raw_host:
        raise WebhookRefused("must be an absolute https:// URL (http:// only where a rule allows it)")
    if parsed.userinfo:
        raise WebhookRefused("credentials in the URL (user:password@) are not sent; put a token in the path or query")
    return parsed


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
