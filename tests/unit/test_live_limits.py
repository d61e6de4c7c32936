"""A key's limits on the live microphone (no Ray): streamed audio counts against its audio
seconds per minute as it arrives, and a reply started on a pause that the user talked over
costs no turn."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.core.config import LiveSettings, StorageSettings
from services.server.auth import Principal
from services.server.socket_session import SocketSession
from services.storage.database import open_storage
from tests.unit.test_limits import limited_conversation
from tests.unit.test_live_socket import MemorySocket, _play, _speech, _until

KEY = Principal("acme", "abc123abc123", None, False, False)


@pytest.fixture
def keyed(tmp_path, monkeypatch):
    """A conversation on fake stages whose keys get `limits.per_key` from the test."""
    monkeypatch.delenv("AVATAR_DATABASE_URL", raising=False)
    storage = open_storage(StorageSettings(sqlite_path=str(tmp_path / "a.sqlite3")))
    yield lambda **per_key: limited_conversation(storage, **per_key)
    storage.close()


async def _open(conversation, **live) -> tuple[MemorySocket, asyncio.Task]:
    ws = MemorySocket()
    socket = SocketSession(conversation, 10**7, ws, KEY, live=LiveSettings(**live))
    task = asyncio.create_task(socket.run())
    ws.text({"type": "start", "media": "binary"})
    ws.text({"type": "listen", "sample_rate": 16000})
    return ws, task


async def _close(ws: MemorySocket, task: asyncio.Task) -> None:
    ws.inbox.put_nowait({"type": "websocket.disconnect"})
    await task


def test_live_audio_counts_against_the_keys_audio_seconds_as_it_arrives(keyed):
    conversation = keyed(audio_s_per_minute=2, turns_per_minute=0)

    async def run() -> MemorySocket:
        ws, task = await _open(conversation)
        await _play(ws, np.zeros(16000 * 4, np.float32), pace=False)  # 4 s of silence
        await _until(lambda: ws.inbox.empty() and ws.events("error"))
        await asyncio.sleep(0.1)
        await _close(ws, task)
        return ws

    ws = asyncio.run(run())
    (error,) = ws.events("error")  # one event, not one per dropped frame
    assert error["status"] == 429 and "audio" in error["reason"]
    assert error["retry_after_s"] >= 1
    assert ws.events("listening")  # the socket stays open: the client may wait and resume


def test_a_reply_dropped_because_the_user_went_on_costs_no_turn(keyed):
    # One turn a minute: had the dropped speculative reply been charged, the real turn would
    # be refused with 429.
    conversation = keyed(turns_per_minute=1, audio_s_per_minute=0)
    pause = np.zeros(int(0.25 * 16000), np.float32)  # shorter than the 400 ms hangover

    async def run() -> MemorySocket:
        ws, task = await _open(conversation, end_silence_ms=400)
        await _play(ws, np.zeros(4000, np.float32))
        await _play(ws, _speech("What do you think"))
        await _play(ws, pause)
        await _play(ws, _speech("about working from home?"))
        await _play(ws, np.zeros(16000, np.float32))
        await _until(lambda: ws.events("done") or ws.events("error"))
        await _close(ws, task)
        return ws

    ws = asyncio.run(run())
    assert not ws.events("error") and len(ws.events("done")) == 1
    assert len(ws.events("speech_stopped")) == 1
