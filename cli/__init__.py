"""The `hutch` command line. spec/cli.md is its contract: names, outputs, exit codes.

Start-up time matters (`hutch --version` < 150 ms), so this package imports
nearly nothing at load: click only when the command line needs it (not for a
plain `hutch install`, cli/quick.py), and every command the store, fetch and
extract code it needs when it runs.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import threading
from typing import NoReturn

# A command lives for a moment and allocates tens of thousands of small
# containers: its imports, then a manifest's entries (8004 for the benchmark
# wheels). At the default threshold of 700 the cyclic collector ran ~70 times
# in a `verify --full` of those, 11-17 ms of a 0.35 s command (counted with
# gc.callbacks). Nearly nothing it allocates is a cycle (reference counting
# frees it), so collections come 50,000 allocations apart: a few MB of
# garbage at most, in the rare case there is any.
gc.set_threshold(50_000, 10, 10)

# After the threshold: its imports count.
from hutch.cli.output import cannot_write, guarded, report, run  # noqa: E402


def main() -> NoReturn:
    from hutch.cli import quick

    plain = quick.parse(sys.argv[1:])
    if plain is not None:  # a plain `hutch install`: no click (cli/quick.py)
        ctx, args = plain
        gc.freeze()  # as below
        leave(guarded(lambda: quick.run(ctx, args)))
    from hutch.cli.app import app

    # Everything imported lives as long as the process: frozen, it is never
    # scanned again, and a forked worker's collections do not write to (and
    # so copy) its pages.
    gc.freeze()
    leave(run(app))


def leave(code: int) -> NoReturn:
    """Exit with ``code`` without tearing the interpreter down.

    Python's own exit frees every module and every object the imports made,
    one by one, for memory the kernel takes back at once: the exit of a
    `hutch install` of the benchmark wheels took 11.4 ms after its workers
    ended, 5.6 ms this way (tmpfs, medians of 15). What an exit must do is
    done here first: the atexit handlers (journal closes its LMDB
    environments, parallel reaps its children), then stdout and stderr
    flushed. A failure to write stdout that the command has not already
    reported is said, and exits 1 (Python would say "Exception ignored" and
    exit 120). With another thread still running (a normal exit would wait
    for it), Python exits as usual.
    """
    if threading.active_count() > 1:
        sys.exit(code)
    # CPython's own exit runs these through the same call, which also
    # empties the registry: nothing runs twice.
    atexit._run_exitfuncs()
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        pass  # `hutch ls | head`: the reader left (output.run)
    except OSError as exc:
        if code == 0:  # else this failure, or the one before it, was said
            code = 1
            with contextlib.suppress(OSError, AttributeError):
                report(cannot_write(exc))
    with contextlib.suppress(OSError, AttributeError, ValueError):
        sys.stderr.flush()
    os._exit(code)
