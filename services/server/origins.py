"""Which browser origins may call the API: its own, plus `http.cors_origins`.

HTTP is covered by CORS (the router's CORS middleware asks `OriginPolicy.listed`): a page of
another origin cannot read the answers. WebSockets are not covered by CORS, so a page anywhere
could open one to the API with the visitor's ambient credentials; the router therefore checks
the `Origin` header of every handshake (`OriginPolicy.check`) and refuses others (an `error`
event, then close code 4403).

Same origin means the Origin's host[:port] equals the request's `Host` (the scheme is not
compared: behind a TLS-terminating proxy the router cannot see it). A handshake without an
Origin header comes from a non-browser client (a CLI, a server, a load test), which CORS does
not concern either: allowed; such clients still need an API key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from services.server.requests import ApiError

_DEFAULT_PORTS = {"http": "80", "https": "443"}


class OriginPolicy:
    """The API's own origin plus `allowed` (exact `scheme://host[:port]` strings)."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(o.strip().lower().rstrip("/") for o in allowed)

    def listed(self, origin: str) -> bool:
        """Whether `origin` is on the allow-list (what CORS may grant)."""
        return origin.strip().lower().rstrip("/") in self.allowed

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a request from `origin` (None: no Origin header) to `host` may proceed."""
        if origin is None:
            return True
        if self.listed(origin):
            return True
        try:
            parts = urlsplit(origin.strip().lower())
            port = parts.port
        except ValueError:
            return False
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or not host:
            return False  # "null" (a sandboxed page, a file) or something malformed
        default = _DEFAULT_PORTS[parts.scheme]
        netloc = parts.netloc if port is not None else f"{parts.netloc}:{default}"
        target = host.strip().lower()
        if ":" not in target.rsplit("]", 1)[-1]:
            target = f"{target}:{default}"
        return netloc == target

    def check(self, headers: Mapping[str, str]) -> None:
        """403 unless the handshake's Origin (lower-case header names) is allowed."""
        origin = headers.get("origin")
        if not self.allows(origin, headers.get("host")):
            raise ApiError(403, f"origin {origin[:100]!r} may not open a session here")
