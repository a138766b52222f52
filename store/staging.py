"""Private staging directories, and sweeping the ones a crash left (spec/store.md §6).

A staging directory `staging/<host>-<pid>-<random>/` is alive while its owner
holds the fcntl lock on its `.owner` file. The owner creates and locks that file
under a temporary name and renames it into place, so a sweeper never sees an
unlocked `.owner` of a live operation. A directory without `.owner` is being
created, was being removed, or its owner died in between; the pid in its name
tells which on this host, its age elsewhere.

Sweepers take `locks/sweep.lock` (without waiting: if another process is
sweeping, it does the job), so each dead operation is removed and logged once.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hutch.store.errors import HutchError, store_error
from hutch.store.fsutil import hostname
from hutch.store.journal import LogRecord
from hutch.store.lock import FileLock, is_locked

OWNER = ".owner"
# The owner file's name until it is locked and op.json is written.
NEW_OWNER = ".owner.new"
# A directory with no owner file whose pid cannot be checked (another host, or
# a pid in use again) is either being created right now or was left by a crash
# between mkdir and the owner's rename; after this long it is the latter.
_ORPHAN_AGE = 60.0


@contextmanager
def staging(root: Path, op: str, detail: str) -> Iterator[Path]:
    """A fresh private directory for one operation, removed when it ends, however it ends.

    The owner lock is held for the operation's lifetime; a sweeper that can take
    it knows the owner is dead.
    """
    name = f"{hostname()}-{os.getpid()}-{os.urandom(4).hex()}"
    path = root / name
    try:
        path.mkdir(mode=0o700)
    except FileNotFoundError:
        root.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
    except OSError as exc:
        raise store_error("create a staging directory in", root, exc) from exc
    owner = FileLock(path / NEW_OWNER, timeout=0)
    try:
        owner.acquire()
        info = {"op": op, "detail": detail, "pid": os.getpid(), "time": time.time()}
        try:
            (path / "op.json").write_text(json.dumps(info))
        except OSError as exc:
            raise store_error("write", path / "op.json", exc) from exc
        owner.rename(path / OWNER)
        yield path
    finally:
        # Removed while still locked, so no sweeper takes it for dead meanwhile;
        # a crash halfway leaves a directory whose pid is dead: swept at once.
        _remove(path)
        owner.release()


def sweep(root: Path, lock_dir: Path | None = None) -> list[LogRecord]:
    """Remove staging directories whose owner died; one `aborted` record for each.

    ``lock_dir`` holds sweep.lock (default: the store's locks/, beside ``root``).
    """
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise store_error("list", root, exc) from exc
    if not entries:
        return []
    locks = lock_dir or root.parent / "locks"
    guard = FileLock(locks / "sweep.lock", timeout=0, mode=_lock_mode(locks))
    try:
        if not guard.try_acquire():
            return []  # another process is sweeping right now
    except HutchError:
        return []  # housekeeping must not fail the command; `hutch doctor` reports leftovers
    try:
        return [r for e in entries if (r := _sweep_one(Path(e.path))) is not None]
    finally:
        guard.release()


def _sweep_one(path: Path) -> LogRecord | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None  # not ours: staging only ever holds directories
    owner = _dead_owner(path, st)
    if owner is None:
        return None
    try:
        info = _op_info(path)
        if not _remove(path):
            return None  # another user's directory we may not delete: doctor reports it
    finally:
        if isinstance(owner, FileLock):
            owner.release()
    pid = info.get("pid", _pid_of(path.name) or "?")
    return LogRecord.now(
        str(info.get("op", "unknown")),
        "aborted",
        detail=f"recovered after crash: {info.get('detail', path.name)} (pid {pid})",
    )


def _dead_owner(path: Path, st: os.stat_result) -> FileLock | bool | None:
    """The dead owner's lock, now ours (or True when there is none to take); None if alive."""
    owner = FileLock(path / OWNER, timeout=0, create=False)
    try:
        if owner.try_acquire():
            return owner
        if os.path.lexists(path / OWNER):
            return None  # locked: its owner is alive
        # Only asked, never taken: its owner may be about to lock it.
        if is_locked(path / NEW_OWNER):
            return None
    except HutchError:
        return None  # cannot even open it (another user's 0700 directory): not ours
    # No locked owner file: being created, being removed, or its owner died.
    pid = _pid_of(path.name)
    if pid is not None and path.name.startswith(f"{hostname()}-") and not _alive(pid):
        return True
    return True if time.time() - st.st_mtime >= _ORPHAN_AGE else None


def _remove(path: Path) -> bool:
    """Remove a staging directory; True if it is gone."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return not os.path.lexists(path)


def _op_info(path: Path) -> dict[str, object]:
    try:
        info = json.loads((path / "op.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _pid_of(name: str) -> int | None:
    # <host>-<pid>-<random>; the host name may itself contain dashes.
    parts = name.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _lock_mode(locks: Path) -> int:
    # A group-shared store's locks/ is group-writable (setgid 2775); its lock
    # files must be too, or other members cannot open them read-write to lock.
    with contextlib.suppress(OSError):
        if os.stat(locks).st_mode & stat.S_IWGRP:
            return 0o664
    return 0o644
