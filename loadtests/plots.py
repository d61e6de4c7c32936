"""The load-test report's figure (report.png), drawn with matplotlib.

Four panels: load and turns by outcome, latency per turn, replicas and queue depth over time,
and latency and replicas against the number of users.

matplotlib is imported only when a plot is drawn: it is an optional extra (`loadtest`), and
without it the report is written without the figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtests.stage_costs import STAGES


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency, throughput and replicas over time, and latency/replicas against users."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (ax_load, ax_lat), (ax_rep, ax_vs) = axes
    points = report["turn_points"]
    ok = [p for p in points if p[2] == "ok"]
    ttff_limit = next(
        (c["limit"] for c in report["slo"]["checks"] if c["objective"].startswith("ttff_p")), None
    )

    # Load and throughput: users, and cumulative turns by outcome.
    users = report["users"]
    if users:
        ax_load.plot([t for t, _ in users], [u for _, u in users], color="black", label="users")
    ax_load.set_ylabel("users")
    ax_load.set_xlabel("time (s)")
    ax_load.yaxis.set_major_locator(MaxNLocator(integer=True))
    twin = ax_load.twinx()
    for outcome, color, label in (
        ("ok", "tab:green", "completed"),
        ("rejected", "tab:red", "503"),
        ("timeout", "tab:purple", "timeouts"),
        ("error", "tab:gray", "errors"),
    ):
        times = [p[0] for p in points if p[2] == outcome]
        if times:
            twin.step(times, range(1, len(times) + 1), where="post", color=color, label=label)
    twin.set_ylabel("turns (cumulative)")
    twin.legend(loc="upper right", fontsize=8)
    ax_load.legend(loc="upper left", fontsize=8)
    ax_load.set_title("Load, and turns by outcome")

    # Latency of every completed turn, window p95, failures along the bottom.
    ax_lat.plot([p[0] for p in ok], [p[4] for p in ok], ".", alpha=0.5, label="TTFF (turn)")
    ax_lat.plot(
        [p[0] for p in ok], [p[3] for p in ok], "x", alpha=0.4, markersize=4, label="TTFA (turn)"
    )
    windows = [w for w in report["windows"] if w["ttff_p95_s"] is not None]
    if windows:
        xs = [x for w in windows for x in (w["start_s"], w["end_s"])]
        ax_lat.plot(
            xs,
            [w["ttff_p95_s"] for w in windows for _ in range(2)],
            color="tab:orange",
            label="TTFF p95 (window)",
        )
    if ttff_limit is not None:
        ax_lat.axhline(ttff_limit, color="red", linestyle=":", label="TTFF SLO")
    for outcome, marker, color, label in (
        ("rejected", "v", "tab:red", "503"),
        ("timeout", "X", "tab:purple", "timeout"),
    ):
        times = [p[0] for p in points if p[2] == outcome]
        if times:
            ax_lat.plot(times, [0] * len(times), marker, color=color, label=label, alpha=0.6)
    ax_lat.set_ylabel("seconds from end of input")
    ax_lat.set_xlabel("time (s)")
    ax_lat.set_ylim(bottom=-0.05 * max([ttff_limit or 1] + [p[4] or 0 for p in ok]))
    ax_lat.legend(loc="upper left", fontsize=8)
    ax_lat.set_title("Latency per turn")

    # Replicas per stage, and requests waiting in front of the stages.
    series = report["replicas"]["series"]
    times = [s["t"] for s in series]
    for name in (*STAGES, "router"):
        counts = [s.get("replicas", {}).get(name) for s in series]
        if any(c is not None for c in counts):
            ax_rep.step(times, counts, where="post", label=name, linewidth=2, alpha=0.8)
    ax_rep.set_ylabel("running replicas")
    ax_rep.set_xlabel("time (s)")
    ax_rep.yaxis.set_major_locator(MaxNLocator(integer=True))
    if any("queued" in s for s in series):
        twin = ax_rep.twinx()
        waiting = [sum(s.get("queued", {}).get(n, 0) for n in STAGES) for s in series]
        flight = [sum(s.get("ongoing", {}).get(n, 0) for n in STAGES) for s in series]
        twin.plot(times, waiting, color="black", linestyle="--", label="stage calls queued")
        twin.plot(times, flight, color="grey", linestyle=":", label="stage calls in flight")
        twin.set_ylabel("stage calls")
        twin.legend(loc="upper right", fontsize=8)
    ax_rep.legend(loc="upper left", fontsize=8)
    ax_rep.set_title("Replicas per stage and queue depth")

    # Against users: each turn's TTFF, window p95, and stage replicas at each sample.
    ax_vs.plot([p[1] for p in ok], [p[4] for p in ok], ".", alpha=0.4, label="TTFF (turn)")
    if windows:
        ax_vs.plot(
            [w["users"] for w in windows],
            [w["ttff_p95_s"] for w in windows],
            "o",
            color="tab:orange",
            label="TTFF p95 (window, at its peak users)",
        )
    if ttff_limit is not None:
        ax_vs.axhline(ttff_limit, color="red", linestyle=":")
    ax_vs.set_xlabel("users")
    ax_vs.set_ylabel("seconds")
    ax_vs.xaxis.set_major_locator(MaxNLocator(integer=True))
    sampled = [s for s in series if s.get("replicas") and s.get("users") is not None]
    if sampled:
        twin = ax_vs.twinx()
        twin.plot(
            [s["users"] for s in sampled],
            [sum(s["replicas"].get(n, 0) for n in STAGES) for s in sampled],
            "s",
            color="tab:brown",
            alpha=0.3,
            label="stage replicas (sample)",
        )
        twin.set_ylabel("stage replicas, all stages", color="tab:brown")
        twin.yaxis.set_major_locator(MaxNLocator(integer=True))
        twin.legend(loc="upper right", fontsize=8)
    ax_vs.legend(loc="upper left", fontsize=8)
    ax_vs.set_title("Latency and replicas vs users")

    verdict = "PASS" if report["slo"]["passed"] else "FAIL"
    fig.suptitle(f"avatar load test {report['shape']['spec']}: SLO {verdict}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
