"""One webhook POST, to the address the policy checked and to nothing else.

The connection goes to the checked address, not to whatever the name resolves to by then (DNS
rebinding), with the name in ``Host`` and in TLS (SNI and the certificate check), so the receiver
and its certificate see an ordinary request. Redirects are not followed, proxies in the environment
are ignored (they would connect to the name themselves), no connection is reused (one verified for
one name must not carry another's), and the answer's body is never read.
"""

from __future__ import annotations

import httpx

from server.webhooks.allow_rules import Destination

USER_AGENT = "nrg-serve-webhooks/1"


class WebhookSender:
    def __init__(self, timeout_s: float) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False,
                                    limits=httpx.Limits(max_keepalive_connections=0))

    def post(self, destination: Destination, body: bytes, headers: dict[str, str]) -> int:
        """The receiver's status code; ``httpx.HTTPError`` when there is none (refused, timed out, ...)."""
        url = destination.url
        pinned = url.copy_with(host=str(destination.addresses[0]))
        request = self._client.build_request(
            "POST", pinned, content=body,
            headers={**headers, "Host": url.netloc.decode("ascii"), "Content-Type": "application/json",
                     "User-Agent": USER_AGENT},
            extensions={"sni_hostname": destination.host})
        response = self._client.send(request, stream=True)
        response.close()
        return response.status_code

    def close(self) -> None:
        self._client.close()
