"""Chaos: kill a replica's process mid-turn under a small concurrent load; prints JSON.

A few clients each open a session and start a seconds-long text turn (fake backends with a slow
TTS); once every turn is speaking (its first reply sentence went to the TTS), the process of one
replica of a deployment (the TTS, or the router) is killed with SIGKILL, as the kernel's OOM
killer or a lost node would. Counted:
  - turns (those in flight at the fault) completed, failed cleanly (an `error` event, a non-200
    status or a closed stream, within `turn_timeout_s`), and hung (no end within it: must be 0);
  - attempts refused while the deployment recovered (each client retries every second);
  - sessions that resumed: a later turn on the same session_id completed, and the session's
    history holds it and every turn of the session that completed before;
  - audit rows left "started" after `stale_wait_s` (must be 0: the router closes abandoned turns,
    `storage.stale_turn_s`).

    python -m loadtests.chaos [--kill tts|router|both] [--clients 4] [--port 8012]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.machine import describe
from services.core.config import AppConfig
from services.storage.transcripts import TranscriptStore

STALE_TURN_S = 30.0  # the lowest storage.stale_turn_s allows


def chaos_config(name: str, port: int, state_dir: Path, small_cpu: float = 0.05) -> AppConfig:
    """Fake stages; each sentence's speech takes 1 s, so a 3-sentence turn lasts ~3-4 s."""
    actor = {"ray_actor_options": {"num_cpus": small_cpu}}
    options = {
        "asr": {},
        "llm": {"ttft_s": 0.2},
        "tts": {"latency_s": 1.0},
        "render": {"width": 32, "height": 32},
    }
    return AppConfig(
        name=name,
        stages={s: {"backend": "fake", "options": o, "serve": actor} for s, o in options.items()},
        router={"serve": actor},
        http={"host": "127.0.0.1", "port": port},
        storage={
            "sqlite_path": str(state_dir / f"{name}.sqlite3"),
            "stale_turn_s": STALE_TURN_S,
        },
        personas={"embedder": "hashing", "index_dir": str(state_dir / f"{name}-index")},
    )


def replica_pid(app: str, deployment: str) -> int:
    """The PID of a live replica of `app`'s `deployment`, from Ray's state API (a local Ray
    without the dashboard has no state API server: then the process title Ray gives it)."""
    class_name = f"ServeReplica:{app}:{deployment}"
    try:
        from ray.util.state import list_actors

        actors = list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")])
        if actors:
            return int(actors[0].pid)
    except Exception:  # noqa: BLE001 - no state API server: fall back to the process table
        pass
    import psutil

    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if cmdline.startswith(f"ray::{class_name}"):
            return process.info["pid"]
    raise LookupError(f"no live process of {class_name}")


def one_turn(
    url: str, session_id: str, text: str, timeout_s: float, speaking: threading.Event | None = None
) -> str:
    """'completed', 'failed' (cleanly) or 'hung' (no end within `timeout_s`); `speaking` is set
    at the turn's first reply sentence, which the router hands to the TTS."""
    deadline = time.monotonic() + timeout_s
    body = {"text": text, "session_id": session_id}
    try:
        with httpx.stream(
            "POST", f"{url}/v1/turn", json=body, timeout=httpx.Timeout(10, read=timeout_s)
        ) as response:
            if response.status_code != 200:
                return "failed"
            for line in response.iter_lines():
                if time.monotonic() > deadline:
                    return "hung"
                kind = json.loads(line)["type"] if line else None
                if kind == "reply" and speaking is not None:
                    speaking.set()
                if kind in ("done", "error"):
                    return "completed" if kind == "done" else "failed"
        return "failed"  # the stream closed without an end event
    except httpx.TimeoutException:
        return "hung"
    except (httpx.HTTPError, json.JSONDecodeError):
        return "failed"  # a closed or broken stream


class Client(threading.Thread):
    """One session: a turn that the fault hits, then turns until one completes."""

    def __init__(self, url: str, index: int, fault_done: threading.Event, timeout_s: float):
        super().__init__(daemon=True)
        self.url, self.index, self.fault_done, self.timeout_s = url, index, fault_done, timeout_s
        self.session_id: str | None = None
        self.first = "not run"
        self.refused = 0
        self.resumed = False
        self.hung_after = 0
        self.speaking = threading.Event()
        self.completed_texts: list[str] = []

    def run(self) -> None:
        response = httpx.post(f"{self.url}/v1/sessions", json={}, timeout=30)
        response.raise_for_status()
        self.session_id = response.json()["session_id"]
        text = f"client {self.index}: tell me something long"
        try:
            self.first = one_turn(self.url, self.session_id, text, self.timeout_s, self.speaking)
        finally:
            self.speaking.set()  # the turn ended (or never spoke): the fault need not wait
        if self.first == "completed":
            self.completed_texts.append(text)
        self.fault_done.wait()
        text = f"client {self.index}: are you still there?"
        give_up = time.monotonic() + 3 * self.timeout_s
        while time.monotonic() < give_up:
            outcome = one_turn(self.url, self.session_id, text, self.timeout_s)
            if outcome == "completed":
                self.completed_texts.append(text)
                self.resumed = self._history_holds(self.completed_texts)
                return
            self.hung_after += outcome == "hung"
            self.refused += outcome == "failed"
            time.sleep(1)

    def _history_holds(self, texts: list[str]) -> bool:
        response = httpx.get(f"{self.url}/v1/sessions/{self.session_id}", timeout=30)
        said = [m["content"] for m in response.json().get("history", []) if m["role"] == "user"]
        return response.status_code == 200 and all(text in said for text in texts)


def run_chaos(
    url: str,
    app: str,
    deployment: str,
    transcripts: TranscriptStore,
    *,
    clients: int = 4,
    fault_after_s: float = 0.3,
    turn_timeout_s: float = 30.0,
    stale_wait_s: float = STALE_TURN_S + 20,
) -> dict[str, Any]:
    """Kill `deployment`'s replica `fault_after_s` after every client's turn began speaking; the
    counts. (A fixed 1.5 s from the start once let all four turns complete in CI, the fault
    hitting none; now it waits for the turns themselves.)"""
    fault_done = threading.Event()
    threads = [Client(url, i, fault_done, turn_timeout_s) for i in range(clients)]
    for thread in threads:
        thread.start()
    give_up = time.monotonic() + turn_timeout_s
    for thread in threads:
        thread.speaking.wait(max(0.0, give_up - time.monotonic()))
    time.sleep(fault_after_s)
    pid = replica_pid(app, deployment)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    for thread in threads:  # the in-flight turns end (or hang) first
        while thread.is_alive() and thread.first == "not run":
            thread.join(0.2)
    fault_done.set()
    for thread in threads:
        thread.join(4 * turn_timeout_s + 30)
    sessions = [t.session_id for t in threads if t.session_id]
    deadline = killed_at + stale_wait_s
    while True:
        started = sum(len(transcripts.turns(session_id=s, finished=False)) for s in sessions)
        if started == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    firsts = [t.first for t in threads]
    return {
        "killed": deployment,
        "pid": pid,
        "clients": clients,
        "turns_completed": firsts.count("completed"),
        "turns_failed_cleanly": firsts.count("failed"),
        "turns_hung": firsts.count("hung") + sum(t.hung_after for t in threads),
        "attempts_refused_while_recovering": sum(t.refused for t in threads),
        "sessions_resumed": sum(t.resumed for t in threads),
        "audit_rows_left_started": started,
        "settled_within_s": round(time.monotonic() - killed_at, 1),
        "clients_stuck": sum(t.is_alive() for t in threads),
    }


def main(argv: list[str] | None = None) -> int:
    from deployments import ray_cluster
    from services.storage.database import open_storage

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill", choices=("tts", "router", "both"), default="both")
    parser.add_argument("--clients", type=int, default=4, help="concurrent sessions")
    parser.add_argument("--port", type=int, default=8012, help="HTTP port of the local app")
    args = parser.parse_args(argv)
    config = chaos_config("chaos", args.port, Path(tempfile.mkdtemp(prefix="chaos-")))
    url = ray_cluster.start(config, num_cpus=4)
    storage = open_storage(config.storage)
    try:
        kills = ("tts", "router") if args.kill == "both" else (args.kill,)
        report = {
            "benchmark": "chaos",
            "machine": describe(),
            "runs": [
                run_chaos(url, config.name, kill, storage.transcripts, clients=args.clients)
                for kill in kills
            ],
        }
    finally:
        storage.close()
        ray_cluster.stop()
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
