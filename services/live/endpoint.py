"""Turn taking over VAD probabilities: when the user starts, pauses and stops speaking.

`Endpointer` is a small state machine over 32 ms Silero windows (idle -> onset -> speech ->
hangover -> idle) with hysteresis: speech starts at `vad_threshold` and only counts as stopped
below `vad_stop_threshold`. A turn starts once a run of speech lasts `min_speech_ms` (a click or
a cough is shorter), or, while the avatar speaks, once it holds `barge_in_min_speech_ms` of
confident speech (>= `barge_in_threshold`) so a cough does not interrupt. It ends after
`end_silence_ms` of silence; speech resuming within that hangover continues the same turn.

Times are seconds on the stream's 16 kHz timeline (sample / 16000, 0 = first sample fed), at
window resolution. The utterance audio starts `pre_roll_ms` before the onset, so the first
syllable (voiced before the VAD was sure) is kept, and ends one window after the last voiced
one: the same audio is handed out when silence begins (for a speculative final ASR pass while
the hangover runs) and when the turn ends, so that pass is valid unless speech resumed.

`TurnDetector` puts a `VADStream` in front of an `Endpointer`: PCM in, events out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.core.config import LiveSettings
from services.core.types import AudioChunk
from services.live.vad import VAD_RATE, WINDOW, SileroVAD, VADFrames, pcm16_to_float


@dataclass(frozen=True)
class SpeechStarted:
    """A turn began: speech onset at `t_s` (first voiced window), known at `detected_s`.
    `barge_in` is True when it was confirmed by the stricter rule (the avatar was speaking)."""

    utterance: int
    t_s: float
    detected_s: float
    barge_in: bool


@dataclass(frozen=True)
class SilenceBegan:
    """Speech paused at `t_s` (end of the last voiced window) inside turn `utterance`; the turn
    ends unless speech resumes within the hangover. `audio` is the utterance up to here: the
    exact audio `SpeechStopped` will carry if the pause becomes the end of the turn."""

    utterance: int
    t_s: float
    detected_s: float
    audio: AudioChunk


@dataclass(frozen=True)
class SpeechResumed:
    """Speech came back at `t_s` during the hangover: the turn goes on and any work started
    on `SilenceBegan.audio` is stale."""

    utterance: int
    t_s: float


@dataclass(frozen=True)
class SpeechStopped:
    """The turn ended. `t_last_voiced_s`: end of its last voiced window; `detected_s`: when the
    hangover expired. `reason`: "silence", "max_length" (cut at `max_utterance_s`) or
    "end_of_stream" (`flush`)."""

    utterance: int
    t_last_voiced_s: float
    detected_s: float
    audio: AudioChunk
    reason: Literal["silence", "max_length", "end_of_stream"]


Event = SpeechStarted | SilenceBegan | SpeechResumed | SpeechStopped

_IDLE, _ONSET, _SPEECH, _HANGOVER = "idle", "onset", "speech", "hangover"
# Sub-threshold windows an onset candidate survives (64 ms: a stop consonant, a dip in a
# quiet start); voiced windows alone count towards min_speech_ms.
_ONSET_GAP_WINDOWS = 2


def _windows(ms: float) -> int:
    return max(1, math.ceil(ms * VAD_RATE / 1000.0 / WINDOW))


class Endpointer:
    """The turn-taking state machine; feed it `VADFrames` (16 kHz windows + probabilities).

    Args:
        settings: thresholds and durations (`AppConfig.live`); defaults when None.

    Set `avatar_speaking` while the avatar's reply plays: onsets then need the barge-in rule.
    Not thread-safe: one per session.
    """

    def __init__(self, settings: LiveSettings | None = None) -> None:
        s = settings if settings is not None else LiveSettings()
        self.settings = s
        self._min_speech = _windows(s.min_speech_ms)
        self._barge_in = _windows(s.barge_in_min_speech_ms)
        self._hangover = _windows(s.end_silence_ms)
        self._pre_roll = int(round(s.pre_roll_ms * VAD_RATE / 1000.0))
        self._max_len = int(round(s.max_utterance_s * VAD_RATE))
        # Idle keeps just enough audio for the pre-roll of an onset confirmed late.
        self._keep_idle = self._pre_roll + WINDOW * (max(self._min_speech, self._barge_in) + 2)
        self.avatar_speaking = False
        self._chunks: list[np.ndarray] = []
        self._chunks_start = 0  # stream sample of self._chunks[0][0]
        self._end = 0  # stream sample after the last window seen
        self._state = _IDLE
        self._utterance = -1
        self._last_utterance_end = 0
        self._cand_start = 0
        self._cand_windows = 0
        self._cand_confident = 0
        self._cand_gap = 0
        self._utt_start = 0
        self._silence_start = 0
        self._pause_audio: AudioChunk | None = None

    @property
    def in_turn(self) -> bool:
        """True from `SpeechStarted` until `SpeechStopped`."""
        return self._state in (_SPEECH, _HANGOVER)

    @property
    def onset_confident_ms(self) -> float:
        """Confident speech (>= `barge_in_threshold`) in an onset not yet confirmed as a turn;
        0 outside one. Lets a caller pause the avatar on a likely barge-in before it is sure."""
        if self._state != _ONSET:
            return 0.0
        return self._cand_confident * WINDOW * 1000.0 / VAD_RATE

    @property
    def time_s(self) -> float:
        """Stream time of the audio seen so far."""
        return self._end / VAD_RATE

    def utterance_audio(self) -> AudioChunk | None:
        """The current turn's audio so far (pre-roll included), or None outside a turn."""
        if not self.in_turn:
            return None
        return self._audio(self._utt_start, self._end)

    def push(self, frames: VADFrames) -> list[Event]:
        """Advance over the windows in `frames`; return the events they caused, in order."""
        if frames.count == 0:
            return []
        if frames.first_sample != self._end:
            raise ValueError(
                f"VAD frames are not contiguous: expected sample {self._end}, "
                f"got {frames.first_sample}"
            )
        self._chunks.append(frames.audio)
        events: list[Event] = []
        for i, prob in enumerate(frames.probs.tolist()):
            start = frames.first_sample + i * WINDOW
            self._end = start + WINDOW
            self._step(prob, start, events)
        if self._state == _IDLE:
            self._trim(self._end - self._keep_idle)
        elif self._state == _ONSET:
            self._trim(min(self._end - self._keep_idle, self._cand_start - self._pre_roll))
        return events

    def flush(self) -> list[Event]:
        """End of the stream: close an open turn (reason "end_of_stream")."""
        events: list[Event] = []
        if self._state == _SPEECH:
            self._stop(self._end, self._audio(self._utt_start, self._end), "end_of_stream", events)
        elif self._state == _HANGOVER:
            self._stop(self._silence_start, self._pause_audio, "end_of_stream", events)
        self._state = _IDLE
        return events

    # --- the state machine, one window at a time ---------------------------------------------

    def _step(self, prob: float, start: int, events: list[Event]) -> None:
        s = self.settings
        end = start + WINDOW
        if self._state == _IDLE:
            if prob < s.vad_threshold:
                return
            self._state = _ONSET
            self._cand_start, self._cand_windows, self._cand_confident = start, 0, 0
            self._cand_gap = 0
        if self._state == _ONSET:
            if prob < s.vad_stop_threshold:
                # A dip inside the first syllables is forgiven; a longer one means the run was
                # too short to be a turn: a click, a cough, a breath.
                self._cand_gap += 1
                if self._cand_gap > _ONSET_GAP_WINDOWS:
                    self._state = _IDLE
                return
            self._cand_gap = 0
            self._cand_windows += 1
            self._cand_confident += prob >= s.barge_in_threshold
            if self._onset_confirmed():
                self._begin(end, events)
            return
        if self._state == _SPEECH:
            if prob < s.vad_stop_threshold:
                self._state = _HANGOVER
                self._silence_start = start
                self._pause_audio = self._audio(self._utt_start, end)
                events.append(
                    SilenceBegan(
                        self._utterance, start / VAD_RATE, end / VAD_RATE, self._pause_audio
                    )
                )
            elif end - self._utt_start >= self._max_len:
                self._stop(end, self._audio(self._utt_start, end), "max_length", events)
            return
        # _HANGOVER
        if prob >= s.vad_threshold:
            self._state = _SPEECH
            self._pause_audio = None
            events.append(SpeechResumed(self._utterance, start / VAD_RATE))
        elif end - self._silence_start >= self._hangover * WINDOW:
            self._stop(self._silence_start, self._pause_audio, "silence", events)
        elif end - self._utt_start >= self._max_len:
            self._stop(self._silence_start, self._pause_audio, "max_length", events)

    def _onset_confirmed(self) -> bool:
        if self.avatar_speaking:
            return self._cand_confident >= self._barge_in
        return self._cand_windows >= self._min_speech

    def _begin(self, end: int, events: list[Event]) -> None:
        self._state = _SPEECH
        self._utterance += 1
        # Never reach back into the previous turn's audio.
        self._utt_start = max(
            self._cand_start - self._pre_roll, self._chunks_start, self._last_utterance_end
        )
        events.append(
            SpeechStarted(
                self._utterance, self._cand_start / VAD_RATE, end / VAD_RATE, self.avatar_speaking
            )
        )

    def _stop(
        self, last_voiced: int, audio: AudioChunk | None, reason: str, events: list[Event]
    ) -> None:
        assert audio is not None
        events.append(
            SpeechStopped(
                self._utterance, last_voiced / VAD_RATE, self._end / VAD_RATE, audio, reason
            )
        )
        self._state = _IDLE
        self._pause_audio = None
        self._last_utterance_end = int(round((audio.start_s + audio.duration_s) * VAD_RATE))

    # --- the audio buffer --------------------------------------------------------------------

    def _audio(self, start: int, end: int) -> AudioChunk:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        buf = self._chunks[0] if self._chunks else np.zeros(0, dtype=np.float32)
        a = max(start, self._chunks_start) - self._chunks_start
        samples = buf[a : end - self._chunks_start].copy()
        return AudioChunk(samples, VAD_RATE, start_s=(a + self._chunks_start) / VAD_RATE)

    def _trim(self, keep_from: int) -> None:
        """Drop whole buffered chunks that end before `keep_from`."""
        while self._chunks and self._chunks_start + self._chunks[0].size <= keep_from:
            self._chunks_start += self._chunks.pop(0).size


class TurnDetector:
    """VAD + endpointing for one microphone stream: PCM in, turn events out.

    Args:
        vad: the shared Silero model (`SileroVAD()`, one per process).
        settings: `AppConfig.live`; defaults when None.
        sample_rate: the rate the client declared (8, 16, 22.05, 24, 32, 44.1 or 48 kHz).
    """

    def __init__(
        self, vad: SileroVAD, settings: LiveSettings | None = None, *, sample_rate: int = VAD_RATE
    ) -> None:
        self._stream = vad.stream(sample_rate)
        self.endpointer = Endpointer(settings)

    @property
    def avatar_speaking(self) -> bool:
        """Whether the avatar is speaking (onsets then need the barge-in rule)."""
        return self.endpointer.avatar_speaking

    @avatar_speaking.setter
    def avatar_speaking(self, value: bool) -> None:
        self.endpointer.avatar_speaking = bool(value)

    @property
    def in_turn(self) -> bool:
        return self.endpointer.in_turn

    @property
    def time_s(self) -> float:
        """Stream time of the audio analysed so far (a partial window waits for more)."""
        return self.endpointer.time_s

    def feed(self, samples: np.ndarray) -> list[Event]:
        """Float32 mono samples at the declared rate, any length."""
        return self.endpointer.push(self._stream.feed(samples))

    def feed_pcm16(self, data: bytes) -> list[Event]:
        """One binary WebSocket frame of little-endian PCM16 at the declared rate.

        Raises:
            VADError: an odd number of bytes.
        """
        return self.feed(pcm16_to_float(data))

    def utterance_audio(self) -> AudioChunk | None:
        """The current turn's audio so far (16 kHz, pre-roll included), None outside a turn."""
        return self.endpointer.utterance_audio()

    def flush(self) -> list[Event]:
        """End of the stream: close an open turn."""
        return self.endpointer.flush()
