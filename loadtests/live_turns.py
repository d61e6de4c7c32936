"""Live turns for the benchmark: driving them through a `LiveClient`, then measuring them.

`run_turns` plays one spoken question per turn and waits for the reply; on barge-in turns it
injects the next question mid-reply (after the first frame), so that question both interrupts
the reply and is the next turn. Measuring is a pure function of the client's log and each
turn's `TurnSpan` (`analyse_turn`), so the figures are unit-tested without a server. Every time
is measured from when the client sent the frame holding the clip's last voiced sample: the true
end of speech, endpointing included.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadtests.live_client import LiveClient, Received
from loadtests.stats import quantile

END_KINDS = ("done", "interrupted", "error")
# Media later than this past its playback moment would make a client's playback stall.
LATE_TOLERANCE_S = 0.04
SERVER_TIMINGS = ("llm_ttft_s", "llm_first_sentence_s", "time_to_first_audio_s",
                  "time_to_first_frame_s", "total_s", "tts_s", "render_s")  # fmt: skip


@dataclass(frozen=True)
class Clip:
    """A spoken question: 16-bit mono PCM, its text, and its voiced span (samples)."""

    name: str
    text: str | None
    pcm: bytes
    sample_rate: int
    first_voiced: int
    last_voiced: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate

    @property
    def voiced_end_s(self) -> float:
        return (self.last_voiced + 1) / self.sample_rate


@dataclass
class TurnSpan:
    """One turn as driven: log indices [start, end], when its speech ended, and (barge-in
    turns) when the injected speech started."""

    clip: Clip
    start: int
    t_last_voiced: float | None = None
    end: int | None = None
    barge_in: bool = False
    t_inject: float | None = None
    outcome: str = "ok"  # ok | timeout | error
    error: str | None = None


# --- transcript correctness ---------------------------------------------------------------------


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation (apostrophes kept: "don't")."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance / reference words (normalised)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))


# --- driving ------------------------------------------------------------------------------------


async def _play(client: LiveClient, clip: Clip) -> tuple[int, Any]:
    return len(client.log), client.play(clip.pcm, clip.first_voiced, clip.last_voiced)


async def warm_up(client: LiveClient, clip: Clip, timeout_s: float = 120.0) -> None:
    """One spoken turn, interrupted by the client after its first frame (warms every stage)."""
    start, played = await _play(client, clip)
    t_end = await played.last_voiced
    final = await client.wait_for(lambda e: e.final_transcript and e.t >= t_end, start, timeout_s)
    await client.wait_for(lambda e: e.kind in ("media_frame", *END_KINDS), final + 1, timeout_s)
    await client.send_json({"type": "interrupt"})
    with contextlib.suppress(TimeoutError):
        await client.wait_for(lambda e: e.kind in END_KINDS, final + 1, 10.0)


async def run_turns(
    client: LiveClient,
    clips: Sequence[Clip],
    turns: int,
    *,
    barge_in_every: int = 0,
    inject_after_s: float = 1.0,
    timeout_s: float = 120.0,
    progress=None,
) -> list[TurnSpan]:
    """Play `turns` questions (cycling through `clips`); every `barge_in_every`-th turn (not the
    last) is interrupted `inject_after_s` after its first frame by the next question."""
    spans: list[TurnSpan] = []
    queued: tuple[int, Any] | None = None
    for i in range(turns):
        clip = clips[i % len(clips)]
        start, played = queued or await _play(client, clip)
        queued = None
        span = TurnSpan(clip, start)
        span.barge_in = bool(barge_in_every) and (i + 1) % barge_in_every == 0 and i + 1 < turns
        try:
            span.t_last_voiced = t_end = await asyncio.wait_for(
                asyncio.shield(played.last_voiced), clip.duration_s + timeout_s
            )
            final = await client.wait_for(
                lambda e, t=t_end: (e.final_transcript and e.t >= t) or e.kind == "error",
                start,
                timeout_s,
            )
            if client.log[final].kind == "error":
                raise RuntimeError(f"error event: {client.log[final].data.get('reason')}")
            if span.barge_in:
                first = await client.wait_for(
                    lambda e: e.kind in ("media_frame", *END_KINDS), final + 1, timeout_s
                )
                if client.log[first].kind == "media_frame":
                    await asyncio.sleep(inject_after_s)
                    queued = await _play(client, clips[(i + 1) % len(clips)])
                    span.t_inject = await queued[1].first_voiced
            span.end = await client.wait_for(lambda e: e.kind in END_KINDS, final + 1, timeout_s)
        except TimeoutError:
            span.outcome, span.error = "timeout", f"no reply within {timeout_s:.0f} s"
            await client.send_json({"type": "interrupt"})  # start the next turn clean
        except (RuntimeError, ConnectionError) as exc:
            span.outcome, span.error = "error", str(exc)
        if span.end is None:
            span.end = len(client.log) - 1
        spans.append(span)
        if progress is not None:
            progress(f"turn {i + 1}/{turns} {clip.name}: {span.outcome}")
        if client.closed:
            break
    return spans


# --- measuring ----------------------------------------------------------------------------------


def _since(t: float | None, t0: float | None) -> float | None:
    return None if t is None or t0 is None else round(t - t0, 4)


def analyse_turn(log: Sequence[Received], span: TurnSpan) -> dict[str, Any]:
    """The figures of one turn from the client's log (times in seconds)."""
    r: dict[str, Any] = {"clip": span.clip.name, "outcome": span.outcome, "error": span.error,
                         "barge_in": span.barge_in}  # fmt: skip
    t0, end = span.t_last_voiced, span.end if span.end is not None else len(log) - 1
    if t0 is None:
        return r
    final = next((i for i in range(span.start, end + 1)
                  if log[i].final_transcript and log[i].t >= t0), None)  # fmt: skip
    if final is None:
        r["error"] = r["error"] or "no final transcript"
        return r
    stops = [i for i in range(span.start, final) if log[i].kind == "speech_stopped"]
    text = log[final].data.get("text", "")
    r.update(
        utterances=len(stops),
        endpoint_s=_since(log[stops[-1]].t, t0) if stops else None,
        final_transcript_s=_since(log[final].t, t0),
        transcript=text,
        wer=None if span.clip.text is None else round(wer(span.clip.text, text), 4),
    )
    if len(stops) > 1:
        r["error"] = r["error"] or f"the question was cut into {len(stops)} utterances"
    after = [log[i] for i in range(final + 1, end + 1)]
    # An interim that arrives after the final transcript would overwrite it on a client's screen.
    r["interims_after_final"] = sum(
        e.kind == "transcript" and not e.final_transcript for e in after
    )

    def first(kind: str) -> Received | None:
        return next((e for e in after if e.kind == kind), None)

    meta, audio, jpeg = first("audio"), first("media_audio"), first("media_frame")
    r.update(ttfa_meta_s=_since(meta and meta.t, t0), ttfa_s=_since(audio and audio.t, t0),
             ttff_s=_since(jpeg and jpeg.t, t0))  # fmt: skip
    media = [e for e in after if e.media]
    reply_audio = sum(float(e.data.get("duration_s", 0.0)) for e in after if e.kind == "audio")
    r["reply_audio_s"] = round(reply_audio, 3)
    last = log[end]
    if last.kind == "error" and r["error"] is None:
        r["error"] = f"error event: {last.data.get('reason')}"
    if media and last.kind == "done":
        span_s = last.t - media[0].t
        total = sum(e.size for e in after)
        video = sum(e.size for e in after if e.kind == "media_frame")
        if span_s > 0:
            r["bytes_per_s"] = round(total / span_s)
            r["video_bytes_per_s"] = round(video / span_s)
        if reply_audio > 0:
            r["client_rtf"] = round((media[-1].t - t0) / reply_audio, 3)
        timings = last.data.get("timings") or {}
        r["server_rtf"] = timings.get("rtf")
        r["server_render_fps"] = timings.get("render_fps")
        # The server's own clock, from when the turn started (the final transcript was ready).
        r["server_timings"] = {k: timings[k] for k in SERVER_TIMINGS if k in timings}
    if audio is not None and jpeg is not None:
        # Playback starts once the first audio and the first frame are in; a piece arriving
        # later than its moment on that clock would stall it.
        play0 = max(audio.t, jpeg.t)
        late = [e.t - (play0 + e.t_s) for e in media if e.t_s is not None]
        r["late_media"] = sum(x > LATE_TOLERANCE_S for x in late)
        r["max_late_s"] = round(max(late), 4) if late else None
    if span.t_inject is not None:
        r.update(_barge_in(log, span, final, end))
    elif last.kind == "interrupted" and r["error"] is None:
        r["error"] = f"interrupted without barge-in ({last.data.get('reason')})"
    return r


def _barge_in(log: Sequence[Received], span: TurnSpan, final: int, end: int) -> dict[str, Any]:
    cut = next((i for i in range(final + 1, end + 1) if log[i].kind == "interrupted"), None)
    if cut is None:
        return {"barge_in_missed": True}
    media = [log[i].t for i in range(final + 1, cut) if log[i].media and log[i].t >= span.t_inject]
    leaked = 0
    for entry in log[cut + 1 :]:
        if entry.final_transcript:  # the next turn's own media may follow from here
            break
        leaked += entry.media
    return {
        "stop_s": _since(log[cut].t, span.t_inject),
        "last_media_s": _since(media[-1], span.t_inject) if media else 0.0,
        "media_after_interrupted": leaked,
        "interrupted": {k: log[cut].data.get(k) for k in ("reason", "played_s", "spoken")},
    }


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """n, p50 and p95 (linear interpolation) of the values that exist."""
    xs = [v for v in values if v is not None]
    out: dict[str, Any] = {"n": len(xs)}
    for name, q in (("p50", 0.5), ("p95", 0.95)):
        v = quantile(xs, q)
        out[name] = None if v is None else round(v, 4)
    return out


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A variant's figures over its turns."""
    ok = [r for r in records if r.get("error") is None]
    done = [r for r in ok if r.get("client_rtf") is not None]
    barge = [r for r in records if r.get("barge_in")]
    wers = [r["wer"] for r in records if r.get("wer") is not None]
    bps = spread([r.get("bytes_per_s") for r in done])
    video = spread([r.get("video_bytes_per_s") for r in done])

    def of(key: str, rows=ok) -> dict[str, Any]:
        return spread([r.get(key) for r in rows])

    return {
        "turns": len(records),
        "errored": len(records) - len(ok),
        "errors": [f"{r['clip']}: {r['error']}" for r in records if r.get("error")],
        "ttfa_s": of("ttfa_s"),
        "ttff_s": of("ttff_s"),
        "endpoint_s": of("endpoint_s"),
        "final_transcript_s": of("final_transcript_s"),
        "transcript": {
            "n": len(wers),
            "exact": sum(w == 0 for w in wers),
            "wer_mean": round(sum(wers) / len(wers), 4) if wers else None,
        },
        "barge_in": {
            "turns": len(barge),
            "missed": sum(bool(r.get("barge_in_missed")) for r in barge),
            "stop_s": spread([r.get("stop_s") for r in barge]),
            "last_media_s": spread([r.get("last_media_s") for r in barge]),
            "media_after_interrupted": sum(r.get("media_after_interrupted", 0) for r in barge),
        },
        "client_rtf": of("client_rtf", done),
        "server_rtf": of("server_rtf", done),
        "server_render_fps": of("server_render_fps", done),
        "late_media": sum(r.get("late_media", 0) for r in done),
        "interims_after_final": sum(r.get("interims_after_final", 0) for r in records),
        "bytes_per_s": bps,
        "mbit_per_s_p50": _mbit(bps["p50"]),
        "video_mbit_per_s_p50": _mbit(video["p50"]),
    }


def _mbit(bytes_per_s: float | None) -> float | None:
    return None if bytes_per_s is None else round(bytes_per_s * 8 / 1e6, 3)
