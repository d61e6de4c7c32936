"""Unit tests for the turn-taking state machine over scripted VAD probabilities (no model)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from services.core.config import AppConfig, LiveSettings
from services.live.endpoint import (
    Endpointer,
    SilenceBegan,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
)
from services.live.vad import VAD_RATE, WINDOW, VADFrames

W_S = WINDOW / VAD_RATE  # 32 ms

SETTINGS = LiveSettings(
    min_speech_ms=250,  # 8 windows
    end_silence_ms=400,  # 13 windows
    pre_roll_ms=320,  # 10 windows
    barge_in_min_speech_ms=250,
    barge_in_threshold=0.7,
    max_utterance_s=30.0,
)


class Feeder:
    """Feeds an endpointer scripted probabilities; window i's audio samples all equal i, so a
    returned clip shows exactly which windows it holds."""

    def __init__(self, settings: LiveSettings = SETTINGS) -> None:
        self.ep = Endpointer(settings)
        self.windows = 0

    def feed(self, probs: list[float]) -> list:
        idx = np.arange(self.windows, self.windows + len(probs))
        audio = np.repeat(idx.astype(np.float32), WINDOW)
        frames = VADFrames(np.asarray(probs, np.float32), audio, self.windows * WINDOW)
        self.windows += len(probs)
        return self.ep.push(frames)


def _windows_in(audio) -> list[int]:
    return sorted({int(v) for v in audio.samples})


def test_onset_needs_min_speech_and_reports_the_first_voiced_window():
    f = Feeder()
    assert f.feed([0.0] * 20) == []
    assert f.feed([0.9] * 7) == []  # 224 ms: not yet a turn
    (started,) = f.feed([0.9])
    assert isinstance(started, SpeechStarted)
    assert started.t_s == pytest.approx(20 * W_S)
    assert started.detected_s == pytest.approx(28 * W_S)
    assert not started.barge_in and started.utterance == 0
    assert f.ep.in_turn


def test_a_short_burst_starts_no_turn():
    f = Feeder()
    events = f.feed([0.0] * 10 + [0.95] * 5 + [0.0] * 30 + [0.95] * 4 + [0.0] * 30)
    assert events == []
    assert not f.ep.in_turn


def test_a_brief_dip_during_the_onset_is_forgiven():
    f = Feeder()
    events = f.feed([0.0] * 5 + [0.9] * 3 + [0.1] * 2 + [0.9] * 5)
    assert [type(e) for e in events] == [SpeechStarted]
    assert events[0].t_s == pytest.approx(5 * W_S)


def test_hysteresis_keeps_speech_between_the_thresholds():
    f = Feeder()
    events = f.feed([0.9] * 10 + [0.4] * 40)  # 0.4: below start, above stop
    assert [type(e) for e in events] == [SpeechStarted]


def test_pause_shorter_than_the_hangover_keeps_one_turn():
    f = Feeder()
    events = f.feed([0.0] * 10 + [0.9] * 20 + [0.0] * 9 + [0.9] * 20 + [0.0] * 20)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SilenceBegan, SpeechResumed, SilenceBegan, SpeechStopped]
    stopped = events[-1]
    assert stopped.reason == "silence"
    assert stopped.t_last_voiced_s == pytest.approx(59 * W_S)
    assert stopped.detected_s == pytest.approx((59 + 13) * W_S)
    # Pre-roll (10 windows) before the onset at window 10; one window after the last voiced.
    assert _windows_in(stopped.audio) == list(range(0, 60))
    assert stopped.audio.start_s == pytest.approx(0.0)


def test_silence_began_carries_the_audio_the_turn_ends_with():
    f = Feeder()
    events = f.feed([0.0] * 30 + [0.9] * 12 + [0.0] * 20)
    started, silence, stopped = events
    assert isinstance(silence, SilenceBegan) and isinstance(stopped, SpeechStopped)
    assert silence.t_s == pytest.approx(42 * W_S)
    assert silence.detected_s == pytest.approx(43 * W_S)
    assert stopped.audio is silence.audio
    assert _windows_in(silence.audio) == list(range(20, 43))  # pre-roll from window 20
    assert silence.audio.start_s == pytest.approx(20 * W_S)
    assert silence.audio.sample_rate == VAD_RATE


def test_barge_in_needs_confident_speech_while_the_avatar_speaks():
    f = Feeder()
    f.ep.avatar_speaking = True
    assert f.feed([0.6] * 30) == []  # speech-ish but never confident: no interruption
    assert f.feed([0.0] * 5) == []
    assert f.feed([0.95] * 7) == []
    (started,) = f.feed([0.95])
    assert started.barge_in
    f2 = Feeder()
    assert [type(e) for e in f2.feed([0.6] * 8)] == [SpeechStarted]  # normal rule accepts it


def test_max_utterance_length_cuts_the_turn():
    f = Feeder(SETTINGS.model_copy(update={"max_utterance_s": 1.0}))
    events = f.feed([0.9] * 36)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert events[1].reason == "max_length"
    assert events[1].audio.duration_s == pytest.approx(32 * W_S)
    # Speech that goes on becomes the next turn.
    more = f.feed([0.9] * 10)
    assert isinstance(more[0], SpeechStarted) and more[0].utterance == 1


def test_flush_ends_an_open_turn():
    f = Feeder()
    f.feed([0.9] * 10)
    (stopped,) = f.ep.flush()
    assert stopped.reason == "end_of_stream"
    assert not f.ep.in_turn
    assert f.ep.flush() == []


def test_utterance_audio_grows_during_the_turn():
    f = Feeder()
    assert f.ep.utterance_audio() is None
    f.feed([0.0] * 15 + [0.9] * 10)
    assert _windows_in(f.ep.utterance_audio()) == list(range(5, 25))


def test_idle_audio_buffer_stays_bounded():
    f = Feeder()
    for _ in range(50):
        f.feed([0.0] * 100)
    buffered = sum(c.size for c in f.ep._chunks)
    assert buffered <= 120 * WINDOW


def test_frames_must_be_contiguous():
    ep = Endpointer(SETTINGS)
    with pytest.raises(ValueError, match="contiguous"):
        ep.push(VADFrames(np.zeros(1, np.float32), np.zeros(WINDOW, np.float32), WINDOW))


def test_live_settings_are_bounded_and_in_app_config():
    assert AppConfig().live == LiveSettings()
    with pytest.raises(ValidationError, match="vad_threshold"):
        LiveSettings(vad_threshold=0.4, vad_stop_threshold=0.5)
    with pytest.raises(ValidationError):
        LiveSettings(end_silence_ms=10)
    with pytest.raises(ValidationError):
        LiveSettings(no_such_field=1)
