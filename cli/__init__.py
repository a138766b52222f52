"""The `hutch` command line. spec/cli.md is its contract: names, outputs, exit codes.

Start-up time matters (`hutch --version` < 150 ms), so this package imports
only click at load; every command imports the store, fetch and extract code it
needs when it runs.
"""

from __future__ import annotations

import atexit
import errno
import gc
import os
import sys
from typing import NoReturn

# A command lives for a moment and allocates tens of thousands of small
# containers: its imports, then a manifest's entries (8004 for the benchmark
# wheels). At the default threshold of 700 the cyclic collector ran ~70 times
# in a `verify --full` of those, 11-17 ms of a 0.35 s command (counted with
# gc.callbacks). Nearly nothing it allocates is a cycle (reference counting
# frees it), so collections come 50,000 allocations apart: a few MB of
# garbage at most, in the rare case there is any.
gc.set_threshold(50_000, 10, 10)

from hutch.cli.output import run  # noqa: E402 - after the threshold: its imports count


def main() -> NoReturn:
    from hutch.cli.app import app

    # Everything imported lives as long as the process: never scanned again,
    # and a forked worker's collections do not write to (and so copy) its pages.
    gc.freeze()
    leave(run(app))


def leave(code: int) -> NoReturn:
    """Exit with ``code`` without tearing the interpreter down.

    Python's own exit frees every module and every object the imports made,
    one by one: 7-12 ms of a 140-170 ms `hutch install` of the benchmark
    wheels (tmpfs, medians of 30 and 40 alternating runs), for memory the
    kernel takes back at once. What an exit must do is done here first: the atexit handlers
    (parallel reaps its children, journal closes its LMDB environments),
    then stdout and stderr flushed; a failure to write them is said and
    exits 1 (Python would say "Exception ignored" and exit 120). With
    another thread still running (a normal exit would wait for it), Python
    exits as usual.
    """
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except BrokenPipeError:
            pass  # `hutch ls | head`: the reader left (output.run)
        except OSError as exc:
            if name == "stdout" and sys.stderr is not None and not sys.stderr.closed:
                why = f"{exc.strerror} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
                print(f"error: cannot write the output: {why}", file=sys.stderr)
                sys.stderr.flush()
            code = code or 1
    os._exit(code)
