"""The `hutch` command line. spec/cli.md is its contract: names, outputs, exit codes.

Start-up time matters (`hutch --version` < 150 ms), so this package imports
only click at load; every command imports the store, fetch and extract code it
needs when it runs.
"""

from __future__ import annotations

import sys

from hutch.cli.output import run


def main() -> None:
    from hutch.cli.app import app

    sys.exit(run(app))
