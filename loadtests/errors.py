"""The one error a load-test run raises when it cannot happen.

Every module of the runner raises it for bad usage or a broken run; the command line turns it
into exit status 2, apart from an SLO miss (1).
"""

from __future__ import annotations


class LoadTestError(RuntimeError):
    """The load test could not run (bad config, cluster failed to start, locust crashed)."""
