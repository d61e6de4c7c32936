"""espeak-ng text to speech through ctypes, with phoneme timings from its event stream.

`espeakng-loader` ships libespeak-ng 1.52 and its data, so this needs no system package. The
library is used in synchronous mode: `espeak_Synth` returns once the whole text is rendered, and
meanwhile calls our callback with 16-bit samples and events; phoneme events (enabled with
`espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA`) carry the IPA symbol and the
sample position where it starts. Formant synthesis is robotic but takes milliseconds, which makes
it the TTS of choice for tests and load tests of everything downstream.

libespeak-ng keeps all its state (voice, parameters, callback) in globals, so every use of it in
this process is serialised by one module-level lock, whatever the number of backend instances.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from services.core.backend import BackendError, BackendOptions, Capabilities
from services.core.types import SpeechChunk
from services.stages.sdk import import_sdk
from services.stages.tts.base import TTSBackend
from services.stages.tts.timing import PAUSE, clean_label, phoneme_track

# speak_lib.h constants (API revision 12, espeak-ng 1.52).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000  # without it a missing data dir calls exit() on our process
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_RATE_MIN, _RATE_MAX = 80, 450


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # sample index from the start of this espeak_Synth call
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)

_LOCK = threading.Lock()


class _Engine:
    """The process-wide libespeak-ng: loaded and initialised once; use only under `_LOCK`."""

    def __init__(self) -> None:
        espeakng_loader = import_sdk(
            "espeakng_loader",
            "espeak: the espeakng-loader package is missing (pip install espeakng-loader)",
        )
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), options
        )
        if rate <= 0:
            raise BackendError(f"espeak: espeak_Initialize failed ({rate})")
        self.lib = lib
        self.sample_rate = int(rate)
        self._samples: list[np.ndarray] = []
        self._onsets: list[tuple[str, int]] = []
        # Keep a reference: ctypes frees the trampoline when the Python object is collected.
        self._callback = _Callback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav: Any, count: int, events: Any) -> int:
        if count > 0:
            self._samples.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                # An 8-byte field, NUL-terminated only when shorter.
                symbol = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._onsets.append((clean_label(symbol), int(event.sample)))
            i += 1
        return 0  # 0 = continue synthesis

    def synth(
        self, text: str, voice: str, rate: int, pitch: int
    ) -> tuple[np.ndarray, list[tuple[str, int]]]:
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise BackendError(f"espeak: unknown voice {voice!r} (try 'en-us', 'en', 'en-gb')")
        lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        self._samples, self._onsets = [], []
        data = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise BackendError(f"espeak: espeak_Synth failed ({status})")
        pcm = np.concatenate(self._samples) if self._samples else np.zeros(0, dtype=np.int16)
        return (pcm.astype(np.float32) / 32768.0), self._onsets


_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


class EspeakOptions(BackendOptions):
    """Options of the espeak-ng backend."""

    voice: str = Field("en-us", description="espeak-ng voice name, e.g. en-us, en-gb, de.")
    rate: int = Field(175, ge=_RATE_MIN, le=_RATE_MAX, description="Words per minute at speed 1.")
    pitch: int = Field(50, ge=0, le=100, description="Base pitch, 0-100.")


class EspeakTTS(TTSBackend):
    """espeak-ng formant TTS: instant, robotic, with IPA phoneme timings from espeak's events.

    Phoneme labels are espeak's IPA units (diphthongs and long vowels stay one unit, e.g. "oʊ",
    "uː") without stress marks; pauses are "_". `synthesize(voice=...)` takes an espeak voice
    name; `speed` scales the words-per-minute rate (clamped to espeak's 80-450).
    """

    name: ClassVar[str] = "espeak"
    Options: ClassVar[type[BackendOptions]] = EspeakOptions
    capabilities: ClassVar[Capabilities] = Capabilities(timings=True)
    options: EspeakOptions

    def _load(self) -> None:
        with _LOCK:
            engine = _engine()
            # Fail at load time, not on the first request, when the configured voice is wrong.
            if engine.lib.espeak_SetVoiceByName(self.options.voice.encode()) != _EE_OK:
                raise BackendError(f"espeak: unknown voice {self.options.voice!r}")

    def _model_lock(self) -> contextlib.AbstractContextManager[Any]:
        return _LOCK  # libespeak-ng's state is process-wide, whatever the instance

    def _synthesize(self, text: str, *, voice: str | None, speed: float) -> SpeechChunk:
        rate = int(round(min(max(self.options.rate * speed, _RATE_MIN), _RATE_MAX)))
        engine = _engine()
        samples, onsets = engine.synth(text, voice or self.options.voice, rate, self.options.pitch)
        sample_rate = engine.sample_rate
        onsets = [(label or PAUSE, pos) for label, pos in onsets]
        phonemes = phoneme_track(onsets, samples.size, sample_rate)
        return SpeechChunk(
            samples=samples, sample_rate=sample_rate, text=text, index=0, phonemes=phonemes
        )
