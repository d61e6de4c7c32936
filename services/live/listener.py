"""Listening to a live microphone: turn events, interim transcripts and barge-in.

A `Listener` sits between a socket's binary audio frames and the conversation. It runs the VAD
and endpointing (`services.live.endpoint`) on every frame, and the ASR — the `transcribe` call
of the stages, in process or a Ray replica — in the background:
- while the user speaks, the growing utterance is re-decoded every `interim_every_s`, at most
  one decode at a time, and sent as interim `transcript` events (`final: false`);
- when speech pauses (`SilenceBegan`) the final decode starts at once, speculatively, while the
  hangover runs, and as soon as it is done the turn itself starts (`on_speculate`) with its
  output held back: if the pause turns out to be the end of the turn, the reply is already
  being written when the turn ends (`on_utterance` then releases it); if speech resumes, both
  are discarded (`on_retract`);
- speech confirmed while the avatar is speaking (the stricter barge-in onset) cuts the reply.
In push-to-talk mode there is no endpointing: everything between the first frame and
`end_of_speech` is the utterance.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from services.core.config import LiveSettings
from services.core.types import AudioChunk, Transcript
from services.live.endpoint import (
    SilenceBegan,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
)
from services.live.vad import SileroVAD, pcm16_to_float
from services.stages.asr.incremental import StablePrefix

_VAD: SileroVAD | None = None
_VAD_LOCK = threading.Lock()


def shared_vad() -> SileroVAD:
    """One Silero model per process (sessions keep their own recurrent state)."""
    global _VAD
    with _VAD_LOCK:
        if _VAD is None:
            _VAD = SileroVAD()
        return _VAD


class Listener:
    """One session's microphone.

    Args:
        transcribe: the ASR call (`Stages.transcribe`).
        settings: `AppConfig.live`.
        sample_rate: the rate the client declared for its PCM16 frames.
        push_to_talk: no VAD endpointing; `end_of_speech` ends the utterance.
        emit: sends an event to the client.
        on_utterance: called with the final transcript of each utterance (the next turn).
        speaking: whether the avatar is speaking now (barge-in needs the stricter onset).
        on_barge_in: cuts the avatar's reply.
    """

    def __init__(
        self,
        transcribe: Callable[[AudioChunk], Awaitable[Transcript]],
        settings: LiveSettings,
        sample_rate: int,
        *,
        push_to_talk: bool,
        emit: Callable[[dict[str, Any]], Awaitable[None]],
        on_utterance: Callable[[Transcript], Awaitable[None]],
        speaking: Callable[[], bool],
        on_barge_in: Callable[[], Awaitable[None]],
        on_speculate: Callable[[Transcript], Awaitable[None]] | None = None,
        on_retract: Callable[[], Awaitable[None]] | None = None,
        on_pause: Callable[[bool], None] | None = None,
    ) -> None:
        self.transcribe, self.settings, self.sample_rate = transcribe, settings, sample_rate
        self.push_to_talk = push_to_talk
        self.emit, self.on_utterance = emit, on_utterance
        self.speaking, self.on_barge_in = speaking, on_barge_in
        self.on_speculate, self.on_retract = on_speculate, on_retract
        self.on_pause = on_pause
        self._paused = False
        self.detector = (
            None if push_to_talk else TurnDetector(shared_vad(), settings, sample_rate=sample_rate)
        )
        self._ptt: list[np.ndarray] | None = None  # push-to-talk audio of this utterance
        self._interim: asyncio.Task | None = None
        self._interim_at = 0.0  # utterance seconds covered by the last interim decode
        self._prefix = StablePrefix()
        self._final: tuple[int, asyncio.Task] | None = None  # (audio length, speculative)
        self._tasks: set[asyncio.Task] = set()
        self._ended = False  # the utterance ended: interims still decoding are old news

    async def feed(self, data: bytes) -> None:
        """One binary frame of PCM16 mono at `sample_rate`.

        Raises:
            VADError: not PCM16 (an odd number of bytes).
        """
        if self.detector is None:
            await self._feed_push_to_talk(pcm16_to_float(data))
            return
        self.detector.avatar_speaking = self.speaking()
        for event in self.detector.feed_pcm16(data):
            await self._on_event(event)
        self._pause_if_cut_in()
        if self.detector.in_turn:
            self._maybe_interim(self.detector.utterance_audio())

    def _pause_if_cut_in(self) -> None:
        """Hold the avatar's media while an onset over it may become a barge-in: the cut then
        costs only the rest of the confirmation, not a stream of media meanwhile."""
        pause_ms = self.settings.barge_in_pause_ms
        if self.on_pause is None or not pause_ms:
            return
        likely = (
            self.detector.avatar_speaking
            and self.detector.endpointer.onset_confident_ms >= pause_ms
        )
        if likely != self._paused:
            self._paused = likely
            self.on_pause(likely)

    async def end_of_speech(self) -> None:
        """Push-to-talk released (in VAD mode: the client says the user is done)."""
        if self.detector is not None:
            for event in self.detector.flush():
                await self._on_event(event)
            return
        if self._ptt:
            audio = AudioChunk(np.concatenate(self._ptt), self.sample_rate)
            self._ptt = None
            self._ended = True
            await self.emit({"type": "speech_stopped", "t_s": round(audio.duration_s, 3)})
            self._spawn(self._finish(self.transcribe(audio)))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- events ----------------------------------------------------------------------------
    async def _feed_push_to_talk(self, samples: np.ndarray) -> None:
        if self._ptt is None:
            self._ptt = []
            self._restart()
            if self.speaking():
                await self.on_barge_in()
            await self.emit({"type": "speech_started", "t_s": 0.0})
        self._ptt.append(samples)
        self._maybe_interim(AudioChunk(np.concatenate(self._ptt), self.sample_rate))

    async def _on_event(self, event) -> None:
        if isinstance(event, SpeechStarted):
            self._restart()
            if event.barge_in or self.speaking():
                await self.on_barge_in()
            await self.emit(
                {"type": "speech_started", "t_s": round(event.t_s, 3), "barge_in": event.barge_in}
            )
        elif isinstance(event, SilenceBegan):
            # Start the final decode now: the hangover hides its cost if the user is done.
            task = self._spawn(self.transcribe(event.audio))
            self._final = (len(event.audio.samples), task)
            if self.on_speculate is not None:
                self._spawn(self._speculate(task))
        elif isinstance(event, SpeechResumed):
            if self._final is not None:
                self._final[1].cancel()
                self._final = None
                if self.on_retract is not None:
                    await self.on_retract()
        elif isinstance(event, SpeechStopped):
            await self.emit(
                {
                    "type": "speech_stopped",
                    "t_s": round(event.t_last_voiced_s, 3),
                    "detected_s": round(event.detected_s, 3),
                    "reason": event.reason,
                }
            )
            self._ended = True
            speculative = self._final
            self._final = None
            if speculative is not None and speculative[0] == len(event.audio.samples):
                self._spawn(self._finish(speculative[1]))
            else:
                self._spawn(self._finish(self.transcribe(event.audio)))

    def _restart(self) -> None:
        self._ended = False
        if self._interim is not None:
            self._interim.cancel()
        self._interim, self._interim_at = None, 0.0
        self._prefix = StablePrefix()

    # -- ASR -------------------------------------------------------------------------------
    def _maybe_interim(self, audio: AudioChunk | None) -> None:
        if audio is None or (self._interim is not None and not self._interim.done()):
            return
        if self._final is not None or self._ended:
            return  # paused or done: the final decode covers it
        if audio.duration_s - self._interim_at < self.settings.interim_every_s:
            return
        self._interim_at = audio.duration_s
        self._interim = self._spawn(self._send_interim(audio))

    async def _send_interim(self, audio: AudioChunk) -> None:
        transcript = await self.transcribe(audio)
        if self._final is not None or self._ended:
            return  # the final decode is on its way: an interim now would be older news
        stable, tail = self._prefix.update(transcript.text.split())
        text = " ".join(stable + tail)
        if text:
            await self.emit({"type": "transcript", "text": text, "final": False})

    async def _speculate(self, decoding: asyncio.Task) -> None:
        transcript = await decoding
        # Still the pause it was decoded for (speech did not resume meanwhile)?
        if self._final is not None and self._final[1] is decoding and transcript.text.strip():
            await self.on_speculate(transcript)

    async def _finish(self, decoding: Awaitable[Transcript]) -> None:
        transcript = await decoding
        if not transcript.text.strip():
            # Noise the VAD took for speech: nothing to answer; the client learns the turn ended.
            await self.emit({"type": "transcript", "text": "", "words": [], "final": True})
            return
        await self.on_utterance(transcript)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # An ASR failure (a replica lost, overload): the user must hear about it.
        exc = task.exception()
        with contextlib.suppress(RuntimeError):
            asyncio.ensure_future(
                self.emit(
                    {"type": "error", "status": 503, "reason": f"speech recognition failed: {exc}"}
                )
            )
