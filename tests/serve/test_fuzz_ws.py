"""A bounded, seeded fuzzer of the WebSocket protocol (/v1/session) on a running app with keys.

Each case opens a socket with a valid key, sends a few valid setup messages, then the probe.
The probe must be answered within `CASE_TIMEOUT_S` by an `error` event with a 4xx status (and
the socket keeps serving: a second bad message gets its own 4xx), or by a clean close (a code
that is not 1006 "abnormal" or 1011 "server error"); a few probes are legal protocol (text
before start opens a session) and may end with `done`. Never a hang, never a 5xx; /healthz
and /readyz are fine afterwards.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from services.storage.database import open_storage
from tests.serve.conftest import fake_app_config

pytestmark = pytest.mark.serve

CASE_TIMEOUT_S = 20
MAX_AUDIO = 64 * 1024  # limits.max_audio_bytes of the fuzzed app: oversize audio stays cheap
RNG = random.Random(13)
START = json.dumps({"type": "start"})
END = json.dumps({"type": "audio_end"})
# Messages that answer nothing themselves (the setup of a probe).
SILENT = ("audio_start",)


# Cases that once killed the socket (1006), fixed since; kept by name so a report can say
# which: deeply nested JSON (RecursionError), lone surrogates in text and ids
# (UnicodeEncodeError in the audit log / SQLite), persona ids over 255 bytes (ENAMETOOLONG).
KNOWN_BUGS: dict[str, str] = {}


def msg(kind: str, **fields) -> str:
    return json.dumps({"type": kind, **fields})


def audio_start(fmt: str = "pcm16", **fields) -> str:
    return msg("audio_start", format=fmt, **{"sample_rate": 16000, **fields})


@dataclass
class Case:
    name: str
    probe: list[str | bytes]  # sent in order after the setup; the last one is answered
    setup: list[str] = field(default_factory=list)
    ends: frozenset[str] = frozenset({"error"})  # acceptable answers: error, close, done, session
    marks: tuple = ()


WRONG = [1, 1.5, True, [], {}, [1, "a"]]
ODD_IDS = [
    "../../etc/passwd",
    "..\\..\\windows",
    "x" * 300,
    "x" * 100_000,
    "ünïcødé-🙂-名前",
    "a\x00b",
    "%2e%2e%2f",
    ".",
    "/",
]


def cases() -> list[Case]:
    out: list[Case] = []
    add = out.append
    for i, raw in enumerate(["not json", "{", "", "\x00", '{"type": "start"', "[" * 100_000]):
        add(Case(f"malformed-json-{i}", [raw]))
    not_messages = ["null", "1", '"start"', "[]", "{}", '{"type": null}', '{"type": 1}',
                    '{"type": ["start"]}', '{"type": "warp"}']  # fmt: skip
    for i, raw in enumerate(not_messages):
        add(Case(f"not-a-message-{i}", [raw]))
    for value in WRONG:
        add(Case(f"start-session_id-{value!r}", [msg("start", session_id=value)]))
        add(Case(f"start-persona_id-{value!r}", [msg("start", persona_id=value)]))
        add(Case(f"start-media-{value!r}", [msg("start", media=value)]))
        add(Case(f"text-text-{value!r}", [msg("text", text=value)], [START]))
        add(Case(f"audio_start-format-{value!r}", [audio_start(fmt=value)], [START]))
        add(Case(f"audio_start-rate-{value!r}", [audio_start(sample_rate=value)], [START]))
        add(Case(f"listen-rate-{value!r}", [msg("listen", sample_rate=value)], [START]))
        add(Case(f"listen-mode-{value!r}", [msg("listen", mode=value)], [START]))
        if not isinstance(value, int | float):  # a number is a valid (silent) interrupt
            add(Case(f"interrupt-played_s-{value!r}", [msg("interrupt", played_s=value)], [START]))
    add(Case("interrupt-played_s-negative", [msg("interrupt", played_s=-1)], [START]))
    for value in (None, "", "   ", "\ud800"):
        add(Case(f"text-text-{value!r}", [msg("text", text=value)], [START]))
    add(Case("text-too-long", [msg("text", text="a" * 200_000)], [START]))
    # A rate audio_start accepts but no audio has: refused when the audio is decoded.
    add(Case("pcm16-rate-10**12", [b"\0\0" * 800, END], [START, audio_start(sample_rate=10**12)]))
    add(Case("binary-before-start", [b"\x00\x01"]))
    add(Case("random-binary-before-start", [RNG.randbytes(1000)]))
    add(Case("binary-without-audio_start", [b"\0\0" * 100], [START]))
    add(Case("oversize-binary", [b"\0" * (MAX_AUDIO + 2)], [START, audio_start()]))
    add(Case("oversize-text-frame", ["x" * (17 * 2**20)], ends=frozenset({"error", "close"})))
    add(Case("random-bytes-as-file", [RNG.randbytes(20_000), END], [START, audio_start("file")]))
    add(Case("odd-bytes-as-pcm16", [RNG.randbytes(20_001), END], [START, audio_start()]))
    add(Case("random-bytes-as-pcm16", [RNG.randbytes(16_000), END], [START, audio_start()],
             ends=frozenset({"error", "done"})))  # fmt: skip  # noise is still speech input
    add(Case("empty-audio", [END], [START, audio_start()]))
    add(Case("audio_end-without-audio_start", [END], [START]))
    add(Case("audio_end-before-start", [END]))
    add(Case("end_of_speech-without-listen", [msg("end_of_speech")], [START]))
    add(Case("text-before-start", [msg("text", text="hello")], ends=frozenset({"done"})))
    add(Case("start-twice", [START], [START], ends=frozenset({"session"})))
    for value in ODD_IDS + ["\ud800"]:
        # 404 (unknown), or 422 (an id that cannot be one), never a file read or a 500.
        add(Case(f"start-unknown-session-{value[:20]!r}", [msg("start", session_id=value)]))
        add(Case(f"start-unknown-persona-{value[:20]!r}", [msg("start", persona_id=value)]))
    names = [case.name for case in out]
    for case in out:  # duplicate names get pytest's suffixes: 0, 1, ...
        if names.count(case.name) > 1:
            same = [c for c in out if c.name == case.name]
            for i, twin in enumerate(same):
                twin.name = f"{twin.name}{i}"
    for case in out:
        if case.name in KNOWN_BUGS:
            case.marks = (pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[case.name]),)
    return out


CASES = cases()


@pytest.fixture(scope="module")
def ws_app(serve_instance):
    """(WebSocket URL, base URL, admin headers) of an app that requires keys."""
    from deployments import ray_cluster

    port, state_dir = serve_instance
    config = fake_app_config(
        "wsfuzz",
        port,
        state_dir,
        auth={"mode": "keys", "key_cache_s": 5},
        limits={"max_audio_bytes": MAX_AUDIO},
    )
    url = ray_cluster.deploy(config, route_prefix="/wsfuzz")
    storage = open_storage(config.storage)
    _, token = storage.keys.create("fuzzers", ["*"], admin=True)
    storage.close()
    return (
        url.replace("http://", "ws://") + "/v1/session",
        url,
        {"Authorization": f"Bearer {token}"},
    )


async def _answer(ws) -> tuple[str, dict]:
    """The next answer: ("error"|"done"|"session", event) or ("close", {code, reason})."""
    while True:
        try:
            raw = await ws.recv()
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return "close", {"code": rcvd.code if rcvd else 1006, "reason": rcvd and rcvd.reason}
        if isinstance(raw, bytes):
            continue  # binary media of a turn in progress
        event = json.loads(raw)
        if event["type"] in ("error", "done", "session"):
            return event["type"], event


async def _run(case: Case, url: str, headers: dict) -> list[tuple[str, dict]]:
    answers = []
    async with websockets.connect(url, additional_headers=headers, max_size=2**25) as ws:
        for message in case.setup:
            await ws.send(message)
            if json.loads(message)["type"] not in SILENT:
                kind, event = await _answer(ws)
                assert kind in ("session", "done"), (message, event)
        for message in case.probe:
            await ws.send(message)
        kind, event = await _answer(ws)
        if kind == "session" and "session" not in case.ends:
            kind, event = await _answer(ws)  # text before start: the session, then the turn
        answers.append((kind, event))
        if kind != "close":  # the socket still serves: another bad message, another 4xx
            await ws.send(msg("warp"))
            answers.append(await _answer(ws))
    return answers


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def test_every_bad_message_is_answered_with_a_4xx_or_a_clean_close(case, ws_app):
    url, _, admin = ws_app
    answers = asyncio.run(asyncio.wait_for(_run(case, url, admin), CASE_TIMEOUT_S))
    (kind, event), rest = answers[0], answers[1:]
    assert kind in case.ends, (kind, event)
    if kind == "error":
        assert 400 <= event["status"] < 500 and event["reason"], event
    if kind == "close":
        assert event["code"] not in (1006, 1011), event
    for kind, event in rest:
        assert (kind, event["status"]) == ("error", 422), event


def test_the_cluster_is_healthy_after_the_fuzzing(ws_app):
    _, url, _ = ws_app
    assert httpx.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
