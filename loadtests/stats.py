"""Figures from the per-turn records the locust users write (`turns.jsonl`).

Pure functions of the records: counts by outcome, latency quantiles, failures by cause, fixed
windows with their SLO verdicts, the most turns/min sustained within the SLO, a session's turn
cycle and the latency at the lightest load (the capacity planner's baseline).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from loadtests.slo import Slo


def quantile(values: list[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default), q in [0, 1]; None for no values."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def distribution(values: list[float]) -> dict[str, float | int | None]:
    xs = [v for v in values if v is not None]
    out: dict[str, float | int | None] = {"n": len(xs)}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
        v = quantile(xs, q)
        out[name] = None if v is None else round(v, 4)
    out["mean"] = round(sum(xs) / len(xs), 4) if xs else None
    out["max"] = round(max(xs), 4) if xs else None
    return out


def load_records(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed locust
    return records


OUTCOMES = ("ok", "rejected", "timeout", "error")


def figures_of(records: list[dict[str, Any]], span_s: float | None = None) -> dict[str, Any]:
    """Counts, rates and latency quantiles of a set of turn records (`span_s`: for turns/min)."""
    counts = {o: sum(r["outcome"] == o for r in records) for o in OUTCOMES}
    attempts = len(records)
    ok = [r for r in records if r["outcome"] == "ok"]
    figures: dict[str, Any] = {
        "attempts": attempts,
        "completed": counts["ok"],
        "rejected_503": counts["rejected"],
        "timeouts": counts["timeout"],
        "errors": counts["error"],
        "error_rate": (attempts - counts["ok"]) / attempts if attempts else None,
        "rejected_rate": counts["rejected"] / attempts if attempts else None,
        "timeout_rate": counts["timeout"] / attempts if attempts else None,
        "min_completed_turns": counts["ok"],
    }
    if span_s:
        figures["turns_per_min"] = round(60.0 * counts["ok"] / span_s, 2)
        figures["min_turns_per_min"] = figures["turns_per_min"]
    for metric in ("ttfa", "ttff", "turn", "stall"):
        dist = distribution([r.get(f"{metric}_s") for r in ok])
        for p in ("p50", "p90", "p95", "p99"):
            figures[f"{metric}_{p}_s"] = dist[p]
    return figures


def latency_table(records: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if r["outcome"] == "ok"]
    return {m: distribution([r.get(f"{m}_s") for r in ok]) for m in ("ttfa", "ttff", "turn")}


def failures_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Failures by cause: 503 rejections (fast, by design) apart from timeouts and errors."""
    failed = [r for r in records if r["outcome"] != "ok"]
    by_error: dict[str, int] = {}
    for r in failed:
        key = r.get("error") or r["outcome"]
        by_error[key] = by_error.get(key, 0) + 1
    rejected = [r for r in failed if r["outcome"] == "rejected"]
    refused = [r for r in rejected if not r.get("streamed")]
    return {
        "total": len(failed),
        "rejected_503": len(rejected),
        "timeouts": sum(r["outcome"] == "timeout" for r in failed),
        "errors": sum(r["outcome"] == "error" for r in failed),
        "rejected_at": {
            "connect": sum(r.get("phase") == "connect" for r in rejected),
            "before_reply": len(refused) - sum(r.get("phase") == "connect" for r in rejected),
            "mid_reply": len(rejected) - len(refused),
        },
        # How long a client waited to be told "503" before any reply: overload must answer
        # fast, not hang. (A reply cut short by a 503 mid-stream ran for a while first.)
        "rejected_latency_s": distribution([r["t1"] - r["t0"] for r in refused]),
        "by_error": dict(sorted(by_error.items(), key=lambda kv: -kv[1])),
    }


def notes_of(records: list[dict[str, Any]], target: dict[str, Any]) -> list[str]:
    """Things a reader of the figures should know, found in this run's failures."""
    notes = ["2-core shared machine: figures are noisy (±15-20% between back-to-back runs)."]
    ws_500 = sum(r.get("phase") == "connect" and r.get("status") == 500 for r in records)
    if ws_500:
        notes.append(
            f"{ws_500} WebSocket connects were refused with HTTP 500, not 503: Ray Serve's proxy "
            "answers an upgrade beyond the router's max_ongoing_requests + max_queued_requests "
            "with 500 (it sends an HTTP 503 response on a WebSocket scope, which uvicorn turns "
            "into 500). They are counted as errors, not as 503 rejections."
        )
    dropped = [
        r
        for r in records
        if r["kind"] == "ws"
        and r["outcome"] == "error"
        and (r.get("error") or "").startswith("connection: ")
    ]
    if dropped:
        notes.append(
            f"{len(dropped)} WebSocket turns or connects ended with the server dropping the "
            "connection (reset, broken pipe, closed): under load Serve's single uvicorn proxy "
            "lags, and its keepalive (ping every 20 s, 20 s to answer) can time out although "
            "this client answers pings. Counted as errors, not as 503s."
        )
    timeouts = [r for r in records if r["outcome"] == "timeout"]
    if timeouts:
        where = sorted({r.get("phase", "turn") for r in timeouts})
        notes.append(
            f"{len(timeouts)} turns timed out ({', '.join(where)}): requests that wait without "
            "bound (an unbounded queue, or a WebSocket connect queued behind a full router) "
            "show up here instead of as fast 503s."
        )
    return notes


def users_between(history: list[tuple[float, int]], a: float, b: float) -> list[int]:
    return [u for t, u in history if a <= t < b]


def windows_of(
    records: list[dict[str, Any]],
    history: list[tuple[float, int]],
    start: float,
    end: float,
    slo: Slo,
) -> list[dict[str, Any]]:
    """Fixed windows over the run: users, throughput, latency and the SLO verdict of each."""
    out = []
    a = start
    while a < end:
        b = min(a + slo.window_s, end)
        if b - a < slo.window_s / 2 and out:
            break  # a sliver at the end says nothing about sustained throughput
        inside = [r for r in records if a <= r["t1"] < b]
        users = users_between(history, a, b) or [r["users"] for r in inside if r.get("users")]
        figures = figures_of(inside, span_s=b - a)
        per_window = [k for k in slo.objectives if not k.startswith("min_")]
        checks = slo.check(figures, keys=per_window)
        enough = figures["completed"] >= max(1, slo.min_window_turns)
        out.append(
            {
                "start_s": round(a - start, 1),
                "end_s": round(b - start, 1),
                "users": max(users) if users else 0,
                "users_mean": round(sum(users) / len(users), 1) if users else 0,
                **{
                    k: figures[k]
                    for k in (
                        "attempts",
                        "completed",
                        "rejected_503",
                        "timeouts",
                        "errors",
                        "turns_per_min",
                        "ttfa_p95_s",
                        "ttff_p50_s",
                        "ttff_p95_s",
                        "turn_p95_s",
                    )
                },
                "error_rate": round_or_none(figures["error_rate"]),
                "within_slo": enough and all(c["passed"] for c in checks),
                "failed_objectives": [c["objective"] for c in checks if not c["passed"]]
                + ([] if enough else ["min_window_turns"]),
            }
        )
        a = b
    return out


def capacity_of(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """The most turns/min any window sustained while meeting every per-window objective."""
    good = [w for w in windows if w["within_slo"]]
    best = max(good, key=lambda w: w["turns_per_min"], default=None)
    peak = max(windows, key=lambda w: w["turns_per_min"] or 0, default=None)
    return {
        "max_sustained_turns_per_min_within_slo": best["turns_per_min"] if best else 0.0,
        "at_users": best["users"] if best else None,
        "window": [best["start_s"], best["end_s"]] if best else None,
        "peak_turns_per_min_any": peak["turns_per_min"] if peak else 0.0,
        "peak_at_users": peak["users"] if peak else None,
        "windows_within_slo": len(good),
        "windows": len(windows),
    }


def session_cycle_s(records: list[dict[str, Any]]) -> float | None:
    """Median time between one user's consecutive turns: speak + turn + listen + think."""
    by_user: dict[str, list[float]] = {}
    for r in records:
        if r["outcome"] == "ok" and r.get("phase", "turn") == "turn":
            by_user.setdefault(r["user"], []).append(r["t0"])
    gaps = []
    for starts in by_user.values():
        starts.sort()
        gaps += [b - a for a, b in zip(starts, starts[1:], strict=False)]
    value = quantile(gaps, 0.5)
    return None if value is None else round(value, 3)


def baseline_of(windows: list[dict[str, Any]], records, start: float) -> dict[str, Any]:
    """Latency at the lightest load: the planner adds queueing on top of this."""
    candidates = [w for w in windows if w["completed"] and w["ttff_p95_s"] is not None]
    if not candidates:
        return {}
    low = min(w["users"] for w in candidates)
    inside = [
        r
        for r in records
        for w in candidates
        if w["users"] == low and w["start_s"] <= r["t1"] - start < w["end_s"]
    ]
    figures = figures_of(inside)
    return {
        "users": low,
        "turns": figures["completed"],
        "spans_s": [[w["start_s"], w["end_s"]] for w in candidates if w["users"] == low],
        **{
            k: figures[k]
            for k in (
                "ttfa_p50_s",
                "ttfa_p95_s",
                "ttff_p50_s",
                "ttff_p95_s",
                "turn_p50_s",
                "turn_p95_s",
            )
        },
    }


def round_or_none(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
