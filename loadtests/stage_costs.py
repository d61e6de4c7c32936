"""Seconds of work each stage does per turn: what the capacity planner (`avatar plan`) needs.

From the stages' own latency histogram (scraped from Ray's metrics exporter) when it was
reachable, else from the router's per-turn timings in each `done` event.
"""

from __future__ import annotations

from typing import Any

STAGES = ("asr", "llm", "tts", "render")


def stage_costs(
    records: list[dict[str, Any]],
    counters: dict[str, dict[str, float]] | None,
    deployments: dict[str, Any] | None,
    backends: dict[str, str] | None,
) -> dict[str, Any]:
    """Seconds of stage work per completed turn, and the calls that make it up.

    Replica-side durations come from the stages' own histogram (`avatar_stage_latency_seconds`,
    scraped from Ray's exporter) when it was reachable; otherwise from the router's per-turn
    timings in each `done` event, which also include any queueing in front of the stage.
    """
    ok = [r for r in records if r["outcome"] == "ok" and r.get("server")]
    out: dict[str, Any] = {}
    # Router view, per turn: (seconds, calls).
    router: dict[str, list[tuple[float, float]]] = {s: [] for s in STAGES}
    for r in ok:
        t, n = r["server"], max(1, int(r.get("audio_events") or 1))
        if t.get("asr_s"):
            router["asr"].append((t["asr_s"], 1))
        if t.get("llm_done_s"):
            router["llm"].append((max(0.0, t["llm_done_s"] - t.get("asr_s", 0.0)), 1))
        if t.get("tts_s"):
            router["tts"].append((t["tts_s"], n))
        if t.get("render_s"):
            router["render"].append((t["render_s"], n))
    turns_server = (counters or {}).get("turns", {}).get("all", 0.0)
    for stage in STAGES:
        entry: dict[str, Any] = {}
        calls = (counters or {}).get("stage_calls", {}).get(stage, 0.0)
        seconds = (counters or {}).get("stage_seconds", {}).get(stage, 0.0)
        if calls > 0 and turns_server > 0:
            entry = {
                "source": "ray_metrics",
                "seconds_per_call": round(seconds / calls, 4),
                "calls_per_turn": round(calls / turns_server, 3),
                "seconds_per_turn": round(seconds / turns_server, 4),
                "calls": int(calls),
            }
        elif router[stage]:
            total_s = sum(s for s, _ in router[stage])
            total_calls = sum(n for _, n in router[stage])
            entry = {
                "source": "turn_timings",
                "seconds_per_call": round(total_s / total_calls, 4),
                "calls_per_turn": round(total_calls / len(ok), 3),
                "seconds_per_turn": round(total_s / len(ok), 4),
                "calls": int(total_calls),
            }
        if router[stage]:
            entry["router_seconds_per_turn"] = round(sum(s for s, _ in router[stage]) / len(ok), 4)
        options = (deployments or {}).get(stage) or {}
        actor = options.get("ray_actor_options") or {}
        entry.update(
            backend=(backends or {}).get(stage),
            max_ongoing_requests=options.get("max_ongoing_requests"),
            num_cpus=actor.get("num_cpus"),
            num_gpus=actor.get("num_gpus", 0.0),
        )
        out[stage] = entry
    return out
