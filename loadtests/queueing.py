"""Waiting in an M/M/c queue: the probability a call waits (Erlang C) and its wait quantiles.

The capacity planner treats each stage's replicas as `c` servers fed by Poisson arrivals with
exponential service times: crude for streaming stages, but on the safe side at the tail and
cheap enough to search replica counts with.
"""

from __future__ import annotations

import math


def erlang_c(servers: int, load: float) -> float:
    """Probability that a call waits in an M/M/c queue (1.0 when the queue is unstable)."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return 1.0
    # Erlang B by its recursion (stable for thousands of servers), then C from B.
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return servers * b / (servers - load * (1.0 - b))


def wait_quantile(servers: int, load: float, service_s: float, q: float) -> float:
    """The q-quantile of the time a call waits for a free server (inf when unstable)."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return math.inf
    waits = erlang_c(servers, load)
    if waits <= 1.0 - q:
        return 0.0
    return service_s / (servers - load) * math.log(waits / (1.0 - q))
