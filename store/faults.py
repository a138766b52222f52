"""Crash injection for tests: `HUTCH_CRASH_AT=add.published` kill -9s the process there.

The crash tests (spec/store.md §7) use it to stop an operation at each step of
the commit protocol and check what the next command recovers. Reading the
variable once keeps the cost of a point to one comparison.
"""

from __future__ import annotations

import os
import signal

_AT = os.environ.get("HUTCH_CRASH_AT")


def point(name: str) -> None:
    if name == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
