"""Shared fixtures: a store, the real `hutch` command, and real archives.

Real archives, no network: a source tree packed by GNU tar (the CPython
standard library, thousands of files, like a big sdist) and the wheels that
ship inside CPython's ensurepip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Hutch:
    """Runs the real `hutch` command (python -m hutch) against one store."""

    store: Path
    env: dict[str, str]

    def __call__(
        self, *args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hutch", "--store", str(self.store), *map(str, args)],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None) -> str:
        result = self(*args, env=env)
        assert result.returncode == 0, (
            f"hutch {args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout


def _clean_env() -> dict[str, str]:
    # The command's stdout buffered, as it is for a user whose stdout is not a
    # terminal: PYTHONUNBUFFERED (set on some machines) would hide what only
    # shows when a buffer is flushed, e.g. EPIPE once a reader has left.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HUTCH_") and k != "PYTHONUNBUFFERED"
    }
    env["HUTCH_HTTP_BACKOFF"] = "0.01"
    return env


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def hutch(store_root: Path) -> Hutch:
    return Hutch(store_root, _clean_env())


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HUTCH_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HUTCH_HTTP_BACKOFF", "0.01")


@pytest.fixture
def lone_thread() -> None:
    """Wait until this process runs no other thread: parallel.forked() falls back to
    threads while another is alive, and a loopback server of an earlier test may still
    be ending its handler threads. For tests that fork in-process, as a command does."""
    deadline = time.monotonic() + 30
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == 1, f"threads still alive: {threading.enumerate()}"


@pytest.fixture(scope="session")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .tar.gz made by GNU tar of a real source tree with thousands of files."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = tmp_path_factory.mktemp("sdist") / "stdlib-3.11.tar.gz"
    subprocess.run(
        [
            "tar",
            "-C",
            str(stdlib.parent),
            "--exclude=__pycache__",
            "--exclude=site-packages",
            "--exclude=*.so",
            "--exclude=*.a",
            "-czf",
            str(out),
            stdlib.name,
        ],
        check=True,
    )
    return out


@pytest.fixture(scope="session")
def wheels() -> list[Path]:
    """Real wheels: the pip and setuptools wheels bundled with CPython."""
    import ensurepip

    found = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("*.whl"))
    if not found:
        pytest.skip("this Python has no bundled ensurepip wheels")
    return found


def tree(root: Path) -> dict[str, tuple[str, bytes | str, bool]]:
    """A directory as {relpath: (kind, content-or-target, executable)} for comparisons."""
    out: dict[str, tuple[str, bytes | str, bool]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("symlink", os.readlink(path), False)
            elif path.is_dir():
                out[rel] = ("dir", b"", False)
            else:
                out[rel] = ("file", path.read_bytes(), bool(path.stat().st_mode & 0o100))
    return out


def tamper(store: Path, db: str, key: str, change: Callable[[Any], object]) -> None:
    """Change one JSON value in the journal behind hutch's back, with LMDB directly."""
    import lmdb

    env = lmdb.open(str(store / "journal"), max_dbs=8)
    try:
        handle = env.open_db(db.encode())
        with env.begin(write=True) as txn:
            raw = txn.get(key.encode(), db=handle)
            assert raw is not None, (db, key)
            data = json.loads(bytes(raw))
            change(data)
            txn.put(key.encode(), json.dumps(data).encode(), db=handle)
    finally:
        env.close()


def objects(store: Path) -> list[Path]:
    return sorted(p for p in (store / "objects").rglob("*") if p.is_file())


@pytest.fixture
def chdir_tmp(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
