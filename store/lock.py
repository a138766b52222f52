"""Lock files that work on local and network filesystems (spec/store.md §8).

POSIX record locks (fcntl F_SETLK) on files opened read-write. Never flock(2):
on some NFS and Lustre mounts it "succeeds" without locking anything across
hosts, while fcntl locks go through the NFS lock manager (nfs(5), "lock /
nolock"). Write locks need a writable descriptor over NFS, hence O_RDWR even
for shared locks. Waits poll with backoff and are bounded, so a stuck holder
produces a clear error naming the file and the holder, not a hang.

POSIX record locks belong to the *process*, not to the descriptor (fcntl(2),
"Record locking"): a second lock on the same file in the same process always
succeeds, and closing *any* descriptor of the file drops every lock the process
holds on it. So this module keeps a per-process table of the files it holds:
an in-process contender waits for the holder instead of "sharing" its lock, and
a descriptor opened on a file this process holds is never closed before the
holder releases it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from hutch.store.errors import LockTimeout, UsageError, store_error
from hutch.store.fsutil import hostname

DEFAULT_TIMEOUT = 600.0

# struct flock: l_type, l_whence, l_start, l_len, l_pid (+ padding). Python is
# built with 64-bit off_t, so F_GETLK uses this layout on every Linux ABI.
_FLOCK = "hhqqi4x"

_Key = tuple[int, int]  # (st_dev, st_ino) of a lock file
_TABLE = threading.Lock()
_HELD: dict[_Key, FileLock] = {}
# Descriptors opened on a file another FileLock of this process holds; closing
# one would release that holder's lock, so they are closed when it releases.
_PARKED: dict[_Key, list[int]] = {}


def _forget_after_fork() -> None:
    # A child inherits neither the parent's POSIX locks nor any reason to close
    # its descriptors; it starts with an empty table.
    _HELD.clear()
    _PARKED.clear()
    _JOINED.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def lock_timeout() -> float:
    raw = os.environ.get("HUTCH_LOCK_TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise UsageError(
            f"invalid HUTCH_LOCK_TIMEOUT {raw!r}",
            hint="give the longest wait for a lock in seconds, e.g. 600",
        )
    return value


class FileLock:
    """An exclusive or shared lock on ``path``, held until release() or exit.

    ``create=False`` never creates the file (or its directory): a prober of
    someone else's lock, like the staging sweep, must not resurrect a file its
    owner just removed.
    """

    def __init__(
        self,
        path: Path,
        *,
        shared: bool = False,
        timeout: float | None = None,
        mode: int = 0o644,
        create: bool = True,
    ) -> None:
        self.path = path
        self.shared = shared
        self.timeout = lock_timeout() if timeout is None else timeout
        self.mode = mode
        self.create = create
        self._fd: int | None = None
        self._key: _Key | None = None
        self._thread: int | None = None

    @property
    def held(self) -> bool:
        return self._key is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free now; never waits. False if busy or the file is gone."""
        try:
            if self._try(waiting=False):
                return True
        except BaseException:
            self._drop_fd()
            raise
        self._drop_fd()
        return False

    def acquire(self) -> Self:
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        try:
            # One descriptor for the whole wait: polling needs no open/close per try.
            while not self._try(waiting=True):
                if time.monotonic() >= deadline:
                    raise self._timed_out()
                # Jitter, so waiters do not retry in lockstep (not crypto: any spread will do).
                time.sleep(delay * (0.5 + os.urandom(1)[0] / 255))
                delay = min(delay * 2, 0.5)
        except BaseException:
            self._drop_fd()
            raise
        return self

    def release(self) -> None:
        with _TABLE:
            if self._key is not None:
                _HELD.pop(self._key, None)  # absent in a forked child
                for fd in _PARKED.pop(self._key, []):
                    os.close(fd)
                self._key = None
                self._thread = None
            self._drop_fd_locked()

    def rename(self, target: Path) -> None:
        """Move the held lock file to ``target``; the lock stays with the file (its inode)."""
        assert self.held, "rename() needs the lock held"
        try:
            os.rename(self.path, target)
        except OSError as exc:
            raise store_error("rename lock file", self.path, exc) from exc
        self.path = target

    def holder(self) -> str:
        """Who holds the lock now, as well as the lock file and the kernel can tell."""
        recorded = _read_holder(self.path)
        live = _live_holder(self.path, self._fd, shared=self.shared)
        if live is None:
            return recorded or "another process"
        kind, pid = live
        if pid <= 0:  # a remote holder over NFS: the kernel cannot name it
            return f"a {kind} lock from another host" + (f" ({recorded})" if recorded else "")
        if recorded.startswith(f"{hostname()} pid {pid} "):
            return recorded
        return f"pid {pid} ({kind})" + (f"; last recorded holder: {recorded}" if recorded else "")

    # -- internals ------------------------------------------------------------
    def _try(self, *, waiting: bool) -> bool:
        while True:
            if self._fd is None:
                fd = self._open()
                if fd is None:
                    return False
                self._fd = fd
            verdict = self._attempt(waiting=waiting)
            if verdict is not None:
                return verdict
            # The path no longer names the file we locked: retry on the new one.
            if not self.create:
                return False

    def _attempt(self, *, waiting: bool) -> bool | None:
        """Try to lock the open descriptor: True, False (busy), or None (file replaced).

        ``waiting``: the caller would wait, so this thread holding the lock already
        is a self-deadlock, raised at once instead of after the whole timeout.
        """
        assert self._fd is not None
        fd = self._fd
        key = _key(os.fstat(fd))
        with _TABLE:
            other = _HELD.get(key)
            if other is not None:
                if waiting and other._thread == threading.get_ident():
                    raise RuntimeError(
                        f"{self.path} is already locked by this thread; a nested POSIX lock "
                        "is a no-op and releasing it would drop the outer one"
                    )
                return False  # another thread of ours holds it: wait for it
            try:
                fcntl.lockf(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    return False
                raise store_error("lock", self.path, exc) from exc
            # Locked, but is it still the file at our path? Its owner (a staging
            # directory being removed) or a cleaner may have unlinked it since
            # we opened it; a lock on an unlinked inode excludes nobody.
            try:
                current = _key(os.stat(self.path))
            except OSError:
                current = None
            if current != key:
                self._drop_fd_locked()
                return None
            _HELD[key] = self
            self._key = key
            self._thread = threading.get_ident()
        if not self.shared:
            _record_holder(fd)
        return True

    def _open(self) -> int | None:
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
        while True:
            try:
                return os.open(self.path, flags)
            except FileNotFoundError:
                if not self.create:
                    return None
            except OSError as exc:
                raise store_error("open lock file", self.path, exc) from exc
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, self.mode)
            except FileExistsError:
                continue  # another process created it first: open theirs
            except FileNotFoundError:
                # A cleaner removed locks/ (or it never existed): it only costs a mkdir.
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            except OSError as exc:
                raise store_error("create lock file", self.path, exc) from exc
            try:
                # The umask must not strip a shared store's group-write bit: other
                # users need to open the file read-write to lock it.
                os.fchmod(fd, self.mode)
            except OSError:
                pass  # the lock still works for this user; others will say why not
            return fd

    def _drop_fd(self) -> None:
        with _TABLE:
            self._drop_fd_locked()

    def _drop_fd_locked(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        key = _key(os.fstat(fd))
        if key in _HELD and _HELD[key] is not self:
            _PARKED.setdefault(key, []).append(fd)
        else:
            os.close(fd)

    def _timed_out(self) -> LockTimeout:
        return LockTimeout(
            f"timed out after {self.timeout:g} s waiting for "
            f"{'a shared' if self.shared else 'an exclusive'} lock on {self.path} "
            f"(held by {self.holder()})",
            path=self.path,
            op="lock",
            hint="another hutch is working on this store; wait for it, or raise "
            "HUTCH_LOCK_TIMEOUT (seconds) to wait longer. A holder on another host "
            "(NFS) keeps its lock until it exits or its host's lock manager drops it",
        )

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


_JOINT = threading.Lock()
_JOINED: dict[Path, tuple[FileLock, int]] = {}


@contextmanager
def joint_shared(path: Path, *, mode: int) -> Iterator[None]:
    """A shared lock that the threads of this process hold together.

    The first thread in takes it, the last one out releases it. FileLock alone
    would make a second thread wait for the first (a POSIX lock belongs to the
    process, so it cannot be shared twice), which would serialise concurrent
    adds in one `hutch add A B C` on gc.lock for no reason.
    """
    with _JOINT:
        held, count = _JOINED.get(path, (None, 0))
        if held is None:
            held = FileLock(path, shared=True, mode=mode).acquire()
        _JOINED[path] = (held, count + 1)
    try:
        yield
    finally:
        with _JOINT:
            held, count = _JOINED[path]
            if count == 1:
                del _JOINED[path]
                held.release()
            else:
                _JOINED[path] = (held, count - 1)


def is_locked(path: Path) -> bool:
    """Does any process hold a lock on ``path``? Asks the kernel (F_GETLK); takes nothing.

    For probing a lock its owner is about to take: trying to take it ourselves
    could win that race and make the owner fail.
    """
    return _live_holder(path, None, shared=True) is not None


def _key(st: os.stat_result) -> _Key:
    return (st.st_dev, st.st_ino)


def _record_holder(fd: int) -> None:
    # Best effort: lets a timeout message say who holds the lock and since when.
    # The kernel (F_GETLK) knows the pid on this host; only the file knows the
    # host and the command, which is what a user on another NFS client needs.
    import shlex

    command = shlex.join(["hutch", *sys.argv[1:]])[:300]
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    text = f"{hostname()} pid {os.getpid()} since {since}: {command}\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(errors="replace"), 0)
    except OSError:
        pass


def _read_holder(path: Path) -> str:
    # Under _TABLE, and through the holder's own descriptor if this process holds
    # the file: closing a descriptor of our own would drop that lock.
    with _TABLE:
        try:
            holder = _HELD.get(_key(os.stat(path)))
            if holder is not None and holder._fd is not None:
                raw = os.pread(holder._fd, 512, 0)
            else:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                try:
                    raw = os.pread(fd, 512, 0)
                finally:
                    os.close(fd)
        except OSError:
            return ""
    return raw.decode(errors="replace").strip()


def _live_holder(path: Path, fd: int | None, *, shared: bool) -> tuple[str, int] | None:
    """(kind, pid) of a lock that conflicts with the one we want (F_GETLK), or None.

    Asks through our own descriptor when we have one. Otherwise it opens one,
    but never on a file this process holds: closing it would drop our lock.
    """
    want = fcntl.F_RDLCK if shared else fcntl.F_WRLCK
    query = struct.pack(_FLOCK, want, os.SEEK_SET, 0, 0, 0)
    try:
        if fd is not None:
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        else:
            # Under _TABLE, so no thread of ours takes the lock between the
            # check and the close.
            with _TABLE:
                if _key(os.stat(path)) in _HELD:
                    return ("exclusive", os.getpid())
                own = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                try:
                    answer = fcntl.fcntl(own, fcntl.F_GETLK, query)
                finally:
                    os.close(own)
        kind, _, _, _, pid = struct.unpack(_FLOCK, answer)
    except OSError:
        return None
    if kind == fcntl.F_UNLCK:
        return None
    return ("shared" if kind == fcntl.F_RDLCK else "exclusive", pid)
