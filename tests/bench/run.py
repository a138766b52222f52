"""hutch against uv, cp -al and b3sum on the same real artifacts (issue 7).

Usage: ``python tests/bench/run.py [--runs 5]`` (tests/bench/README.md explains
every row). Not collected by pytest; nothing here asserts on time. It prints
one table of medians, ratios and targets, and the samples behind them.

Each command runs as a child process, timed wall-clock from spawn to exit,
page cache warm (every input is read once before the first timed run), and
the two sides of a comparison alternate run by run, so load from elsewhere
on the machine falls on both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench_fetch_rss import BASELINE as FETCH_BASELINE
from bench_fetch_rss import FETCH
from common import (
    CACHE,
    MIB,
    Sample,
    drop_tree,
    ensure_big_archive,
    ensure_uv,
    ensure_wheels,
    hutch_command,
    machine,
    median,
    run_child,
    serve,
    sha256_file,
    tool,
    version_of,
)
from hutch.store.digest import hash_file

_ARG_BYTES = 1 << 20  # stay well under ARG_MAX when passing file lists


@dataclass
class Row:
    """One line of the table: hutch's median against a baseline's, and the target."""

    name: str
    hutch: list[float]
    baseline_name: str = ""
    baseline: list[float] = field(default_factory=list)
    unit: str = "s"
    target: str = ""
    limit: float = 0.0  # ratio (with a baseline) or absolute value the target allows
    note: str = ""

    @property
    def value(self) -> float:
        return median(self.hutch)

    @property
    def ratio(self) -> float | None:
        return self.value / median(self.baseline) if self.baseline else None

    @property
    def met(self) -> bool:
        got = self.ratio if self.ratio is not None else self.value
        return got <= self.limit


@dataclass
class Bench:
    work: Path
    runs: int
    hutch: list[str]
    uv: Path
    wheels: list[Path]
    shas: dict[Path, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def hutch_cmd(self, store: Path, *args: str | Path) -> list[str]:
        return [*self.hutch, "--store", str(store), "-q", *(str(a) for a in args)]

    def uv_env(self, cache: Path, venv: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
        env.update(
            UV_CACHE_DIR=str(cache),
            VIRTUAL_ENV=str(venv),
            UV_LINK_MODE="hardlink",
            UV_NO_CONFIG="1",
            UV_PYTHON_DOWNLOADS="never",
        )
        return env

    def uv_venv(self, path: Path) -> Path:
        venv = path / "venv"
        subprocess.run(
            [self.uv, "venv", "-q", "--python", sys.executable, venv],
            check=True,
            env=self.uv_env(path / "unused-cache", venv),
        )
        return venv

    def uv_install(self, cache: Path, venv: Path) -> Sample:
        cmd = [str(self.uv), "pip", "install", "-q", "--no-deps", "--offline"]
        cmd += [str(w) for w in self.wheels]
        return run_child(cmd, env=self.uv_env(cache, venv))


def _alternate(runs: int, first: Callable[[int], None], second: Callable[[int], None]) -> None:
    """Run the two sides in turn, swapping which goes first, so drift falls on both."""
    for i in range(runs):
        for side in (first, second) if i % 2 == 0 else (second, first):
            side(i)


# -- cold: add the wheels to an empty store / install with an empty uv cache ----
def bench_cold(b: Bench, base_url: str) -> Path:
    hutch_s: list[float] = []
    uv_s: list[float] = []
    last_store = b.work / "store"

    def hutch(i: int) -> None:
        store = b.work / f"cold-{i}" / "store"
        took = 0.0
        for wheel in b.wheels:
            url = f"{base_url}/{wheel.name}"
            cmd = b.hutch_cmd(store, "add", url, "--digest", f"sha256:{b.shas[wheel]}")
            took += run_child(cmd).seconds
        hutch_s.append(took)
        if i == b.runs - 1:
            drop_tree(last_store)
            store.rename(last_store)
        drop_tree(store.parent)

    def uv(i: int) -> None:
        root = b.work / f"uv-cold-{i}"
        venv = b.uv_venv(root)  # not timed: hutch's side has no venv to make
        uv_s.append(b.uv_install(root / "cache", venv).seconds)
        drop_tree(root)

    _alternate(b.runs, hutch, uv)
    b.rows.append(
        Row(
            f"cold: hutch add x{len(b.wheels)} (empty store)",
            hutch_s,
            "uv pip install --offline, empty cache",
            uv_s,
            target="<= 1.0x uv",
            limit=1.0,
            note="hutch fetches over loopback HTTP; uv --offline reads the wheel files",
        )
    )
    return last_store


def fill_store(b: Bench, base_url: str) -> Path:
    """A store holding the wheels, for the warm and verify rows when cold is skipped."""
    store = b.work / "store"
    for wheel in b.wheels:
        url = f"{base_url}/{wheel.name}"
        run_child(b.hutch_cmd(store, "add", url, "--digest", f"sha256:{b.shas[wheel]}"))
    return store


# -- warm: install from the store / from uv's warm cache / cp -al -------------
def bench_warm(b: Bench, store: Path) -> Path:
    hutch_s: list[float] = []
    uv_s: list[float] = []
    cp_s: list[float] = []
    cache = b.work / "uv-warm-cache"
    b.uv_install(cache, b.uv_venv(b.work / "uv-warm-fill"))  # fills the cache, not timed
    drop_tree(b.work / "uv-warm-fill")
    trees = b.work / "installed"

    def hutch(i: int) -> None:
        dest = b.work / f"warm-{i}"
        took = 0.0
        for wheel in b.wheels:
            ref = f"sha256:{b.shas[wheel]}"
            cmd = b.hutch_cmd(store, "install", ref, dest / wheel.stem, "--link", "hardlink")
            took += run_child(cmd).seconds
        hutch_s.append(took)
        if not trees.exists():
            dest.rename(trees)
        drop_tree(dest)

    def uv(i: int) -> None:
        root = b.work / f"uv-warm-{i}"
        uv_s.append(b.uv_install(cache, b.uv_venv(root)).seconds)
        drop_tree(root)

    def cp(i: int) -> None:
        copy = b.work / f"cp-{i}"
        cp_s.append(run_child(["cp", "-al", trees, copy]).seconds)
        drop_tree(copy)

    _alternate(b.runs, hutch, uv)
    for i in range(b.runs):
        cp(i)
    b.rows.append(
        Row(
            f"warm: hutch install x{len(b.wheels)} --link hardlink",
            hutch_s,
            "uv pip install, warm cache, hardlink",
            uv_s,
            target="<= 1.0x uv",
            limit=1.0,
            note="hutch: one process per artifact, default --verify stat",
        )
    )
    b.rows.append(
        Row(
            f"warm: hutch install x{len(b.wheels)} --link hardlink",
            hutch_s,
            "cp -al of the installed trees (floor)",
            cp_s,
            target="<= 1.3x cp -al",
            limit=1.3,
        )
    )
    drop_tree(cache)
    return trees


# -- verify: hutch verify --full / b3sum over the same object files -----------
def _chunks(paths: Sequence[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for p in paths:
        if size + len(p) + 1 > _ARG_BYTES and out[-1]:
            out.append([])
            size = 0
        out[-1].append(p)
        size += len(p) + 1
    return out


_PY_BLAKE3 = """
import os, sys
from concurrent.futures import ThreadPoolExecutor
import blake3
def one(p):
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    h.update_mmap(p)
    return h.hexdigest()
with ThreadPoolExecutor(os.cpu_count()) as pool:
    for _ in pool.map(one, sys.argv[1:]):
        pass
"""


def bench_verify(b: Bench, store: Path) -> None:
    objects = sorted(str(p) for p in (store / "objects").rglob("*") if p.is_file())
    b3sum = tool("b3sum")
    if b3sum is not None:
        name = "b3sum over the same object files"
        commands = [[str(b3sum), *chunk] for chunk in _chunks(objects)]
        note = f"{len(objects)} objects, b3sum {version_of([str(b3sum)])}"
    else:
        name = "python blake3, all threads, one process (no b3sum here)"
        commands = [[sys.executable, "-c", _PY_BLAKE3, *chunk] for chunk in _chunks(objects)]
        note = f"{len(objects)} objects; b3sum unavailable (apt-get install b3sum)"
    hutch_s: list[float] = []
    base_s: list[float] = []

    def hutch(_i: int) -> None:
        hutch_s.append(run_child(b.hutch_cmd(store, "verify", "--full")).seconds)

    def baseline(_i: int) -> None:
        base_s.append(sum(run_child(c).seconds for c in commands))

    hutch(-1)  # warm the page cache and the journal for both sides
    hutch_s.clear()
    _alternate(b.runs, hutch, baseline)
    b.rows.append(
        Row("verify: hutch verify --full", hutch_s, name, base_s, target="<= 1.5x", limit=1.5)
    )
    b.rows[-1].note = note


# -- memory: peak RSS of adding a big artifact ---------------------------------
def bench_rss(b: Bench, size_mib: int, runs: int) -> None:
    archive = ensure_big_archive(size_mib)
    sha = sha256_file(archive)
    blake, _ = hash_file(archive)
    peaks: list[float] = []
    times: list[float] = []
    fetch_peaks: list[float] = []
    with serve(archive.parent) as base_url:
        url = f"{base_url}/{archive.name}"
        for i in range(runs):
            store = b.work / f"rss-{i}"
            got = run_child(b.hutch_cmd(store, "add", url, "--digest", f"sha256:{sha}"))
            peaks.append(got.maxrss_kib / 1024)
            times.append(got.seconds)
            drop_tree(store)
        # bench_fetch_rss's child scripts: fetch alone, and importing it, for the breakdown.
        dest = b.work / "fetched.bin"
        fetch_peaks.append(run_child([sys.executable, "-c", FETCH, url, dest, blake]).maxrss_kib)
        dest.unlink()
    imports = run_child([sys.executable, "-c", FETCH_BASELINE]).maxrss_kib / 1024
    rate = size_mib / median(times)
    b.rows.append(
        Row(
            f"memory: peak RSS, hutch add {size_mib} MiB .tar.gz",
            peaks,
            unit="MiB",
            target="< 100 MiB",
            limit=100,
            note=f"add took {median(times):.1f} s ({rate:.0f} MiB/s); fetch alone peaks at "
            f"{median(fetch_peaks) / 1024:.0f} MiB, importing fetch+requests {imports:.0f} MiB",
        )
    )


# -- start-up ------------------------------------------------------------------
def bench_startup(b: Bench, runs: int) -> None:
    hutch_s = [run_child([*b.hutch, "--version"]).seconds for _ in range(runs + 1)][1:]
    python_s = [run_child([sys.executable, "-c", "pass"]).seconds for _ in range(runs)]
    b.rows.append(
        Row(
            "start-up: hutch --version",
            hutch_s,
            target="< 150 ms",
            limit=0.150,
            note=f"python -c pass alone: {median(python_s) * 1000:.0f} ms",
        )
    )


# -- the table -----------------------------------------------------------------
def _fmt(value: float, unit: str) -> str:
    return f"{value:.3f} s" if unit == "s" else f"{value:.1f} {unit}"


def table(rows: Sequence[Row]) -> str:
    head = f"{'row':<46} {'hutch':>10}  {'baseline':<40} {'base':>9} {'ratio':>6}  target"
    lines = [head, "-" * len(head)]
    for r in rows:
        base = _fmt(median(r.baseline), r.unit) if r.baseline else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        verdict = "met" if r.met else "NOT met"
        lines.append(
            f"{r.name:<46} {_fmt(r.value, r.unit):>10}  {r.baseline_name:<40} {base:>9} "
            f"{ratio:>6}  {r.target} {verdict}"
        )
    lines.append("")
    lines.extend(f"* {r.name}: {r.note}" for r in rows if r.note)
    return "\n".join(lines)


def samples(rows: Sequence[Row]) -> str:
    def fmt(values: Sequence[float]) -> str:
        return " ".join(f"{v:.3f}" for v in values)

    lines = ["samples (every run, in order):"]
    seen: set[int] = set()
    for r in rows:
        if id(r.hutch) not in seen:
            seen.add(id(r.hutch))
            lines.append(f"  {r.name}: {fmt(r.hutch)}")
        if r.baseline:
            lines.append(f"  {r.baseline_name}: {fmt(r.baseline)}")
    return "\n".join(lines)


SECTIONS = ("cold", "warm", "verify", "memory", "startup")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per timed row (median)")
    parser.add_argument("--startup-runs", type=int, default=20)
    parser.add_argument("--rss-runs", type=int, default=3)
    parser.add_argument("--rss-mib", type=int, default=1024, help="size of the big artifact")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--work", type=Path, help="where stores and trees go (same filesystem)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        parser.error(f"--only takes {', '.join(SECTIONS)}")

    wheels = ensure_wheels()
    uv = ensure_uv()
    parent = args.work or CACHE / "work"
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    b = Bench(work, args.runs, hutch_command(), uv, wheels)
    b.shas = {w: sha256_file(w) for w in wheels}
    print(f"machine: {machine(work)}")
    print(f"hutch: {' '.join(b.hutch)}; {version_of([str(uv)])}; work dir {work}")
    total = sum(w.stat().st_size for w in wheels) / MIB
    print(f"wheels: {', '.join(w.name for w in wheels)} ({total:.0f} MiB)")
    print(f"medians of {args.runs} runs; uv installs the wheel files directly (--offline ")
    print("cannot use a URL), hutch adds them from http://127.0.0.1 (a server thread here)")
    print(flush=True)
    try:
        with serve(wheels[0].parent) as base_url:
            if "cold" in only:
                store = bench_cold(b, base_url)
            elif only & {"warm", "verify"}:
                store = fill_store(b, base_url)
            if "warm" in only:
                bench_warm(b, store)
            if "verify" in only:
                bench_verify(b, store)
        if "memory" in only:
            bench_rss(b, args.rss_mib, args.rss_runs)
        if "startup" in only:
            bench_startup(b, args.startup_runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(b.rows))
    print()
    print(samples(b.rows))
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        data = [{**asdict(r), "median": r.value, "ratio": r.ratio, "met": r.met} for r in b.rows]
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
