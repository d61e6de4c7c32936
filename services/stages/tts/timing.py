"""Turn a TTS engine's phoneme onsets into a contiguous phoneme track that covers the audio.

Engines report phonemes differently (Piper: a sample count per symbol, stress marks and spaces
included; espeak-ng: events at sample positions, pauses as empty strings). Both are reduced to
`(label, start_sample)` onsets and handed to `phoneme_track`, which guarantees what the renderer
relies on: spans are back to back (each ends exactly where the next starts), the first starts at
0 and the last ends at the audio's end, silences are one pause phoneme `PAUSE`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from services.core.types import PhonemeTiming

PAUSE = "_"
# Primary/secondary stress marks: prosody, not mouth shapes; their time belongs to the next sound.
STRESS_MARKS = frozenset("ˈˌ")


def is_modifier(symbol: str) -> bool:
    """True for IPA symbols that modify the previous sound (length mark, diacritics)."""
    if not symbol or symbol in STRESS_MARKS:
        return False
    return all(unicodedata.category(ch) in ("Lm", "Mn", "Sk") for ch in symbol)


def is_pause_symbol(symbol: str) -> bool:
    """True for punctuation and empty symbols: the engine renders them as silence."""
    stripped = symbol.strip()
    return not stripped or all(unicodedata.category(ch)[0] in "PZ" for ch in stripped)


def clean_label(symbol: str) -> str:
    """An IPA label without stress marks; pauses become `PAUSE`."""
    label = "".join(ch for ch in symbol if ch not in STRESS_MARKS).strip()
    return PAUSE if is_pause_symbol(label) else label


def phoneme_track(
    onsets: Iterable[tuple[str, int]], total_samples: int, sample_rate: int
) -> tuple[PhonemeTiming, ...]:
    """Build contiguous `PhonemeTiming`s from `(label, start_sample)` onsets.

    Each phoneme lasts until the next onset; the last one until `total_samples`. Onsets are
    clipped into the audio, out-of-order ones are pulled forward, a gap before the first onset
    becomes a pause, and adjacent pauses merge. Labels are taken as given (see `clean_label`).
    """
    total = max(0, int(total_samples))
    spans: list[list] = []  # [label, start, end] in samples
    cursor = 0
    for label, start in onsets:
        start = min(max(int(start), cursor), total)
        if spans:
            spans[-1][2] = start
        elif start > 0:
            spans.append([PAUSE, 0, start])
        spans.append([label or PAUSE, start, total])
        cursor = start
    if not spans and total > 0:
        spans.append([PAUSE, 0, total])
    merged: list[list] = []
    for label, start, end in spans:
        if end <= start:
            continue
        if merged and label == PAUSE and merged[-1][0] == PAUSE:
            merged[-1][2] = end
        else:
            merged.append([label, start, end])
    rate = float(sample_rate)
    return tuple(PhonemeTiming(label, start / rate, end / rate) for label, start, end in merged)
