"""Private staging directories, and sweeping the ones a crash left (spec/store.md §6)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hutch.store.errors import store_error
from hutch.store.journal import LogRecord
from hutch.store.lock import FileLock

OWNER = ".owner"
# A directory with no owner file yet is either being created right now or was
# left by a crash between mkdir and open; after this long it is the latter.
_ORPHAN_AGE = 60.0


@contextmanager
def staging(root: Path, op: str, detail: str) -> Iterator[Path]:
    """A fresh private directory for one operation, removed when it ends, however it ends.

    The owner lock is held for the operation's lifetime; a sweeper that can take
    it knows the owner is dead.
    """
    name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    path = root / name
    try:
        path.mkdir(mode=0o700)
    except FileNotFoundError:
        root.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
    except OSError as exc:
        raise store_error("create a staging directory in", root, exc) from exc
    owner = FileLock(path / OWNER, timeout=0)
    try:
        owner.acquire()
        info = {"op": op, "detail": detail, "pid": os.getpid(), "time": time.time()}
        (path / "op.json").write_text(json.dumps(info))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        owner.release()


def sweep(root: Path) -> list[LogRecord]:
    """Remove staging directories whose owner died; one `aborted` record for each."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    records = []
    for name in names:
        path = root / name
        owner = FileLock(path / OWNER, timeout=0)
        if not (path / OWNER).exists():
            try:
                if time.time() - path.stat().st_mtime < _ORPHAN_AGE:
                    continue
            except FileNotFoundError:
                continue
        elif not owner.try_acquire():
            continue  # alive
        try:
            info = json.loads((path / "op.json").read_text())
        except (OSError, ValueError):
            info = {}
        shutil.rmtree(path, ignore_errors=True)
        owner.release()
        record = LogRecord.now(
            str(info.get("op", "unknown")),
            "aborted",
            detail=f"recovered after crash: {info.get('detail', name)} "
            f"(pid {info.get('pid', '?')})",
        )
        records.append(record)
    return records
