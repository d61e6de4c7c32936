"""The router: FastAPI ingress holding the four stage handles and streaming each turn.

Ray cannot pass a streaming generator from one deployment into another, so the router drives
every stream itself (`RayStages`) and forwards sentence by sentence. The API logic lives in
`services.server` (requests, conversation, auth); this file only maps HTTP and WebSocket onto
it. Every endpoint but /healthz, /readyz and the API docs asks `services.server.auth` who calls;
turns pass `limits` (per key, 429) and `admission` (capacity, 503) before they start.
"""

import asyncio
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Security, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from ray import serve

from deployments.metrics import ray_telemetry
from deployments.ray_stages import RayStages
from deployments.web import add_client
from services.core.config import AppConfig
from services.persona.personas import Personas
from services.persona.upkeep import AuditUpkeep
from services.server.admission import Admission, capacity
from services.server.auth import Authenticator, Principal, bootstrap_key, ws_subprotocol
from services.server.conversation import Conversation
from services.server.limits import KeyLimiter, error_headers
from services.server.origins import OriginPolicy
from services.server.requests import (
    MAX_TEXT_CHARS,
    ApiError,
    check_id,
    parse_turn_request,
)
from services.server.socket_session import SocketSession
from services.storage.database import open_storage

app = FastAPI(
    title="avatar-serve",
    description="Streaming API of the avatar cluster: speech or text in, the avatar's "
    "transcript, reply, audio and lip-synced frames out. See services/server/events.py for events.",
    version="v1",  # the API's version (as in its paths), not the software's: no fingerprint
)


class _ConfiguredCors(CORSMiddleware):
    """CORS for `http.cors_origins`: Serve copies `app` at import, before any config is known,
    so the replica's `Router` sets `policy` here."""

    policy = OriginPolicy()

    def is_allowed_origin(self, origin: str) -> bool:
        return self.policy.listed(origin)


app.add_middleware(_ConfiguredCors, allow_methods=["GET", "POST"], max_age=600,
                   allow_headers=["authorization", "content-type"],
                   expose_headers=["retry-after"])  # fmt: skip
add_client(app)  # GET / (the browser client), /web/*, /v1/personas


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=error_headers(exc))


# The OpenAPI of routes that read the raw request (FastAPI cannot infer it); schemathesis
# fuzzes the app against it (tests/serve/test_fuzz_api.py). The scheme only documents the key:
# `services.server.auth` checks it (auto_error=False: this never answers by itself).
_KEYED = [Security(HTTPBearer(auto_error=False, description="Authorization: Bearer avk_..."))]
_ERROR_TEXT = {
    400: "Malformed JSON or empty audio",
    401: "No API key, or a malformed, unknown or revoked one",
    403: "The key lacks the scope (persona, history)",
    404: "Unknown persona or session (or another key's session)",
    409: "The session talks to another persona",
    410: "The persona's consent was revoked: it is no longer served",
    413: "Audio or text over the limit",
    415: "Unsupported content type, or audio that cannot be decoded",
    422: "A body that is not the documented shape",
    429: "A per-key limit was reached (see Retry-After)",
    503: "Overloaded or too many sessions; retry later",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    body = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    return {status: _json(body, _ERROR_TEXT[status]) for status in statuses}


_NULLABLE_STR = {"type": ["string", "null"]}
# Ids are at most 255 UTF-8 bytes (`check_id`): 63 characters always fit.
_ID = {"type": ["string", "null"], "maxLength": 63}
_SESSION = {
    "type": "object",
    "required": ["type", "session_id", "persona_id"],
    "properties": {"type": {"const": "session"}, "session_id": {"type": "string"},
                   "persona_id": _NULLABLE_STR, "fps": {"type": "number"}},
}  # fmt: skip
_SESSION_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"persona_id": _ID},
}
_HISTORY = {
    "type": "object",
    "required": ["session_id", "persona_id", "history"],
    "properties": {"session_id": {"type": "string"}, "persona_id": _NULLABLE_STR,
                   "history": {"type": "array", "items": {"type": "object",
                               "required": ["role", "content"]}}},
}  # fmt: skip
_EXPORT = {"type": "object", "required": ["session_id", "exported_at", "session", "turns"],
           "properties": {"turns": {"type": "array", "items": {"type": "object"}}}}  # fmt: skip
_READY = {"type": "object", "required": ["ready", "stages"],
          "properties": {"ready": {"type": "boolean"}, "stages": {"type": "object"}}}  # fmt: skip
_B64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$"
_TURN_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string", "pattern": "\\S", "maxLength": MAX_TEXT_CHARS},
        "audio_b64": {"type": "string", "pattern": _B64, "description": "An audio file"},
        "session_id": _ID,
        "persona_id": _ID,
    },
    "oneOf": [{"required": ["text"]}, {"required": ["audio_b64"]}],
}
_TURN_QUERY = [
    {"name": name, "in": "query", "required": False, "schema": {"type": "string", "maxLength": 63},
     "description": f"The {name} of an audio-body turn"}
    for name in ("session_id", "persona_id")
]  # fmt: skip


async def _ndjson(first: dict[str, Any], events: AsyncIterator[dict[str, Any]]):
    yield json.dumps(first) + "\n"
    async for event in events:
        yield json.dumps(event) + "\n"


def _show_progress(logger_name: str) -> None:
    """Send `logger_name`'s INFO records to stderr (once per process)."""
    progress = logging.getLogger(logger_name)
    if not progress.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)


@serve.ingress(app)
class Router:
    """Ingress deployment; built by `deployments.app.build_app` with options from config."""

    def __init__(self, asr, llm, tts, render, config: AppConfig) -> None:
        self.config = config
        mode = config.auth_mode()  # ValueError (the deploy fails) for open on the network
        storage = open_storage(config.storage)
        if mode == "keys":
            bootstrap_key(config.auth, storage.keys)
        else:
            logging.getLogger(__name__).warning(
                "authentication is OFF (auth.mode %s, http.host %s): no API key is checked",
                config.auth.mode,
                config.http.host,
            )
        self.auth = Authenticator(mode, storage.keys, cache_s=config.auth.key_cache_s)
        self.stages = RayStages(asr, llm, tts, render)
        self.origins = _ConfiguredCors.policy = OriginPolicy(config.http.cors_origins)
        telemetry = ray_telemetry()
        self.capacity = capacity(config)
        logging.getLogger(__name__).info("admission: %s turns at once", self.capacity)
        self.conversation = Conversation(
            self.stages,
            config.turn,
            storage.sessions,
            fps=config.stages.render.options.fps,
            max_sessions=config.limits.max_sessions,
            telemetry=telemetry,
            personas=Personas(config.personas, storage.transcripts),
            limiter=KeyLimiter(config.limits, storage.sessions, telemetry),
            admission=Admission(self.capacity.turns, telemetry=telemetry),
        )
        # Before this replica reports ready: a session must not wait for a persona's load. A
        # first load takes ~25 s (mpnet): its progress goes to stderr, which Ray forwards to the
        # `avatar serve` console (a replica's INFO records otherwise go nowhere).
        _show_progress("services.persona")
        self.conversation.personas.warm()
        self._open_sockets = 0
        # Closes turns a dead replica left "started" (now, and every 5 s) and purges by retention.
        self.upkeep = AuditUpkeep(storage, config.storage, self.conversation.personas).started()
        # A Ray gauge vanishes ~30 s after its last set(): refresh it while the replica lives.
        threading.Thread(target=self._report_sessions, daemon=True).start()

    def _report_sessions(self) -> None:
        while True:
            # A metrics hiccup must not kill the replica.
            with contextlib.suppress(Exception):
                count = self.conversation.sessions.count()
                self.conversation.telemetry.set("avatar_sessions_active", count)
            self.upkeep.tick()  # logs its own errors
            time.sleep(5)

    def _principal(self, request: Request) -> Principal:
        return self.auth.http(request.headers)

    @app.get("/healthz", summary="Liveness: the router answers")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: every stage answers its health call",
        responses={200: _json(_READY, "Every stage is ready"),
                   503: _json(_READY, "A stage is not ready")},
    )  # fmt: skip
    async def readyz(self, request: Request) -> JSONResponse:
        """Ready or not per stage; what stages report (backends, errors) only to admin keys."""
        names = ("asr", "llm", "tts", "render")
        handles = (self.stages.asr, self.stages.llm, self.stages.tts, self.stages.renderer)
        results = await asyncio.gather(
            *(asyncio.wait_for(h.health.remote(), timeout=5) for h in handles),
            return_exceptions=True,
        )
        stages = {
            name: r if isinstance(r, dict) else {"ok": False, "error": repr(r)}
            for name, r in zip(names, results, strict=True)
        }
        ready = all(s.get("ok") for s in stages.values())
        try:
            principal = self.auth.http(request.headers)
            detail = principal.admin and not principal.anonymous
        except ApiError:
            detail = False  # a probe with a bad key still learns whether the app is ready
        if not detail:
            stages = {name: {"ok": bool(s.get("ok"))} for name, s in stages.items()}
        return JSONResponse({"ready": ready, "stages": stages}, status_code=200 if ready else 503)

    @app.post(
        "/v1/sessions",
        summary="Open a conversation session",
        status_code=201,
        dependencies=_KEYED,
        responses={201: _json(_SESSION, "The new session"),
                   **_errors(400, 401, 403, 404, 410, 422, 429, 503)},
        openapi_extra={"requestBody": {"required": False, "content": {
            "application/json": {"schema": _SESSION_BODY}}}},
    )  # fmt: skip
    async def create_session(self, request: Request) -> JSONResponse:
        try:
            principal = self._principal(request)
            body = await request.body()
            data = json.loads(body) if body else {}
            if not isinstance(data, dict) or set(data) - {"persona_id"}:
                raise ApiError(422, 'body must be {} or {"persona_id": ...}')
            persona_id = check_id(data.get("persona_id"), "persona_id")
            session = self.conversation.open_session(persona_id, principal)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            return _error(ApiError(400, f"malformed JSON: {exc}"))
        except ApiError as exc:
            return _error(exc)
        return JSONResponse(self.conversation.session_event(session), 201)

    @app.get(
        "/v1/sessions/{session_id}",
        summary="A session and its history",
        dependencies=_KEYED,
        responses={200: _json(_HISTORY, "The session and its turns"), **_errors(401, 403, 404)},
    )
    async def get_session(self, session_id: str, request: Request) -> JSONResponse:
        try:
            principal = self._principal(request)
            principal.check_history()
            session = self.conversation.session(session_id, principal)
        except ApiError as exc:
            return _error(exc)
        history = self.conversation.sessions.history(session_id)
        return JSONResponse(
            {
                "session_id": session.id,
                "persona_id": session.persona_id,
                "history": [{"role": m.role, "content": m.content} for m in history],
            }
        )

    @app.get(
        "/v1/sessions/{session_id}/export",
        summary="A session and all its turns, for a data-subject request (admin keys)",
        dependencies=_KEYED,
        responses={200: _json(_EXPORT, "Session and turns"), **_errors(401, 403, 404)},
    )
    async def export_session(self, session_id: str, request: Request) -> JSONResponse:
        try:
            return JSONResponse(self.conversation.export(session_id, self._principal(request)))
        except ApiError as exc:
            return _error(exc)

    @app.post(
        "/v1/turn",
        summary="One turn: JSON {text | audio_b64, session_id?, persona_id?} or an audio body; "
        "streams NDJSON events",
        dependencies=_KEYED,
        response_class=StreamingResponse,
        responses={
            200: {"description": "The turn's events, one JSON object a line (see events.py)",
                  "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
            **_errors(400, 401, 403, 404, 409, 410, 413, 415, 422, 429, 503),
        },
        openapi_extra={
            "parameters": _TURN_QUERY,
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _TURN_BODY},
                "audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
        },
    )  # fmt: skip
    async def turn(self, request: Request):
        try:
            principal = self._principal(request)
            body = await request.body()
            turn = parse_turn_request(
                request.headers.get("content-type", ""),
                body,
                dict(request.query_params),
                self.config.limits.max_audio_bytes,
            )
            # 429 / 503 now, before a session is made or anything streams.
            ticket = self.conversation.admit(turn, principal.key_id, principal.tenant)
            try:
                session = self.conversation.resolve(turn, principal)
            except ApiError:
                ticket.release()
                raise
        except ApiError as exc:
            return _error(exc)
        events = self.conversation.turn_events(session, turn, ticket=ticket)
        first = self.conversation.session_event(session)
        return StreamingResponse(_ndjson(first, events), media_type="application/x-ndjson")

    @app.websocket("/v1/session")
    async def session_socket(self, ws: WebSocket) -> None:
        await ws.accept(subprotocol=ws_subprotocol(ws.headers))
        socket = SocketSession(
            self.conversation, self.config.limits.max_audio_bytes, ws, live=self.config.live
        )
        try:  # before `start`: no message is read from a caller the keys do not admit
            self.origins.check(ws.headers)  # CORS does not cover WebSockets
            principal, token = self.auth.websocket(ws.headers)
        except ApiError as exc:
            await socket.refuse(exc)
            return
        socket.principal = principal
        socket.recheck = lambda: self.auth.recheck(principal, token)
        if self._open_sockets >= self.config.limits.max_sockets_per_replica:
            self.conversation.telemetry.inc("avatar_requests_rejected", reason="sockets_full")
            await ws.send_json({"type": "error", "status": 503, "reason": "too many open "
                                "sessions on this replica; retry shortly"})  # fmt: skip
            await ws.close(code=1013)  # "try again later"
            return
        self._open_sockets += 1
        try:
            with contextlib.suppress(WebSocketDisconnect):
                await socket.run()
        finally:
            self._open_sockets -= 1
