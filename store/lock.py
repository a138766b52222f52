"""Lock files that work on local and network filesystems (spec/store.md §8).

POSIX record locks (fcntl F_SETLK) on files opened read-write. Never flock(2):
on some NFS and Lustre mounts it "succeeds" without locking anything across
hosts, while fcntl locks go through the NFS lock manager. Waits poll with
backoff and are bounded, so a stuck holder produces a clear error, not a hang.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from hutch.store.errors import LockTimeout, store_error

DEFAULT_TIMEOUT = 600.0


def lock_timeout() -> float:
    return float(os.environ.get("HUTCH_LOCK_TIMEOUT", DEFAULT_TIMEOUT))


class FileLock:
    """An exclusive or shared lock on ``path``, held until release() or exit."""

    def __init__(
        self, path: Path, *, shared: bool = False, timeout: float | None = None, mode: int = 0o644
    ) -> None:
        self.path = path
        self.shared = shared
        self.timeout = lock_timeout() if timeout is None else timeout
        self.mode = mode
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free now; never waits."""
        fd = self._open()
        try:
            fcntl.lockf(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise store_error("lock", self.path, exc) from exc
        self._fd = fd
        if not self.shared:
            _record_holder(fd)
        return True

    def acquire(self) -> Self:
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"timed out after {self.timeout:g} s waiting for {self.path} "
                    f"(held by {_read_holder(self.path) or 'another process'})",
                    path=self.path,
                    op="lock",
                    hint="another hutch is working on this; if none is running, the holder may "
                    "be on another host; raise HUTCH_LOCK_TIMEOUT to wait longer",
                )
            time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, 0.5)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the fcntl lock
            self._fd = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.mode)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.mode)
        except OSError as exc:
            raise store_error("open lock file", self.path, exc) from exc

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _record_holder(fd: int) -> None:
    # Best effort: lets a timeout message say who holds the lock.
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
    except OSError:
        pass


def _read_holder(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
