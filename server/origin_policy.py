"""Which ``Host`` and ``Origin`` headers the server answers: the defence against DNS rebinding and
cross-site request forgery from pages open in the user's browser.

DNS rebinding makes a browser send the *attacker's* host name to the server (``Host: evil.example``),
so a Host check refuses names the operator did not list. IP literals and ``localhost`` cannot be
rebound by anyone, so they are always accepted; so is the name given to ``--host``. Cross-site
requests carry the foreign page's ``Origin``; a state-changing one is refused unless it comes from the
server's own origin or an origin listed with ``--cors-origin``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

#: Bind addresses that listen on every interface: not a name any client uses.
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})
#: Host names nobody but this machine can answer for.
ALWAYS_ALLOWED = frozenset({"localhost"})
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_name(host_header: str) -> str | None:
    """The lower-case name or address of a ``Host`` header without its port; None if malformed."""
    value = host_header.strip().lower()
    if value.startswith("["):
        address, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return address if _is_ip(address) else None
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    name = name.rstrip(".")
    return name if _is_ip(name) or _HOST_NAME.match(name) else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Accepts IP literals, ``localhost``, the bound host name and ``allowed`` names (``*``: any)."""

    def __init__(self, bind_host: str, allowed: Iterable[str] = ()) -> None:
        names = {name.strip().lower().rstrip(".") for name in allowed if name.strip()}
        self.any = "*" in names
        bound = host_name(bind_host) if bind_host not in WILDCARD_BINDS else None
        self.names = frozenset(names - {"*"} | ALWAYS_ALLOWED | ({bound} if bound else set()))

    def allows(self, host_header: str) -> bool:
        name = host_name(host_header)
        if name is None:
            return False
        return self.any or _is_ip(name) or name in self.names


def normalise_origin(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


def same_origin(origin: str, host_header: str, scheme: str) -> bool:
    """True when ``Origin`` names this very server, as the client addressed it (``Host``)."""
    try:
        parts = urlsplit(normalise_origin(origin))
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        here = urlsplit(f"{scheme}://{host_header.strip().lower()}")
        here_port = here.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return False
    return parts.scheme == scheme and parts.hostname is not None and (parts.hostname, origin_port) == (
        here.hostname, here_port)
