"""Warm installs by link mode: hutch against uv and cp on four real wheels (spec/install.md).

Usage: ``python tests/bench/bench_install.py [--runs 7] [--work DIR]``. Not run by
pytest; nothing here asserts on time.

For each link mode (hardlink, copy) and each wheel, the median wall time of:

- ``hutch install ID DEST --link MODE`` from a store that holds the wheel
  (one process per wheel, default ``--verify stat``: every object is stat'ed
  before linking);
- ``uv pip install --offline --no-deps WHEEL`` into a fresh venv (made before
  the clock starts) from a warm uv cache, ``--link-mode`` the same mode;
- ``cp -al`` (hardlink) or ``cp -a`` (copy) of an already installed tree: the
  floor, what the kernel charges for the same files with no bookkeeping at all.

Every command is a child process timed from spawn to exit (common.run_child),
page cache warm, the sides alternating run by run so load from elsewhere falls
on all of them. Store, uv cache, venvs and trees share one filesystem
(``--work``), so hardlinks are possible everywhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    CACHE,
    MIB,
    drop_tree,
    ensure_uv,
    ensure_wheels,
    hutch_venv,
    machine,
    median,
    run_child,
    version_of,
)

MODES = ("hardlink", "copy")
SIDES = ("hutch", "uv", "cp")


@dataclass
class Bench:
    work: Path
    runs: int
    hutch: list[str]
    uv: Path
    wheels: list[Path]
    ids: dict[Path, str] = field(default_factory=dict)
    trees: dict[Path, Path] = field(default_factory=dict)  # an installed tree per wheel, for cp
    samples: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.work / "store"

    def hutch_cmd(self, *args: str | Path) -> list[str]:
        return [*self.hutch, "--store", str(self.store), "-q", *(str(a) for a in args)]

    def uv_env(self, venv: Path, mode: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
        env.update(
            UV_CACHE_DIR=str(self.work / "uv-cache"),
            VIRTUAL_ENV=str(venv),
            UV_LINK_MODE=mode,
            UV_NO_CONFIG="1",
            UV_PYTHON_DOWNLOADS="never",
        )
        return env

    def uv_venv(self, root: Path) -> Path:
        venv = root / "venv"
        subprocess.run(
            [self.uv, "venv", "-q", "--python", sys.executable, venv],
            check=True,
            env=self.uv_env(venv, "copy"),
        )
        return venv

    def uv_install(self, venv: Path, wheel: Path, mode: str) -> float:
        cmd = [str(self.uv), "pip", "install", "-q", "--no-deps", "--offline", str(wheel)]
        return run_child(cmd, env=self.uv_env(venv, mode)).seconds

    def record(self, side: str, mode: str, wheel: Path, seconds: float) -> None:
        self.samples.setdefault((side, mode, wheel.name), []).append(seconds)


def prepare(b: Bench) -> None:
    """Not timed: add every wheel to the store, install each once (cp's source), warm uv."""
    for wheel in b.wheels:
        out = subprocess.run(b.hutch_cmd("add", wheel), check=True, capture_output=True, text=True)
        b.ids[wheel] = out.stdout.strip()
        tree = b.work / "trees" / wheel.stem
        run_child(b.hutch_cmd("install", b.ids[wheel], tree, "--link", "copy"))
        b.trees[wheel] = tree
        for mode in MODES:  # fills uv's cache with the unpacked wheel
            root = b.work / "uv-fill"
            b.uv_install(b.uv_venv(root), wheel, mode)
            drop_tree(root)


def run_mode(b: Bench, mode: str) -> None:
    def hutch(i: int, wheel: Path) -> None:
        dest = b.work / f"hutch-{i}"
        cmd = b.hutch_cmd("install", b.ids[wheel], dest, "--link", mode)
        b.record("hutch", mode, wheel, run_child(cmd).seconds)
        drop_tree(dest)

    def uv(i: int, wheel: Path) -> None:
        root = b.work / f"uv-{i}"
        venv = b.uv_venv(root)  # not timed: hutch has no venv to make
        b.record("uv", mode, wheel, b.uv_install(venv, wheel, mode))
        drop_tree(root)

    def cp(i: int, wheel: Path) -> None:
        dest = b.work / f"cp-{i}"
        flags = "-al" if mode == "hardlink" else "-a"
        b.record("cp", mode, wheel, run_child(["cp", flags, b.trees[wheel], dest]).seconds)
        drop_tree(dest)

    sides: list[Callable[[int, Path], None]] = [hutch, uv, cp]
    for i in range(b.runs):
        for wheel in b.wheels:
            # Rotate which side goes first, so drift (and cache state) falls on all three.
            order = sides[i % 3 :] + sides[: i % 3]
            for side in order:
                side(i, wheel)


def files_in(tree: Path) -> int:
    return sum(len(f) for _, _, f in os.walk(tree))


def report(b: Bench) -> None:
    head = f"{'wheel':<44} {'files':>6}  {'mode':<8} {'hutch':>8} {'uv':>8} {'cp':>8}"
    print(head + f"  {'hutch/uv':>8} {'hutch/cp':>8}")
    totals = {(side, mode): 0.0 for side in SIDES for mode in MODES}
    for mode in MODES:
        for wheel in b.wheels:
            med = {side: median(b.samples[(side, mode, wheel.name)]) for side in SIDES}
            for side in SIDES:
                totals[(side, mode)] += med[side]
            print(
                f"{wheel.name[:44]:<44} {files_in(b.trees[wheel]):>6}  {mode:<8} "
                f"{med['hutch']:>7.3f}s {med['uv']:>7.3f}s {med['cp']:>7.3f}s  "
                f"{med['hutch'] / med['uv']:>7.2f}x {med['hutch'] / med['cp']:>7.2f}x"
            )
    files = sum(files_in(t) for t in b.trees.values())
    for mode in MODES:
        t = {side: totals[(side, mode)] for side in SIDES}
        print(
            f"{'all four (sum of medians)':<44} {files:>6}  {mode:<8} "
            f"{t['hutch']:>7.3f}s {t['uv']:>7.3f}s {t['cp']:>7.3f}s  "
            f"{t['hutch'] / t['uv']:>7.2f}x {t['hutch'] / t['cp']:>7.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--work", type=Path, help="where store, cache and trees go")
    args = parser.parse_args()
    wheels = ensure_wheels()
    uv = ensure_uv()
    parent = args.work or CACHE / "work"
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="install-", dir=parent))
    b = Bench(work, args.runs, [str(hutch_venv(uv) / "bin" / "hutch")], uv, wheels)
    print(f"machine: {machine(work)}")
    print(f"hutch: {' '.join(b.hutch)}; {version_of([str(uv)])}; work dir {work}")
    total = sum(w.stat().st_size for w in wheels) / MIB
    print(f"wheels: {', '.join(w.name for w in wheels)} ({total:.0f} MiB)")
    print(f"medians of {args.runs} runs, one process per wheel on every side; cp copies a tree")
    print("hutch installed before (its floor: the same files, no verify, no bookkeeping)")
    print(flush=True)
    try:
        prepare(b)
        for mode in MODES:
            run_mode(b, mode)
        report(b)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
