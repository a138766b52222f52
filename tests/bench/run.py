"""hutch against uv, cp -al and b3sum on the same real artifacts (issue 7).

Usage: ``python tests/bench/run.py [--runs 5]`` (tests/bench/README.md explains
every row). Not collected by pytest; nothing here asserts on time. It prints
one table of medians, ratios and targets, and the samples behind them.

Each command runs as a child process, timed wall-clock from spawn to exit,
page cache warm (every input is read once before the first timed run), and
the two sides of a comparison alternate run by run, so load from elsewhere
on the machine falls on both. The CPU time (user + system) of the same
children is reported beside the wall time: on a shared machine it moves less.
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
from dataclasses import dataclass, field
from pathlib import Path

from bench_fetch_rss import BASELINE as FETCH_BASELINE
from bench_fetch_rss import FETCH
from common import (
    CACHE,
    MIB,
    Sample,
    bytecode_env,
    drop_tree,
    ensure_big_archive,
    ensure_uv,
    ensure_wheels,
    fs_speed,
    hutch_venv,
    interpreter,
    journal_less,
    machine,
    median,
    run_child,
    serve,
    settle,
    sha256_file,
    tool,
    version_of,
)
from hutch.store.digest import hash_file

_ARG_BYTES = 1 << 20  # stay well under ARG_MAX when passing file lists
SECTIONS = ("cold", "warm", "verify", "memory", "startup")


@dataclass
class Row:
    """One line of the table: hutch's samples against a baseline's, and the target.

    ``limit`` is the ratio (with a baseline) or the absolute value (seconds or
    MiB) the target allows; a row without a target only informs.
    """

    name: str
    hutch: list[Sample]
    baseline_name: str = ""
    baseline: list[Sample] = field(default_factory=list)
    target: str = ""
    limit: float = 0.0
    rss: bool = False  # the row is about peak memory, not time
    note: str = ""

    @property
    def value(self) -> float:
        if self.rss:
            return median([s.maxrss_kib / 1024 for s in self.hutch])
        return median([s.seconds for s in self.hutch])

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        return self.value / median([s.seconds for s in self.baseline])

    @property
    def cpu_ratio(self) -> float | None:
        if not self.baseline:
            return None
        base = median([s.cpu for s in self.baseline])
        return median([s.cpu for s in self.hutch]) / base if base else None

    @property
    def met(self) -> bool | None:
        if not self.target:
            return None
        got = self.ratio if self.ratio is not None else self.value
        return got <= self.limit


@dataclass
class Bench:
    work: Path
    runs: int
    hutch: list[str]
    python: str  # the interpreter hutch runs on (its venv's); uv's venvs are made from it too
    uv: Path
    wheels: list[Path]
    env: dict[str, str]  # for every child that runs hutch's Python code
    shas: dict[Path, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    trash: list[Path] = field(default_factory=list)

    def discard(self, path: Path) -> None:
        """Set ``path`` aside; the whole work dir goes when the run ends.

        Deleting trees between timed runs slowed the runs after them: freeing
        thousands of inodes (and, on a filesystem mounted with ``discard``,
        trimming their blocks) goes on in the background while the next run works.
        """
        if path.exists():
            aside = self.work / f"trash-{len(self.trash)}"
            path.rename(aside)
            self.trash.append(aside)

    def hutch_cmd(self, store: Path, *args: str | Path) -> list[str]:
        return [*self.hutch, "--store", str(store), "-q", *(str(a) for a in args)]

    def run_hutch(self, cmd: Sequence[str]) -> Sample:
        return run_child(cmd, env=self.env)

    def pinned(self, base_url: str) -> list[str]:
        """Each wheel's loopback URL with its pin, as ``URL#sha256=HEX``."""
        return [f"{base_url}/{w.name}#sha256={self.shas[w]}" for w in self.wheels]

    def add_together(self, store: Path, base_url: str) -> Sample:
        """``hutch add URL#sha256=HEX ...``: every wheel in one command."""
        return self.run_hutch(self.hutch_cmd(store, "add", *self.pinned(base_url)))

    def add_apart(self, store: Path, base_url: str) -> Sample:
        """``hutch add URL#sha256=HEX``, one process per wheel, one after another."""
        total = Sample(0.0, 0)
        for source in self.pinned(base_url):
            total += self.run_hutch(self.hutch_cmd(store, "add", source))
        return total

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
            [self.uv, "venv", "-q", "--python", self.python, venv],
            check=True,
            env=self.uv_env(path / "unused-cache", venv),
        )
        return venv

    def uv_install(self, cache: Path, venv: Path) -> Sample:
        cmd = [str(self.uv), "pip", "install", "-q", "--no-deps", "--offline"]
        return run_child([*cmd, *map(str, self.wheels)], env=self.uv_env(cache, venv))


def _alternate(runs: int, *sides: Callable[[int], None]) -> None:
    """Run the sides in turn, rotating which goes first, so drift falls on all of them."""
    for i in range(runs):
        k = i % len(sides)
        for side in sides[k:] + sides[:k]:
            side(i)


# -- cold: add the wheels to an empty store / install with an empty uv cache ----
def bench_cold(b: Bench, base_url: str) -> Path:
    together: list[Sample] = []
    apart: list[Sample] = []
    uv_s: list[Sample] = []
    kept = b.work / "store"

    def hutch(i: int) -> None:
        store = b.work / f"cold-{i}"
        together.append(b.add_together(store, base_url))
        if not kept.exists():
            store.rename(kept)  # the warm and verify rows use it
        b.discard(store)

    def uv(i: int) -> None:
        root = b.work / f"uv-cold-{i}"
        venv = b.uv_venv(root)  # not timed: hutch's side has no venv to make
        uv_s.append(b.uv_install(root / "cache", venv))
        b.discard(root)

    def one_by_one(i: int) -> None:
        store = b.work / f"cold-apart-{i}"
        apart.append(b.add_apart(store, base_url))
        b.discard(store)

    _alternate(b.runs, hutch, uv, one_by_one)
    n = len(b.wheels)
    b.rows += [
        Row(
            f"cold: hutch add of {n} wheels",
            together,
            "uv pip install --offline, empty cache",
            uv_s,
            target="<= 1.0x uv",
            limit=1.0,
            note="one command each side: hutch fetches URL#sha256=HEX from loopback HTTP "
            "(in parallel), uv reads the wheel files",
        ),
        Row(
            f"  (info) {n} hutch add processes",
            apart,
            "uv, as above",
            uv_s,
            note="one process per wheel, one after another: what a build system that "
            "calls hutch per artifact pays",
        ),
    ]
    return kept


def fill_store(b: Bench, base_url: str) -> Path:
    """A store holding the wheels, for the warm and verify rows when cold is skipped."""
    store = b.work / "store"
    b.add_together(store, base_url)
    return store


# -- warm: install from the store / from uv's warm cache / cp -al -------------
def bench_warm(b: Bench, store: Path) -> None:
    together: list[Sample] = []
    apart: list[Sample] = []
    uv_s: list[Sample] = []
    cp_s: list[Sample] = []
    cache = b.work / "uv-warm-cache"
    b.uv_install(cache, b.uv_venv(b.work / "uv-warm-fill"))  # fills the cache, not timed
    b.discard(b.work / "uv-warm-fill")
    trees = b.work / "installed"
    refs = [f"sha256:{b.shas[w]}" for w in b.wheels]

    def hutch(i: int) -> None:
        dest = b.work / f"warm-{i}"
        pairs = [x for ref, w in zip(refs, b.wheels, strict=True) for x in (ref, dest / w.stem)]
        together.append(b.run_hutch(b.hutch_cmd(store, "install", *pairs, "--link", "hardlink")))
        if not trees.exists():
            dest.rename(trees)  # what cp -al copies
        b.discard(dest)

    def uv(i: int) -> None:
        root = b.work / f"uv-warm-{i}"
        uv_s.append(b.uv_install(cache, b.uv_venv(root)))
        b.discard(root)

    def cp(i: int) -> None:
        if trees.exists():
            copy = b.work / f"cp-{i}"
            cp_s.append(run_child(["cp", "-al", str(trees), str(copy)]))
            b.discard(copy)

    def one_by_one(i: int) -> None:
        dest = b.work / f"warm-apart-{i}"
        total = Sample(0.0, 0)
        for ref, wheel in zip(refs, b.wheels, strict=True):
            cmd = b.hutch_cmd(store, "install", ref, dest / wheel.stem, "--link", "hardlink")
            total += b.run_hutch(cmd)
        apart.append(total)
        b.discard(dest)

    _alternate(b.runs, hutch, uv, cp, one_by_one)
    if len(cp_s) < b.runs:
        cp(b.runs)  # the first round's cp ran before any tree existed
    n = len(b.wheels)
    name = f"warm: hutch install of {n} wheels"
    b.rows += [
        Row(
            name,
            together,
            "uv pip install, warm cache, hardlink",
            uv_s,
            target="<= 1.0x uv",
            limit=1.0,
            note="one command each side: `hutch install ID DEST ...` (--link hardlink, "
            "default --verify stat), uv into a fresh venv",
        ),
        Row(
            name,
            together,
            "cp -al of the installed trees (floor)",
            cp_s,
            target="<= 1.3x cp -al",
            limit=1.3,
        ),
        Row(
            f"  (info) {n} hutch install processes",
            apart,
            "uv, as above",
            uv_s,
            note="one process per wheel, one after another",
        ),
    ]
    b.discard(cache)
    b.discard(trees)


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


# The stand-in when no b3sum binary can be had: blake3's own Rust code on every
# file, a thread per core, in one process: what hutch could at best get from the
# same library.
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
        note = f"{len(objects)} objects; {version_of([str(b3sum)])}"
    else:
        name = "python blake3, all threads (no b3sum)"
        commands = [[b.python, "-c", _PY_BLAKE3, *chunk] for chunk in _chunks(objects)]
        note = f"{len(objects)} objects; no b3sum binary here (apt-get install b3sum)"
    hutch_s: list[Sample] = []
    base_s: list[Sample] = []

    def hutch(_i: int) -> None:
        hutch_s.append(b.run_hutch(b.hutch_cmd(store, "verify", "--full")))

    def baseline(_i: int) -> None:
        total = Sample(0.0, 0)
        for c in commands:
            total += run_child(c)
        base_s.append(total)

    hutch(-1)  # warm the page cache and the journal for both sides
    hutch_s.clear()
    _alternate(b.runs, hutch, baseline)
    b.rows.append(
        Row(
            "verify: hutch verify --full",
            hutch_s,
            name,
            base_s,
            target="<= 1.5x",
            limit=1.5,
            note=note,
        )
    )


# -- memory: peak RSS of adding a big artifact ---------------------------------
def bench_rss(b: Bench, size_mib: int, runs: int) -> None:
    archive = ensure_big_archive(size_mib)
    sha = sha256_file(archive)
    blake, _ = hash_file(archive)
    adds: list[Sample] = []
    with serve(archive.parent) as base_url:
        url = f"{base_url}/{archive.name}"
        for i in range(runs):
            store = b.work / f"rss-{i}"
            adds.append(b.run_hutch(b.hutch_cmd(store, "add", url, "--digest", f"sha256:{sha}")))
            drop_tree(store)  # a few dozen inodes: its deletion does not slow the next add
        # bench_fetch_rss's child scripts: the fetch alone, and its imports alone.
        dest = b.work / "fetched.bin"
        fetched = b.run_hutch([b.python, "-c", FETCH, url, str(dest), blake])
        dest.unlink()
    imports = b.run_hutch([b.python, "-c", FETCH_BASELINE])
    took = median([s.seconds for s in adds])
    b.rows.append(
        Row(
            f"memory: peak RSS, hutch add {size_mib} MiB .tar.gz",
            adds,
            target="< 100 MiB",
            limit=100,
            rss=True,
            note=f"the add took {took:.1f} s ({size_mib / took:.0f} MiB/s); the fetch alone "
            f"peaks at {fetched.maxrss_kib / 1024:.0f} MiB, importing fetch and requests "
            f"at {imports.maxrss_kib / 1024:.0f} MiB",
        )
    )


# -- start-up ------------------------------------------------------------------
def bench_startup(b: Bench, runs: int) -> None:
    version = [b.run_hutch([*b.hutch, "--version"]) for _ in range(runs + 1)][1:]
    python = [b.run_hutch([b.python, "-c", "pass"]) for _ in range(runs)]
    b.rows.append(
        Row(
            "start-up: hutch --version",
            version,
            target="< 150 ms",
            limit=0.150,
            note=f"`python -c pass` alone: {median([s.seconds for s in python]) * 1000:.0f} ms",
        )
    )


# -- the report ----------------------------------------------------------------
def _fmt(row: Row, value: float) -> str:
    return f"{value:.1f} MiB" if row.rss else f"{value:.3f} s"


def table(rows: Sequence[Row]) -> str:
    head = f"{'row':<42} {'hutch':>9}  {'baseline':<38} {'base':>8} {'ratio':>6} {'cpu':>6}  target"
    lines = [head, "-" * (len(head) + 18)]
    for r in rows:
        base = _fmt(r, median([s.seconds for s in r.baseline])) if r.baseline else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        cpu = f"{r.cpu_ratio:.2f}x" if r.cpu_ratio is not None else ""
        verdict = {None: "", True: "met", False: "NOT met"}[r.met]
        lines.append(
            f"{r.name:<42} {_fmt(r, r.value):>9}  {r.baseline_name:<38} {base:>8} "
            f"{ratio:>6} {cpu:>6}  {r.target} {verdict}".rstrip()
        )
    lines.append("")
    lines += [f"* {r.name.strip()}: {r.note}" for r in rows if r.note]
    return "\n".join(lines)


def samples(rows: Sequence[Row]) -> str:
    lines = ["samples, every run in order (wall s / cpu s, or peak MiB):"]
    seen: set[int] = set()
    for r in rows:
        for name, values in ((r.name, r.hutch), (r.baseline_name, r.baseline)):
            if not values or id(values) in seen:
                continue
            seen.add(id(values))
            if r.rss and values is r.hutch:
                text = " ".join(f"{s.maxrss_kib / 1024:.1f}" for s in values)
            else:
                text = " ".join(f"{s.seconds:.3f}/{s.cpu:.3f}" for s in values)
            lines.append(f"  {name.strip()}: {text}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per timed row (median)")
    parser.add_argument("--startup-runs", type=int, default=20)
    parser.add_argument("--rss-runs", type=int, default=3)
    parser.add_argument("--rss-mib", type=int, default=1024, help="size of the big artifact")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--work", type=Path, help="where stores and trees go (one filesystem)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter hutch's venv (and uv's target venvs) are made from",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        parser.error(f"--only takes {', '.join(SECTIONS)}")

    wheels = ensure_wheels()
    uv = ensure_uv()
    venv = hutch_venv(uv, args.python)
    hutch, python = [str(venv / "bin" / "hutch")], str(venv / "bin" / "python")
    parent = args.work or CACHE / "work"
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    b = Bench(work, args.runs, hutch, python, uv, wheels, env=bytecode_env())
    b.shas = {w: sha256_file(w) for w in wheels}
    total = sum(w.stat().st_size for w in wheels) / MIB
    print(f"machine: {machine(work)}")
    print(f"work dir: {fs_speed(work)} (one process, hot cache)")
    if journal_less(work):
        print(
            "note: ext2/3/4 without a journal: a create or mkdir here is slower for 1-6 min\n"
            "after many files were deleted on this disk (the last run's cleanup among them);\n"
            "leave 6 minutes between runs (tests/bench/README.md, On a shared machine)"
        )
    print(f"hutch: {' '.join(b.hutch)}; {version_of([str(uv)])}; work dir {work}")
    print(f"hutch runs on Python {interpreter(python)}")
    print(f"wheels: {', '.join(w.name for w in wheels)} ({total:.0f} MiB)")
    print(
        f"medians of {args.runs} runs. uv installs the wheel files directly (--offline cannot\n"
        "use a URL); hutch adds them from http://127.0.0.1 (a server thread in this process).\n"
        f"hutch is this checkout installed into {venv}\n"
        "(not editable, bytecode compiled); every command starts after an untimed sync,\n"
        "and every section once the disk has been idle for 2 s (no writes or discards\n"
        "in /proc/diskstats).\n",
        flush=True,
    )

    def quiet(section: str) -> None:
        waited = settle(work)
        print(f"{section}: the disk was quiet after {waited:.1f} s", file=sys.stderr, flush=True)

    try:
        with serve(wheels[0].parent) as base_url:
            if "cold" in only:
                quiet("cold")
                store = bench_cold(b, base_url)
            elif only & {"warm", "verify"}:
                store = fill_store(b, base_url)
            if "warm" in only:
                quiet("warm")
                bench_warm(b, store)
            if "verify" in only:
                quiet("verify")
                bench_verify(b, store)
        if "memory" in only:
            quiet("memory")
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
        data = [
            {
                "row": r.name.strip(),
                "baseline": r.baseline_name,
                "median": r.value,
                "ratio": r.ratio,
                "cpu_ratio": r.cpu_ratio,
                "target": r.target,
                "met": r.met,
                "hutch": [vars(s) for s in r.hutch],
                "base": [vars(s) for s in r.baseline],
            }
            for r in b.rows
        ]
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
