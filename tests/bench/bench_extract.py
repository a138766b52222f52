"""Benchmark: hutch's extract stage against `tar -x` and `unzip` (spec/extract.md §Speed).

Not run by pytest. Usage:

    python tests/bench/bench_extract.py [--runs 5] [--dir /dev/shm]

The tar subject is a real sdist of ~10k entries (Django 5.1.4: 6809 files,
3233 directories), fetched once into tests/bench/.cache/ with
`pip download --no-deps --no-binary :all:`; without network a synthetic
10k-file tar.gz stands in. Any wheels already in .cache/wheels/ are timed
against unzip. Each tool extracts into a fresh directory on the same
filesystem; runs alternate so background load hits both alike; the table
shows the best and the median run, wall clock and CPU (user + system, the
reference tool's from its child rusage). Trees are deleted only after all runs
of an archive, then the disk is given a moment: on ext4 mounted with
`discard`, deleting a big tree slows the file creation that follows it.

`--rss` instead extracts one 1 GiB zip member (deflated zeros, made once in
the first --dir) in a child process and prints its peak RSS.
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
import zipfile
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


def timed(fn: Callable[[Path], object], base: Path, keep: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds (this process and its children) of ``fn`` into a fresh dir."""
    out = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
    keep.append(out)
    cpu = os.times()
    start = time.perf_counter()
    fn(out)
    wall = time.perf_counter() - start
    end = os.times()
    used = end.user + end.system + end.children_user + end.children_system
    return wall, used - (cpu.user + cpu.system + cpu.children_user + cpu.children_system)


def settle(trees: list[Path], base: Path) -> None:
    for tree in trees:
        shutil.rmtree(tree)
    trees.clear()
    if not str(base).startswith("/dev/shm"):
        os.sync()
        time.sleep(3)  # let ext4's online discard of the freed blocks finish


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
    parser.add_argument("--rss", action="store_true", help="peak RSS of a 1 GiB member")
    args = parser.parse_args()
    bases = args.dir or [p for p in (Path("/dev/shm"), Path(tempfile.gettempdir())) if p.is_dir()]
    if args.rss:
        rss(bases[0])
        return
    tgz = sdist()
    subjects: list[tuple[str, Path, Reference]] = [(tgz.name, tgz, _tar)]
    subjects += [
        (whl.name.split("-")[0] + " wheel", whl, _unzip)
        for whl in sorted((CACHE / "wheels").glob("*.whl"))
    ]
    load = os.getloadavg()[0]
    print(f"load average {load:.2f}, {os.cpu_count()} CPUs; best/median of {args.runs} runs")
    head = (
        f"{'archive':22} {'fs':6} {'files':>5} {'hutch wall best/med':>19} {'cpu':>6} "
        f"{'ref wall best/med':>17} {'cpu':>6} {'wall':>5} {'cpu':>5}"
    )
    print(head)
    print("-" * len(head))
    for base in bases:
        fs = "tmpfs" if str(base).startswith("/dev/shm") else str(base)
        totals = [0.0, 0.0, 0.0, 0.0]
        for label, archive, reference in subjects:
            files, ours, theirs = _compare(archive, reference, base, args.runs)
            best, ref_best = min(w for w, _ in ours), min(w for w, _ in theirs)
            cpu, ref_cpu = min(c for _, c in ours), min(c for _, c in theirs)
            if label.endswith("wheel"):
                totals = [
                    a + b for a, b in zip(totals, (best, cpu, ref_best, ref_cpu), strict=True)
                ]
            print(
                f"{label[:22]:22} {fs[:6]:6} {files:5d} "
                f"{best:9.3f}/{statistics.median(w for w, _ in ours):6.3f}   {cpu:6.3f} "
                f"{ref_best:7.3f}/{statistics.median(w for w, _ in theirs):6.3f}   {ref_cpu:6.3f} "
                f"{best / ref_best:5.2f} {cpu / ref_cpu:5.2f}"
            )
        best, cpu, ref_best, ref_cpu = totals
        print(
            f"{'4 wheels (sum of best)':22} {fs[:6]:6} {'':5} {best:9.3f}{'':10}{cpu:6.3f} "
            f"{ref_best:7.3f}{'':10}{ref_cpu:6.3f} {best / ref_best:5.2f} {cpu / ref_cpu:5.2f}"
        )


def _compare(
    archive: Path, reference: Reference, base: Path, runs: int
) -> tuple[int, list[tuple[float, float]], list[tuple[float, float]]]:
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    files = 0
    trees: list[Path] = []

    def hutch(out: Path) -> None:
        nonlocal files
        files = sum(1 for m in extract(archive, out) if m.kind == "file")

    for _ in range(runs):
        ours.append(timed(hutch, base, trees))
        theirs.append(timed(lambda out: reference(archive, out), base, trees))
    settle(trees, base)
    return files, ours, theirs


_RSS_CHILD = """
import resource, sys
from pathlib import Path
from hutch.extract import Limits, extract
(m,) = extract(Path(sys.argv[1]), Path(sys.argv[2]), limits=Limits.from_env(2 << 30))
print(m.size, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def rss(base: Path) -> None:
    """Peak RSS of extracting one 1 GiB deflated member (streamed, spec/extract.md §7)."""
    archive = base / "hutch-bench-1gib-member.zip"
    if not archive.exists():
        block = bytes(1 << 20)
        with (
            zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf,
            zf.open("big", "w", force_zip64=True) as w,
        ):
            for _ in range(1024):
                w.write(block)
    out = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
    try:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, str(archive), str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        size, kib = map(int, proc.stdout.split())
        print(
            f"1 GiB member ({size} bytes) in {time.perf_counter() - start:.2f} s, "
            f"peak RSS {kib / 1024:.0f} MiB"
        )
    finally:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
