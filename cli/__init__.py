"""The `hutch` command line. spec/cli.md is its contract: names, outputs, exit codes.

Start-up time matters (`hutch --version` < 150 ms), so this package imports
only click at load; every command imports the store, fetch and extract code it
needs when it runs.
"""

from __future__ import annotations

import gc
import sys

# A command lives for a moment and allocates tens of thousands of small
# containers: its imports, then a manifest's entries (8004 for the benchmark
# wheels). At the default threshold of 700 the cyclic collector ran ~70 times
# in a `verify --full` of those, 11-17 ms of a 0.35 s command (counted with
# gc.callbacks). Nearly nothing it allocates is a cycle (reference counting
# frees it), so collections come 50,000 allocations apart: a few MB of
# garbage at most, in the rare case there is any.
gc.set_threshold(50_000, 10, 10)

from hutch.cli.output import run  # noqa: E402 - after the threshold: its imports count


def main() -> None:
    from hutch.cli.app import app

    # Everything imported lives as long as the process: never scanned again,
    # and a forked worker's collections do not write to (and so copy) its pages.
    gc.freeze()
    sys.exit(run(app))
