"""Crash injection for tests (spec/store.md §7, spec/durability.md).

    HUTCH_CRASH_AT=add.published    kill -9s the process when it reaches that point
    HUTCH_STOP_AT=add.published     stops it there (SIGSTOP) until a test sends SIGCONT

The crash tests stop an operation at each step of the commit protocol and check
what the next command recovers. The stop points let a concurrency test hold a
real hutch process at a known step (holding its locks, its objects published
but not committed) while it runs a competitor, with no sleeps to tune.

The points, in the order an operation reaches them:

    add.fetched  add.placing  add.extracted  add.published  add.synced  add.committed
    install.built  install.swapped

``add.placing`` is reached at the first file an extraction creates at its
object path, just after the create and before its bytes: a crash there leaves
an empty file at that path. Reading the variables once keeps the cost of a point to one
comparison.
"""

from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("HUTCH_CRASH_AT")
_STOP_AT = os.environ.get("HUTCH_STOP_AT")


def point(name: str) -> None:
    if name == _CRASH_AT:
        # SIGKILL, not an exception or exit: no finally block, atexit hook or
        # buffered write runs, exactly as when the OOM killer or a power cut hits.
        os.kill(os.getpid(), signal.SIGKILL)
    if name == _STOP_AT:
        os.kill(os.getpid(), signal.SIGSTOP)
