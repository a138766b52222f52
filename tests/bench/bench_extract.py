"""Benchmark: hutch's extract stage against `tar -x` and `unzip` (spec/extract.md §Speed).

Not run by pytest. Usage:

    python tests/bench/bench_extract.py [--runs 5] [--dir /dev/shm]

The tar subject is a real sdist of ~10k entries (Django 5.1.4: 6809 files,
3233 directories), fetched once into tests/bench/.cache/ with
`pip download --no-deps --no-binary :all:`; without network a synthetic
10k-file tar.gz stands in. Any wheels already in .cache/wheels/ are timed
against unzip. Each tool extracts into a fresh directory on the same
filesystem; runs alternate so background load hits both alike; the table
shows the best and the median run.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hutch.extract import extract

CACHE = Path(__file__).resolve().parent / ".cache"
SDIST = "Django-5.1.4.tar.gz"


def sdist() -> Path:
    path = CACHE / SDIST
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "django==5.1.4", "-d", str(CACHE)],
        capture_output=True,
        check=False,
    )  # fmt: skip
    if proc.returncode == 0 and path.exists():
        return path
    return synthetic()


def synthetic() -> Path:
    """10k small text files in 1000 directories, like a big sdist, when offline."""
    path = CACHE / "synthetic-10k.tar.gz"
    if path.exists():
        return path
    with tarfile.open(path, "w:gz") as tf:
        for i in range(10_000):
            body = (f"# module {i}\n" + f"def f():\n    return {i}\n" * (i % 40 + 1)).encode()
            info = tarfile.TarInfo(f"pkg-1.0/src/d{i % 1000}/m{i}.py")
            info.size = len(body)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(body))
    return path


def timed(fn: Callable[[Path], object], base: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
    try:
        start = time.perf_counter()
        fn(out)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out)


Reference = Callable[[Path, Path], object]


def _tar(archive: Path, out: Path) -> object:
    return subprocess.run(
        ["tar", "--no-same-owner", "-xzf", str(archive), "-C", str(out)], check=True
    )


def _unzip(archive: Path, out: Path) -> object:
    return subprocess.run(["unzip", "-qq", str(archive), "-d", str(out)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--dir",
        action="append",
        type=Path,
        help="filesystem(s) to extract onto (default: /dev/shm and the system temp dir)",
    )
    args = parser.parse_args()
    bases = args.dir or [p for p in (Path("/dev/shm"), Path(tempfile.gettempdir())) if p.is_dir()]
    tgz = sdist()
    subjects: list[tuple[str, Path, Reference]] = [(tgz.name, tgz, _tar)]
    subjects += [
        (whl.name.split("-")[0] + " wheel", whl, _unzip)
        for whl in sorted((CACHE / "wheels").glob("*.whl"))
    ]
    load = os.getloadavg()[0]
    print(f"load average {load:.2f}, {os.cpu_count()} CPUs; best/median of {args.runs} runs")
    head = (
        f"{'archive':26} {'fs':8} {'files':>6} {'hutch best/med s':>17} "
        f"{'ref best/med s':>15} {'ratio':>6} {'files/s':>8}"
    )
    print(head)
    print("-" * len(head))
    for base in bases:
        fs = "tmpfs" if str(base).startswith("/dev/shm") else str(base)
        for label, archive, reference in subjects:
            files, ours, theirs = _compare(archive, reference, base, args.runs)
            best, ref_best = min(ours), min(theirs)
            print(
                f"{label[:26]:26} {fs[:8]:8} {files:6d} "
                f"{best:8.3f}/{statistics.median(ours):6.3f}  "
                f"{ref_best:7.3f}/{statistics.median(theirs):6.3f} "
                f"{best / ref_best:6.2f} {files / best:8.0f}"
            )


def _compare(
    archive: Path, reference: Reference, base: Path, runs: int
) -> tuple[int, list[float], list[float]]:
    ours: list[float] = []
    theirs: list[float] = []
    files = 0

    def hutch(out: Path) -> None:
        nonlocal files
        files = sum(1 for m in extract(archive, out) if m.kind == "file")

    for _ in range(runs):
        ours.append(timed(hutch, base))
        theirs.append(timed(lambda out: reference(archive, out), base))
    return files, ours, theirs


if __name__ == "__main__":
    main()
