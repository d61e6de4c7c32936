"""The load-test report for people (report.md), from the dict `report.build_report` makes.

Verdict and headline figures first, then the SLO checks, latency, failures by cause, windows,
replicas and per-stage costs; `fmt` shows a missing figure as a dash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fmt(value, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def markdown(report: dict[str, Any]) -> str:
    """The report for people: verdict, headline figures, failures, windows, scaling, costs."""
    slo, lat, fail, cap = report["slo"], report["latency_s"], report["failures"], report["capacity"]
    shape, target, turns = report["shape"], report["target"], report["turns"]
    verdict = "PASS" if slo["passed"] else "FAIL"
    lines = [
        f"# Load test: {verdict}",
        "",
        f"- target: {target['url']} (app `{target['app']}`, backends "
        f"{', '.join(f'{k}={v}' for k, v in (target.get('backends') or {}).items()) or '?'})",
        f"- shape: `{shape['spec']}` ({shape['duration_s']:.0f} s, up to {shape['max_users']} "
        f"users); personas: {', '.join(report['run']['personas'])}",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores "
        "(shared; figures are noisy)",
        f"- turns: {turns['completed']} completed of {turns['attempts']} "
        f"({fmt(turns['turns_per_min'])} turns/min over the run)",
        f"- **max sustained turns/min within SLO: "
        f"{fmt(cap['max_sustained_turns_per_min_within_slo'])}** "
        f"(at {fmt(cap['at_users'])} users; {cap['windows_within_slo']}/{cap['windows']} "
        f"windows of {slo['window_s']:g} s within SLO; peak any window "
        f"{fmt(cap['peak_turns_per_min_any'])})",
        "",
        "## SLO",
        "",
        "| objective | limit | value | |",
        "|---|---|---|---|",
    ]
    for c in slo["checks"]:
        value = c["value"]
        shown = fmt(value, digits=4) if isinstance(value, float) else fmt(value)
        mark = "ok" if c["passed"] else "**missed**"
        lines.append(f"| {c['objective']} | {c['op']} {c['limit']:g} | {shown} | {mark} |")
    lines += [
        "",
        "## Latency (s, from the end of the user's input)",
        "",
        "| | n | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (
        ("ttfa", "time to first audio"),
        ("ttff", "time to first frame"),
        ("turn", "whole turn"),
    ):
        d = lat[name]
        lines.append(
            f"| {label} | {d['n']} | {fmt(d['p50'])} | {fmt(d['p95'])} | "
            f"{fmt(d['p99'])} | {fmt(d['max'])} |"
        )
    if len(report["per_persona"]) > 1:
        lines += [
            "",
            "| persona | completed | failed | TTFF p50 | TTFF p95 |",
            "|---|---|---|---|---|",
        ]
        for name, p in report["per_persona"].items():
            d = p["latency_s"]["ttff"]
            lines.append(
                f"| {name} | {p['completed']} | {p['attempts'] - p['completed']} | "
                f"{fmt(d['p50'])} | {fmt(d['p95'])} |"
            )
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    rl = fail["rejected_latency_s"]
    lines += [
        "",
        "## Failures",
        "",
        f"- 503 rejections (overload): {fail['rejected_503']} "
        f"(at connect {fail['rejected_at']['connect']}, before the reply "
        f"{fail['rejected_at']['before_reply']}, cutting a reply short "
        f"{fail['rejected_at']['mid_reply']}); refusals answered in p50 {fmt(rl['p50'])} s, "
        f"max {fmt(rl['max'])} s",
        f"- timeouts (no `done` within {slo['turn_timeout_s']:g} s): {fail['timeouts']}",
        f"- other errors: {fail['errors']}",
    ]
    for error, n in fail["by_error"].items():
        lines.append(f"  - `{error}`: {n}")
    lines += [
        "",
        "## Windows",
        "",
        "| t (s) | users | turns/min | TTFF p50 | TTFF p95 | 503 | timeouts | SLO |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in report["windows"]:
        ok = "ok" if w["within_slo"] else ", ".join(w["failed_objectives"])
        lines.append(
            f"| {w['start_s']:.0f}–{w['end_s']:.0f} | {w['users']} | "
            f"{fmt(w['turns_per_min'])} | {fmt(w['ttff_p50_s'])} | "
            f"{fmt(w['ttff_p95_s'])} | {w['rejected_503']} | {w['timeouts']} | {ok} |"
        )
    summary = report["replicas"]["summary"]
    if summary:
        lines += [
            "",
            "## Replicas",
            "",
            "| deployment | replicas at start | max | end | max queued | max in flight |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in summary.items():
            lines.append(
                f"| {name} | {fmt(s.get('start'))} | {fmt(s.get('max'))} | "
                f"{fmt(s.get('end'))} | {fmt(s.get('max_queued'))} | "
                f"{fmt(s.get('max_ongoing'))} |"
            )
    lines += [
        "",
        "## Per-stage cost (for `avatar plan`)",
        "",
        "| stage | backend | s/call | calls/turn | s/turn | source |",
        "|---|---|---|---|---|---|",
    ]
    for stage, c in report["stage_costs"].items():
        per_call = fmt(c.get("seconds_per_call"), digits=3)
        per_turn = fmt(c.get("seconds_per_turn"), digits=3)
        lines.append(
            f"| {stage} | {c.get('backend') or '?'} | {per_call} | "
            f"{fmt(c.get('calls_per_turn'))} | {per_turn} | {c.get('source', '–')} |"
        )
    if report["files"].get("png"):
        lines += ["", f"![latency and replicas]({Path(report['files']['png']).name})"]
    return "\n".join(lines) + "\n"
