"""The live WebSocket protocol on fake backends (no Ray): binary media paced to playback,
barge-in that cancels the reply everywhere, and interrupted turns truncated in the audit log."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from services.core.config import AppConfig, LiveSettings, StorageSettings
from services.server.conversation import Conversation
from services.server.media import KIND_AUDIO, KIND_JPEG, unpack
from services.server.socket_session import SocketSession
from services.storage.database import open_storage
from services.turn.pipeline import Pipeline

REPLY = (
    "First I will say this sentence. Then a second one follows it. "
    "And a third one closes the reply."
)


class MemorySocket:
    """The ASGI WebSocket surface SocketSession uses, over asyncio queues."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.sent: list[tuple[float, object]] = []  # (monotonic time, dict | bytes)
        self.closed = None

    async def receive(self):
        return await self.inbox.get()

    async def send_json(self, data):
        self.sent.append((asyncio.get_running_loop().time(), json.loads(json.dumps(data))))

    async def send_bytes(self, data):
        self.sent.append((asyncio.get_running_loop().time(), bytes(data)))

    async def close(self, code=1000, reason=""):
        self.closed = (code, reason)

    def text(self, data):
        self.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(data)})

    def binary(self, data: bytes):
        self.inbox.put_nowait({"type": "websocket.receive", "bytes": data})

    def events(self, kind=None):
        out = [m for _, m in self.sent if isinstance(m, dict)]
        return [m for m in out if kind is None or m["type"] == kind]

    def media(self):
        return [(t, unpack(m)) for t, m in self.sent if isinstance(m, bytes)]


class Counting:
    """Wraps the in-process stages and counts calls in flight (no orphan work)."""

    def __init__(self, stages) -> None:
        self.inner, self.in_flight, self.calls = stages, 0, {"tts": 0, "render": 0, "llm": 0}

    async def transcribe(self, audio):
        return await self.inner.transcribe(audio)

    async def sentences(self, messages, turn):
        self.calls["llm"] += 1
        self.in_flight += 1
        try:
            async for chunk in self.inner.sentences(messages, turn):
                yield chunk
        finally:
            self.in_flight -= 1

    async def synthesize(self, text, voice, speed):
        self.calls["tts"] += 1
        self.in_flight += 1
        try:
            return await self.inner.synthesize(text, voice, speed)
        finally:
            self.in_flight -= 1

    async def render(self, speech, look, video="jpeg"):
        self.calls["render"] += 1
        self.in_flight += 1
        try:
            async for frame in self.inner.render(speech, look, video):
                yield frame
        finally:
            self.in_flight -= 1


@pytest.fixture
def live(tmp_path, monkeypatch):
    config = AppConfig(
        stages={
            "asr": {"backend": "fake"},
            "llm": {"backend": "fake", "options": {"reply": REPLY, "per_token_s": 0.01}},
            "tts": {"backend": "fake", "options": {"seconds_per_char": 0.03}},
            "render": {"backend": "fake", "options": {"per_frame_s": 0.002}},
        }
    )
    pipeline = Pipeline.from_config(config)
    pipeline.load()
    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)
    storage = open_storage(StorageSettings(sqlite_path=str(tmp_path / "a.sqlite3")))
    stages = Counting(pipeline.stages)
    conversation = Conversation(stages, pipeline.turn, storage.sessions, fps=25.0)
    yield conversation, stages, storage
    storage.close()


async def _until(predicate, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _session(conversation, ws, **live):
    return SocketSession(conversation, 10**7, ws, live=LiveSettings(**live))


def test_binary_media_is_paced_to_playback_and_done_comes_last(live):
    conversation, _, storage = live

    async def run():
        ws = MemorySocket()
        socket = _session(conversation, ws, media_lead_s=0.3)
        task = asyncio.create_task(socket.run())
        ws.text({"type": "start", "media": "binary"})
        ws.text({"type": "text", "text": "Tell me something."})
        await _until(lambda: ws.events("done"))
        ws.inbox.put_nowait({"type": "websocket.disconnect"})
        await task
        return ws

    ws = asyncio.run(run())
    media = ws.media()
    audio = [(t, m) for t, m in media if m[0] == KIND_AUDIO]
    frames = [(t, m) for t, m in media if m[0] == KIND_JPEG]
    assert audio and frames
    assert all(m[4][:2] == b"\xff\xd8" for _, m in frames)  # JPEG payloads
    # Paced: a message with timeline time p never leaves earlier than (playback start + p -
    # lead); playback starts with the first audio piece.
    start = audio[0][0]
    for sent_at, (_, _, _, t_s, _) in media:
        assert sent_at >= start + t_s - 0.3 - 0.05
    reply_audio_s = sum(e["duration_s"] for e in ws.events("audio"))
    assert media[-1][0] - start >= reply_audio_s - 0.3 - 0.1  # spread over playback
    assert all(e.get("binary") and "pcm16_b64" not in e for e in ws.events("audio"))
    assert ws.sent[-1][1]["type"] == "done"


def test_interrupt_stops_media_cancels_downstream_and_truncates_the_audit_log(live):
    conversation, stages, storage = live

    async def run():
        ws = MemorySocket()
        socket = _session(conversation, ws, media_lead_s=0.2)
        task = asyncio.create_task(socket.run())
        ws.text({"type": "start", "media": "binary"})
        ws.text({"type": "text", "text": "Tell me something."})
        await _until(lambda: len([m for m in ws.media() if m[1][0] == KIND_JPEG]) > 5)
        await asyncio.sleep(0.5)
        ws.text({"type": "interrupt"})
        await _until(lambda: ws.events("interrupted"))
        cut_at = len(ws.sent)
        await asyncio.sleep(0.5)
        in_flight = stages.in_flight
        ws.inbox.put_nowait({"type": "websocket.disconnect"})
        await task
        return ws, cut_at, in_flight

    ws, cut_at, in_flight = asyncio.run(run())
    assert len(ws.sent) == cut_at, "media after interrupted"
    assert in_flight == 0  # LLM, TTS and render calls all ended
    event = ws.events("interrupted")[0]
    assert event["reason"] == "client" and 0 < event["played_s"] < 8
    assert not ws.events("done")
    session_id = ws.events("session")[0]["session_id"]
    rows = storage.transcripts.turns(session_id=session_id)
    assert [r.status for r in rows] == ["interrupted"]
    assert rows[0].reply == event["spoken"]
    assert len(event["spoken"]) < len(REPLY)
    history = storage.sessions.history(session_id)
    assert history[-1].content == event["spoken"]


def _speech(text: str) -> np.ndarray:
    """Spoken words at 16 kHz from the espeak backend (fast, no model download)."""
    from services.core.audio import resample
    from services.core.registry import create_backend

    speech = create_backend("tts", "espeak").synthesize(text)
    return resample(np.asarray(speech.samples, np.float32), speech.sample_rate, 16000)


def _pcm(samples: np.ndarray) -> list[bytes]:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    return [pcm[i : i + 640] for i in range(0, len(pcm), 640)]  # 20 ms frames


async def _play(ws, samples, pace=True):
    for frame in _pcm(samples):
        ws.binary(frame)
        if pace:
            await asyncio.sleep(0.02)
        else:
            await asyncio.sleep(0)


def test_server_vad_turn_then_barge_in_by_speech(live):
    conversation, stages, storage = live

    async def run():
        ws = MemorySocket()
        socket = _session(conversation, ws, end_silence_ms=300, media_lead_s=0.2)
        task = asyncio.create_task(socket.run())
        ws.text({"type": "start", "media": "binary"})
        ws.text({"type": "listen", "sample_rate": 16000})
        await _play(ws, np.zeros(8000, np.float32), pace=False)
        await _play(ws, _speech("What do you think about remote work?"), pace=False)
        await _play(ws, np.zeros(16000, np.float32), pace=False)
        await _until(lambda: len([m for m in ws.media() if m[1][0] == KIND_JPEG]) > 3)
        before = len(ws.events("speech_started"))
        await _play(ws, _speech("Wait, stop, I have another question."), pace=True)  # barge-in
        await _until(lambda: ws.events("interrupted"))
        await _play(ws, np.zeros(16000, np.float32), pace=False)
        await _until(lambda: len(ws.events("done")) >= 1, timeout=30)
        ws.inbox.put_nowait({"type": "websocket.disconnect"})
        await task
        return ws, before

    ws, before = asyncio.run(run())
    kinds = [e["type"] for e in ws.events()]
    assert kinds.index("speech_started") < kinds.index("speech_stopped")
    finals = [e for e in ws.events("transcript") if e.get("final", True)]
    assert finals and finals[0]["text"] == "Hello, who are you?"  # the fake ASR's words
    assert len(ws.events("speech_started")) > before
    assert ws.events("interrupted")[0]["reason"] == "barge_in"
    session_id = ws.events("session")[0]["session_id"]
    statuses = [r.status for r in storage.transcripts.turns(session_id=session_id)]
    assert statuses[0] == "interrupted" and statuses[-1] == "ok"


def test_live_protocol_errors_are_events(live):
    conversation, _, _ = live

    async def run():
        ws = MemorySocket()
        task = asyncio.create_task(_session(conversation, ws).run())
        ws.binary(b"\x00\x01")  # audio before listen
        ws.text({"type": "listen", "sample_rate": 1000})
        ws.text({"type": "listen", "sample_rate": 16000, "mode": "telepathy"})
        ws.text({"type": "interrupt", "played_s": "soon"})
        ws.text({"type": "end_of_speech"})
        ws.text({"type": "listen", "sample_rate": 16000})
        ws.binary(b"\x00\x01\x02")  # odd bytes: not PCM16
        ws.text({"type": "start", "media": "carrier-pigeon"})
        await _until(lambda: len(ws.events("error")) >= 7)
        ws.inbox.put_nowait({"type": "websocket.disconnect"})
        await task
        return ws

    ws = asyncio.run(run())
    statuses = [e["status"] for e in ws.events("error")]
    assert statuses == [409, 422, 422, 422, 409, 422, 422]
    assert ws.events("listening")


def test_h264_video_is_one_decodable_stream_per_sentence(live):
    import av

    from services.server.media import FLAG_KEYFRAME, KIND_H264

    conversation, _, _ = live

    async def run():
        ws = MemorySocket()
        task = asyncio.create_task(_session(conversation, ws).run())
        ws.text({"type": "start", "media": "binary", "video": "h264"})
        ws.text({"type": "text", "text": "Tell me something."})
        await _until(lambda: ws.events("done"))
        ws.inbox.put_nowait({"type": "websocket.disconnect"})
        await task
        return ws

    ws = asyncio.run(run())
    video = ws.events("video")
    assert len(video) == 1 and video[0]["codec"].startswith("avc1.")
    units = [m for t, m in ws.sent if isinstance(m, bytes) and m[0] == KIND_H264]
    assert units and units[0][1] & FLAG_KEYFRAME  # a decoder can start at the first one
    assert not [m for m in ws.media() if m[1][0] == KIND_JPEG]
    decoder = av.CodecContext.create("h264", "r")
    decoded = [f for u in units for f in decoder.decode(av.Packet(unpack(u)[4]))]
    decoded += decoder.decode(None)
    assert len(decoded) == len(units)
    assert (decoded[0].width, decoded[0].height) == (video[0]["width"], video[0]["height"])
    index = [i for i, e in enumerate(ws.sent) if isinstance(e[1], dict) and e[1]["type"] == "video"]
    assert index[0] < ws.sent.index(next(e for e in ws.sent if e[1] is units[0]))


def test_a_reply_started_on_a_pause_is_dropped_if_the_user_goes_on(live):
    conversation, stages, storage = live
    pause = np.zeros(int(0.25 * 16000), np.float32)  # shorter than the 400 ms hangover

    async def run():
        ws = MemorySocket()
        socket = _session(conversation, ws, end_silence_ms=400)
        task = asyncio.create_task(socket.run())
        ws.text({"type": "start", "media": "binary"})
        ws.text({"type": "listen", "sample_rate": 16000})
        await _play(ws, np.zeros(4000, np.float32))
        await _play(ws, _speech("What do you think"))
        await _play(ws, pause)
        await _play(ws, _speech("about working from home?"))
        stopped_at = len(ws.sent)
        await _play(ws, np.zeros(16000, np.float32))
        await _until(lambda: ws.events("done"))
        ws.inbox.put_nowait({"type": "websocket.disconnect"})
        await task
        return ws, stopped_at

    ws, stopped_at = asyncio.run(run())
    kinds = [m["type"] if isinstance(m, dict) else "media" for _, m in ws.sent]
    assert kinds.count("speech_stopped") == 1 and kinds.count("done") == 1
    assert "interrupted" not in kinds  # a held reply was never heard: nothing to take back
    # Nothing of a reply reaches the client before the user's turn has ended.
    first_reply = min(kinds.index(k) for k in ("reply", "media") if k in kinds)
    assert kinds.index("speech_stopped") < first_reply
    session_id = ws.events("session")[0]["session_id"]
    statuses = [r.status for r in storage.transcripts.turns(session_id=session_id)]
    assert statuses[-1] == "ok" and set(statuses[:-1]) <= {"cancelled"}, (statuses, kinds)


def test_json_media_playout_knows_what_was_heard():
    """Unpaced JSON clients too: the playout sees the sentences and their audio, so a cut-off
    turn is logged with the words played, not the whole reply (or nothing)."""
    from services.core.types import ReplyChunk, SpeechChunk
    from services.server.media import Playout

    text = "one two three four five six seven eight nine ten"

    async def run():
        sent = []

        async def send(message):
            sent.append(message)

        playout = Playout(send, binary=False, lead_s=float("inf"))
        playout.put(ReplyChunk(text=text, index=0))
        playout.put(SpeechChunk(np.zeros(32000, np.float32), 16000, text, 0))  # 2 s
        await asyncio.sleep(1.0)
        played = await playout.cancel()
        return sent, played, playout.spoken_text(played)

    sent, played, spoken = asyncio.run(run())
    assert [m["type"] for m in sent] == ["reply", "audio"] and sent[1]["pcm16_b64"]
    assert 0.9 <= played <= 1.5
    assert text.startswith(spoken) and 4 <= len(spoken.split()) <= 7
