"""Soak: the whole mix against one store for N minutes; operations per second, inconsistencies.

Not collected by pytest (tests/bench is in norecursedirs). Usage:

    python tests/bench/soak.py MINUTES [--seed N] [--no-kill] [--no-cleaner] [--keep]

It runs tests/test_concurrency.py's mix (the same engine its 20-second test
runs), bigger and longer: installers (``install --force``, random link mode,
each tree compared with GNU tar's / unzip's), an adder (add, re-add, rm), gc,
``verify --repair``, a cleaner deleting a random object file every half second
and a killer sending kill -9 to a random running command every few seconds.
Then, with everything stopped: the next command sweeps staging; every damaged
object must be one the cleaner deleted (else gc removed a live object);
``verify --repair``, ``verify --full``, ``gc``, ``verify --full`` all exit 0;
every listed artifact installs exactly. Exit status 1 on any inconsistency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minutes", type=float, help="how long the mix runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-kill", action="store_true", help="no kill -9s")
    parser.add_argument("--no-cleaner", action="store_true", help="no object deletions")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    # The engine lives beside the tests (tests/ is not a package).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from test_concurrency import MixConfig, run_mix

    config = MixConfig(
        seconds=args.minutes * 60,
        installers=3,
        stable=6,
        churn=6,
        files=40,
        clean_every=None if args.no_cleaner else 0.5,
        kill_every=None if args.no_kill else 3.0,
        seed=args.seed,
    )
    work = Path(tempfile.mkdtemp(prefix="hutch-soak-"))
    print(
        f"soak: {args.minutes:g} min in {work} on {os.cpu_count()} CPU(s), "
        f"load {os.getloadavg()[0]:.1f}; {config}",
        file=sys.stderr,
    )
    try:
        report = run_mix(work, config)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(report.summary())
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 1 if report.inconsistencies else 0


if __name__ == "__main__":
    sys.exit(main())
