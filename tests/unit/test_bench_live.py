"""The live benchmark's pure parts: WER, voiced spans, message parsing, the in-memory socket,
the client's real-time microphone and the per-turn figures (no models, no server)."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from loadtests.bench_live import parse_args
from loadtests.live_client import LiveClient, MemorySocket, classify, voiced_span
from loadtests.live_turns import Clip, TurnSpan, analyse_turn, normalise, spread, summarise, wer
from services.server.media import KIND_AUDIO, KIND_JPEG, pack


def test_wer_normalises_case_and_punctuation():
    assert normalise("Hello! Can you tell me, a-little?") == [
        "hello", "can", "you", "tell", "me", "a", "little"]  # fmt: skip
    assert wer("Hello! Can you help?", "hello can you help") == 0.0
    assert wer("one two three four", "one three four five") == pytest.approx(0.5)
    assert wer("a b", "") == 1.0
    assert wer("", "") == 0.0


def test_voiced_span_finds_the_tone_inside_silence():
    rate = 16000
    x = np.zeros(rate, dtype=np.float32)
    x[4000:12000] = 0.5 * np.sin(np.arange(8000) * 2 * np.pi * 220 / rate)
    first, last = voiced_span(x, rate)
    assert 3990 <= first <= 4010 and 11980 <= last <= 12000
    with pytest.raises(ValueError):
        voiced_span(np.zeros(rate), rate)


def test_classify_parses_binary_headers_and_json():
    audio = classify(pack(KIND_AUDIO, 2, 3200, 1.25, b"\0" * 640), t=5.0)
    assert (audio.kind, audio.t_s, audio.size, audio.media) == ("media_audio", 1.25, 656, True)
    frame = classify(pack(KIND_JPEG, 0, 7, 0.28, b"jpeg"), t=5.1)
    assert frame.kind == "media_frame" and frame.t_s == pytest.approx(0.28)
    text = json.dumps({"type": "transcript", "text": "hi", "final": False})
    interim = classify(text, t=6.0)
    assert interim.kind == "transcript" and not interim.final_transcript
    assert interim.size == len(text)
    assert classify('{"type": "transcript", "text": "hi"}', 6.1).final_transcript


def _echo_server(sock: MemorySocket):
    async def serve():
        await sock.accept()
        while True:
            message = await sock.receive()
            if message["type"] == "websocket.disconnect":
                await sock.close()
                return
            if message.get("bytes") is not None:
                await sock.send_bytes(message["bytes"][::-1])
            else:
                await sock.send_json({"echo": json.loads(message["text"])})

    return serve()


def test_memory_socket_round_trip_in_one_loop():
    async def main():
        sock = MemorySocket()
        server = asyncio.create_task(_echo_server(sock))
        await sock.client.send(json.dumps({"type": "x"}))
        assert json.loads(await sock.client.recv()) == {"echo": {"type": "x"}}
        await sock.client.send(b"abc")
        assert await sock.client.recv() == b"cba"
        await sock.client.close()
        await asyncio.wait_for(server, 2)
        assert sock.closed == (1000, None)

    asyncio.run(main())


def test_memory_socket_across_threads():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def main():
        sock = MemorySocket(server_loop=loop, client_loop=asyncio.get_running_loop())
        done = asyncio.run_coroutine_threadsafe(_echo_server(sock), loop)
        for i in range(20):
            await sock.client.send(bytes([i, 1]))
            assert await sock.client.recv() == bytes([1, i])
        await sock.client.close()
        await asyncio.wrap_future(done)

    try:
        asyncio.run(main())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_client_streams_real_time_frames_and_marks_the_voiced_samples():
    async def main():
        sock = MemorySocket()
        frames: list[tuple[float, bytes]] = []

        async def server():
            while True:
                message = await sock.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    frames.append((asyncio.get_running_loop().time(), message["bytes"]))
                    continue
                kind = json.loads(message["text"])["type"]
                reply = {"start": {"type": "session", "session_id": "s1"},
                         "listen": {"type": "listening"}}[kind]  # fmt: skip
                await sock.send_json(reply)

        task = asyncio.create_task(server())
        client = LiveClient(sock.client, 16000)
        await client.open()
        pcm = np.arange(1, 1601, dtype="<i2").tobytes()  # 100 ms
        played = client.play(pcm, first_voiced=0, last_voiced=1599)
        t_first, t_last = await played.first_voiced, await played.last_voiced
        await asyncio.sleep(0.05)
        await client.close()
        await task
        return client, frames, t_first, t_last

    client, frames, t_first, t_last = asyncio.run(main())
    assert client.session_id == "s1"
    assert all(len(f) == 640 for _, f in frames)  # 20 ms of 16-bit 16 kHz
    audio = b"".join(f for _, f in frames)
    assert audio.find(np.arange(1, 1601, dtype="<i2").tobytes()) >= 0  # sent whole, in order
    assert 0.07 <= t_last - t_first <= 0.2  # paced in real time, not burst
    span = frames[-1][0] - frames[0][0]
    assert span >= 0.02 * (len(frames) - 1) * 0.8


def _clip(text="what is the time"):
    return Clip("q0", text, b"\0\0" * 16000, 16000, 100, 15000)


def _turn_log():
    def js(t, **data):
        return classify(json.dumps(data), t)

    return [
        js(10.0, type="speech_started", t_s=0.1),
        js(10.5, type="transcript", text="what is", final=False),
        js(11.6, type="speech_stopped", t_s=1.0),
        js(11.8, type="transcript", text="What is the time?"),
        js(11.9, type="reply", index=0, text="It is noon."),
        js(12.5, type="audio", index=0, start_s=0.0, duration_s=2.0, binary=True),
        classify(pack(KIND_AUDIO, 0, 0, 0.0, b"\0" * 6400), 12.5),
        classify(pack(KIND_JPEG, 0, 0, 0.0, b"j" * 1000), 12.6),
        classify(pack(KIND_AUDIO, 0, 3200, 0.2, b"\0" * 6400), 12.6),
        classify(pack(KIND_JPEG, 0, 10, 0.4, b"j" * 1000), 12.95),
        js(14.0, type="speech_started", t_s=3.0, barge_in=True),
        js(14.3, type="interrupted", reason="barge_in", played_s=1.5, spoken="It is"),
        classify(pack(KIND_JPEG, 0, 11, 0.44, b"j" * 1000), 14.35),  # leaked
        js(16.0, type="transcript", text="next"),
    ]


def test_analyse_a_barge_in_turn():
    log = _turn_log()
    span = TurnSpan(_clip(), start=0, t_last_voiced=11.0, end=11, barge_in=True, t_inject=13.9)
    r = analyse_turn(log, span)
    assert r["error"] is None and r["utterances"] == 1 and r["wer"] == 0.0
    assert r["endpoint_s"] == pytest.approx(0.6) and r["final_transcript_s"] == pytest.approx(0.8)
    assert r["ttfa_meta_s"] == pytest.approx(1.5) and r["ttfa_s"] == pytest.approx(1.5)
    assert r["ttff_s"] == pytest.approx(1.6) and r["reply_audio_s"] == 2.0
    assert r["stop_s"] == pytest.approx(0.4)
    assert r["last_media_s"] == 0.0  # nothing was sent after the injected speech started
    assert r["media_after_interrupted"] == 1
    assert r["interrupted"]["reason"] == "barge_in"
    assert r["late_media"] == 0  # every piece arrived before it plays


def test_analyse_a_completed_turn_and_summary():
    log = _turn_log()[:10]
    log.append(classify(json.dumps({"type": "done", "timings": {"rtf": 0.5}}), 13.0))
    span = TurnSpan(_clip(), start=0, t_last_voiced=11.0, end=10)
    r = analyse_turn(log, span)
    assert r["client_rtf"] == pytest.approx((12.95 - 11.0) / 2.0, abs=1e-3)
    assert r["server_rtf"] == 0.5
    total = sum(e.size for e in log[4:])
    assert r["bytes_per_s"] == round(total / 0.5)
    assert r["video_bytes_per_s"] == round(2 * 1016 / 0.5)
    summary = summarise([r, {"clip": "q1", "error": "no final transcript", "barge_in": False}])
    assert summary["turns"] == 2 and summary["errored"] == 1
    assert summary["ttff_s"]["p50"] == pytest.approx(1.6)
    assert summary["transcript"] == {"n": 1, "exact": 1, "wer_mean": 0.0}
    assert summary["mbit_per_s_p50"] == pytest.approx(r["bytes_per_s"] * 8 / 1e6, abs=1e-3)


def test_a_split_question_and_a_missing_transcript_are_errors():
    log = _turn_log()[:10]
    log.insert(1, classify(json.dumps({"type": "speech_stopped", "t_s": 0.4}), 10.4))
    r = analyse_turn(log, TurnSpan(_clip(), start=0, t_last_voiced=11.0, end=10))
    assert r["utterances"] == 2 and "2 utterances" in r["error"]
    r = analyse_turn(log, TurnSpan(_clip(), start=0, t_last_voiced=12.0, end=10))
    assert r["error"] == "no final transcript"


def test_spread_and_arguments():
    assert spread([None, 1.0, 2.0, 3.0]) == {"n": 3, "p50": 2.0, "p95": 2.9}
    assert spread([]) == {"n": 0, "p50": None, "p95": None}
    args = parse_args(["--variants", "floor,inproc", "--turns", "2"])
    assert args.variants == ["floor", "inproc"] and args.turns == 2
    with pytest.raises(SystemExit):
        parse_args(["--variants", "gpu"])
