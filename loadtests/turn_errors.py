"""Why a turn failed, in one of three causes with a stable message (locust groups by message).

Overload is a 503 (`TurnRejected`: Serve's back-pressure, fast by design), a turn without its
`done` event in time is a `TurnTimeout`, anything else is a `TurnFailed`; the report counts the
three apart.
"""

from __future__ import annotations

import requests
import websocket

from loadtests.locust_settings import TURN_TIMEOUT_S


class TurnRejected(Exception):
    """Overload: HTTP 503 or a 503 `error` event (Serve back-pressure), never a timeout."""

    status = 503


class TurnTimeout(Exception):
    """No `done` within the turn timeout (or the socket went silent that long)."""

    status = None


class TurnFailed(Exception):
    """Any other failure: a 4xx/5xx answer or event, a dropped connection, a cut stream."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def failure(exc: BaseException, where: str) -> Exception:
    """One of the three causes, with a stable message (locust groups failures by message)."""
    if isinstance(exc, TurnRejected | TurnTimeout | TurnFailed):
        return exc
    if isinstance(exc, websocket.WebSocketBadStatusException):
        status = int(getattr(exc, "status_code", 0) or 0)
        if status == 503:
            return TurnRejected(f"503 rejected ({where})")
        return TurnFailed(f"error {status} ({where})", status)
    timed_out = isinstance(exc, websocket.WebSocketTimeoutException | TimeoutError)
    # requests reports a read timeout mid-stream as a ConnectionError wrapping urllib3's.
    timed_out |= isinstance(exc, requests.Timeout) or (
        isinstance(exc, requests.RequestException) and "timed out" in str(exc).lower()
    )
    if timed_out:
        return TurnTimeout(f"timeout after {TURN_TIMEOUT_S:g} s ({where})")
    return TurnFailed(f"connection: {type(exc).__name__} ({where})")


def error_event(status: int, where: str) -> Exception:
    if status == 503:
        return TurnRejected(f"503 rejected ({where})")
    return TurnFailed(f"error {status} ({where})", status)


# What can go wrong on the wire (ValueError: an event that is not JSON).
WIRE_ERRORS = (OSError, websocket.WebSocketException, requests.RequestException, ValueError)
