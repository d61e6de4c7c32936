"""`python -m loadtests.run`: the load-test command line, under the name the docs give it.

The command itself lives in `loadtests.cli` (`avatar loadtest` reaches it there, through the
lazy command registry in services/commands/main.py).
"""

from __future__ import annotations

import sys

from loadtests.cli import main

if __name__ == "__main__":
    sys.exit(main())
