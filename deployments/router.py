"""The router: FastAPI ingress holding the four stage handles and streaming each turn.

Ray cannot pass a streaming generator from one deployment into another, so the router drives
every stream itself (`RayStages`) and forwards sentence by sentence. The API logic lives in
`services.server` (requests, conversation, auth); this file only maps HTTP and WebSocket onto
it. Every endpoint but /healthz, /readyz and the API docs asks `services.server.auth` who calls.
"""

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.metrics import ray_telemetry
from services.core.config import AppConfig, TurnSettings
from services.core.types import AudioChunk, AvatarLook, ChatMessage, SpeechChunk, Transcript
from services.persona.personas import Personas
from services.server.auth import Authenticator, Principal, bootstrap_key, ws_subprotocol
from services.server.conversation import Conversation
from services.server.requests import ApiError, parse_turn_request
from services.server.socket_session import SocketSession
from services.storage.database import open_storage

app = FastAPI(
    title="avatar-serve",
    description="Streaming API of the avatar cluster: speech or text in, the avatar's "
    "transcript, reply, audio and lip-synced frames out. See services/server/events.py for events.",
    version="0.1.0",
)


class RayStages:
    """The `Stages` protocol over Serve handles."""

    def __init__(self, asr, llm, tts, render) -> None:
        self.asr: DeploymentHandle = asr
        self.llm: DeploymentHandle = llm
        self.tts: DeploymentHandle = tts
        self.renderer: DeploymentHandle = render

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        return await self.asr.transcribe.remote(audio)

    async def sentences(self, messages: Sequence[ChatMessage], turn: TurnSettings):
        stream = self.llm.options(stream=True).sentences.remote(tuple(messages), turn)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            stream.cancel()  # the turn ended early: stop generating

    async def synthesize(self, text: str, voice: str | None, speed: float) -> SpeechChunk:
        return await self.tts.synthesize.remote(text, voice, speed)

    async def render(self, speech: SpeechChunk, look: AvatarLook | None):
        stream = self.renderer.options(stream=True).render.remote(speech, look)
        try:
            async for frame in stream:
                yield frame
        finally:
            stream.cancel()


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.reason}, status_code=exc.status)


async def _ndjson(first: dict[str, Any], events: AsyncIterator[dict[str, Any]]):
    yield json.dumps(first) + "\n"
    async for event in events:
        yield json.dumps(event) + "\n"


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
        self.conversation = Conversation(
            self.stages,
            config.turn,
            storage.sessions,
            fps=config.stages.render.options.fps,
            max_sessions=config.limits.max_sessions,
            telemetry=ray_telemetry(),
            personas=Personas(config.personas, storage.transcripts),
        )
        self._open_sockets = 0
        # A Ray gauge vanishes ~30 s after its last set(): refresh it while the replica lives.
        threading.Thread(target=self._report_sessions, daemon=True).start()

    def _report_sessions(self) -> None:
        while True:
            # A metrics hiccup must not kill the replica.
            with contextlib.suppress(Exception):
                count = self.conversation.sessions.count()
                self.conversation.telemetry.set("avatar_sessions_active", count)
            time.sleep(5)

    def _principal(self, request: Request) -> Principal:
        return self.auth.http(request.headers)

    @app.get("/healthz", summary="Liveness: the router answers")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: every stage answers its health call")
    async def readyz(self) -> JSONResponse:
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
        return JSONResponse({"ready": ready, "stages": stages}, status_code=200 if ready else 503)

    @app.post("/v1/sessions", summary="Open a conversation session")
    async def create_session(self, request: Request) -> JSONResponse:
        try:
            principal = self._principal(request)
            body = await request.body()
            data = json.loads(body) if body else {}
            if not isinstance(data, dict) or set(data) - {"persona_id"}:
                raise ApiError(422, 'body must be {} or {"persona_id": ...}')
            session = self.conversation.open_session(data.get("persona_id"), principal)
        except json.JSONDecodeError as exc:
            return _error(ApiError(400, f"malformed JSON: {exc}"))
        except ApiError as exc:
            return _error(exc)
        return JSONResponse(self.conversation.session_event(session), 201)

    @app.get("/v1/sessions/{session_id}", summary="A session and its history")
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

    @app.post(
        "/v1/turn",
        summary="One turn: JSON {text | audio_b64, session_id?, persona_id?} or an audio body; "
        "streams NDJSON events",
    )
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
            session = self.conversation.resolve(turn, principal)
        except ApiError as exc:
            return _error(exc)
        events = self.conversation.turn_events(session, turn)
        first = self.conversation.session_event(session)
        return StreamingResponse(_ndjson(first, events), media_type="application/x-ndjson")

    @app.websocket("/v1/session")
    async def session_socket(self, ws: WebSocket) -> None:
        await ws.accept(subprotocol=ws_subprotocol(ws.headers))
        socket = SocketSession(self.conversation, self.config.limits.max_audio_bytes, ws)
        try:  # before `start`: no message is read from a caller the keys do not admit
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
