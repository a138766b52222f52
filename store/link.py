"""Putting one object at one destination path: reflink, hardlink, copy or symlink.

`auto` tries reflink, then hardlink, then copy, per file, and falls back only
for the causes that mean "this way cannot work here" (spec/install.md §2):

    reflink  → hardlink   EOPNOTSUPP, ENOTTY, EINVAL (no FICLONE for these files),
                          EXDEV (another filesystem)
    hardlink → copy       EXDEV (another filesystem), EPERM/EACCES (protected
                          hardlinks: another user's object), EMLINK (link limit)

Every other error (ENOSPC, ENOENT of the object, ...) is raised. An explicit
mode that meets one of its own causes raises LinkFailed, which names the mode,
both paths and the OS error. The modes used and the fallbacks by cause are
counted for the install summary (``Linker.summary``), said once per install.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

LinkMode = Literal["auto", "reflink", "hardlink", "copy", "symlink"]
MODES: tuple[LinkMode, ...] = ("auto", "reflink", "hardlink", "copy", "symlink")

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
# Why each way can fail for reasons that are about *where*, not about a bug.
_CANNOT = {
    "reflink": {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV},
    "hardlink": {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK},
    # Some filesystems (vfat, some FUSE) have no symlinks.
    "symlink": {errno.EPERM, errno.EOPNOTSUPP},
    "copy": set(),
}
# Causes that hold for every file of this install (the same two filesystems):
# once seen, stop trying that way, so an ext4 install pays for one failed
# FICLONE, not one per file.
_FS_WIDE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV}
_ORDER = ("reflink", "hardlink", "copy", "symlink")
_Fill = Callable[[int, int], object]


class Fallback(NamedTuple):
    """One reason a way of linking was refused: `hardlink`, `EPERM`, and why."""

    way: str
    errno: str
    reason: str
    fs_wide: bool


class LinkFailed(OSError):
    """An explicit link mode that cannot work here; carries the mode and the OS cause."""

    def __init__(self, mode: str, exc: OSError, src: str, dst: str) -> None:
        super().__init__(exc.errno, exc.strerror, src, None, dst)
        self.mode = mode
        self.src = Path(src)
        self.dst = Path(dst)
        self.reason = _reason(mode, exc.errno or 0, src)

    def __reduce__(self) -> tuple[object, ...]:
        # Raised in a forked build worker and re-raised in the parent (install._build).
        cause = OSError(self.errno, self.strerror, os.fspath(self.src), None, os.fspath(self.dst))
        return (type(self), (self.mode, cause, os.fspath(self.src), os.fspath(self.dst)))


class Dirs(NamedTuple):
    """The two directories of a build: each as a path (for messages, and the
    targets of `--link symlink`) and as an open descriptor that every per-file
    call starts from. link(2) then walks the two components of ``ab/cdef…``
    and the entry's own path, not the ten or so of two full paths: a fifth of
    a build's time on tmpfs (measured, 11,600 entries)."""

    objects: str
    objects_fd: int
    root: str
    root_fd: int

    def named(self, exc: OSError, src: str, dst: str) -> OSError:
        """``exc`` from a call on ``src`` (under objects) and ``dst`` (under root), naming
        both in full: the class (FileNotFoundError, ...) follows the errno as before."""
        return OSError(exc.errno, exc.strerror, f"{self.objects}/{src}", None, f"{self.root}/{dst}")

    def in_root(self, exc: OSError, path: str) -> OSError:
        """``exc`` from a call on ``path`` under root, naming it in full."""
        return OSError(exc.errno, exc.strerror, f"{self.root}/{path}")


@contextlib.contextmanager
def opened(objects: str, root: str) -> Iterator[Dirs]:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    objects_fd = os.open(objects, flags)
    try:
        root_fd = os.open(root, flags)
        try:
            yield Dirs(objects, objects_fd, root, root_fd)
        finally:
            os.close(root_fd)
    finally:
        os.close(objects_fd)


# (object key, object path under objects/, destination path under the root,
# executable, the manifest's size)
Job = tuple[str, str, str, bool, int]
# What is wrong with an object (verify.stat_problem: its path under the
# directory the descriptor opens, size, key, descriptor), checked just before its link.
Check = Callable[[str, int, str, int], str | None]


class Linker:
    """Links the files of one install and remembers how (``used``) and why not (``fallbacks``).

    One Linker per part of a tree (install._build); they are merged for the summary.
    """

    def __init__(self, mode: LinkMode, *, exact_modes: bool = True) -> None:
        self.mode = mode
        self.used: Counter[str] = Counter()
        self.fallbacks: Counter[Fallback] = Counter()
        self._skip: set[str] = set()
        self._chain: list[str] = ["reflink", "hardlink", "copy"] if mode == "auto" else [mode]
        # False when the umask keeps 0644/0755 as they are: no fchmod per copy.
        self._exact = exact_modes
        self.damaged: list[tuple[str, str]] = []  # (object key, problem): not linked

    def link_many(self, jobs: Sequence[Job], at: Dirs, check: Check | None = None) -> None:
        """Place every job: one tight loop while the way that worked keeps working.

        Every path is under ``at``'s directories. ``check`` (verify.stat_problem)
        runs on each object just before it is linked; an object it refuses is
        not linked but listed in ``damaged``. A per-file refusal (EPERM,
        EMLINK) sends that file down the chain of ways (_fall_back); a
        filesystem-wide one also changes the way the loop uses from then on.
        """
        way = next(w for w in self._chain if w not in self._skip)
        place = _WAYS[way]
        placed = 0
        exact = self._exact
        objects_fd = at.objects_fd
        for key, src, dst, executable, size in jobs:
            if check is not None and (problem := check(src, size, key, objects_fd)) is not None:
                self.damaged.append((key, problem))
                continue
            try:
                place(at, src, dst, executable, exact)
            except OSError as exc:
                self._refused(way, at.named(exc, src, dst))
                self._fall_back(way, at, src, dst, executable=executable)
                if way in self._skip:
                    self.used[way] += placed
                    placed = 0
                    way = next(w for w in self._chain if w not in self._skip)
                    place = _WAYS[way]
                continue
            placed += 1
        self.used[way] += placed

    def _fall_back(self, failed: str, at: Dirs, src: str, dst: str, *, executable: bool) -> str:
        """Place ``src`` by the ways after ``failed`` (just refused); the one that worked."""
        for way in self._chain[self._chain.index(failed) + 1 :]:
            if way in self._skip:
                continue
            try:
                _WAYS[way](at, src, dst, executable, self._exact)
            except OSError as exc:
                self._refused(way, at.named(exc, src, dst))
                continue
            self.used[way] += 1
            return way
        # Unreachable: copy, the last way of `auto`, never falls back.
        raise AssertionError(self._chain)  # pragma: no cover

    def _refused(self, way: str, exc: OSError) -> None:
        """Record why ``way`` could not place ``exc.filename``, or raise if that is not
        a fallback. ``exc`` names both paths in full (Dirs.named)."""
        code = exc.errno or 0
        if code not in _CANNOT[way]:
            raise exc
        src, dst = str(exc.filename), str(exc.filename2)
        if self.mode != "auto":
            raise LinkFailed(way, exc, src, dst) from exc
        fs_wide = code in _FS_WIDE
        label = way
        if fs_wide:
            self._skip.add(way)
            if code == errno.EXDEV and way == "reflink":
                # A hard link cannot cross filesystems either: say it once.
                self._skip.add("hardlink")
                label = "reflink or hardlink"
        name = errno.errorcode.get(code, str(code))
        self.fallbacks[Fallback(label, name, _reason(way, code, src), fs_wide)] += 1

    @classmethod
    def merged(cls, mode: LinkMode, linkers: Sequence[Linker]) -> Linker:
        out = cls(mode)
        for linker in linkers:
            out.used.update(linker.used)
            out.damaged += linker.damaged
            for fb, n in linker.fallbacks.items():
                if fb.fs_wide:
                    out.fallbacks[fb] = 1  # said once, however many threads met it
                else:
                    out.fallbacks[fb] += n
        return out

    def summary(self) -> str:
        """`2370 hardlink, 3 copy; hardlink refused: EPERM x3 — another user's objects ...`.

        Each cause once, with how many files it sent to the next way; a cause
        that holds for the whole filesystem is said without a count, since
        after the first file that way was not tried again.
        """
        used = ", ".join(f"{self.used[way]} {way}" for way in _ORDER if self.used[way])
        clauses: dict[str, list[str]] = {}
        for fb, n in self.fallbacks.items():  # in the order they were first met
            if fb.fs_wide:
                clauses.setdefault(f"no {fb.way}", []).append(f"{fb.errno} — {fb.reason}")
            else:
                clauses.setdefault(f"{fb.way} refused", []).append(f"{fb.errno} x{n} — {fb.reason}")
        said = [f"{head}: {', '.join(why)}" for head, why in clauses.items()]
        return "; ".join([used or "nothing linked", *said])


def _reason(way: str, code: int, src: str) -> str:
    """Why ``way`` failed with ``code``, in the words of spec/install.md's fallback table."""
    if code == errno.EXDEV:
        return "the store and DEST are on different filesystems"
    if way == "reflink" and code == errno.EINVAL:
        # btrfs: cloning between a nodatacow (chattr +C) file and a normal one.
        return "the filesystem refused to clone these files"
    if way == "reflink":
        return "this filesystem has no reflink"
    if code == errno.EMLINK:
        return "the object has as many links as the filesystem allows"
    if way == "hardlink" and code in (errno.EPERM, errno.EACCES):
        try:
            owner = os.stat(src).st_uid
        except OSError:
            owner = os.geteuid()
        if owner != os.geteuid():
            # fs.protected_hardlinks (proc_sys_fs(5)): only the owner, or a user
            # who can read *and write* the file, may hard-link it; objects are 0444.
            if _protected_hardlinks():
                return "another user's objects under fs.protected_hardlinks"
            return "another user's objects"
    return "not permitted on this filesystem"


@functools.cache
def _protected_hardlinks() -> bool:
    try:
        with open("/proc/sys/fs/protected_hardlinks", "rb") as f:
            return f.read().strip() == b"1"
    except OSError:
        return False


def _open_dst(at: Dirs, dst: str, executable: bool, exact: bool) -> int:
    mode = 0o755 if executable else 0o644
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode, dir_fd=at.root_fd)
    if exact:
        # The umask must not make an installed file unreadable or lose its exec bit.
        try:
            os.fchmod(fd, mode)
        except OSError:
            # A filesystem that refuses modes (vfat, a FUSE mount): leave neither
            # the descriptor nor an empty file behind, and say the fchmod's error.
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(dst, dir_fd=at.root_fd)
            raise
    return fd


def _hardlink(at: Dirs, src: str, dst: str, _executable: bool, _exact: bool) -> None:
    # The object's own mode (0444/0555) comes with the inode.
    os.link(src, dst, src_dir_fd=at.objects_fd, dst_dir_fd=at.root_fd)


def _symlink(at: Dirs, src: str, dst: str, _executable: bool, _exact: bool) -> None:
    os.symlink(f"{at.objects}/{src}", dst, dir_fd=at.root_fd)


def _reflink(at: Dirs, src: str, dst: str, executable: bool, exact: bool) -> None:
    _into_new_file(at, src, dst, executable, exact, _clone_fds)


def _copy(at: Dirs, src: str, dst: str, executable: bool, exact: bool) -> None:
    _into_new_file(at, src, dst, executable, exact, _copy_fds)


def _into_new_file(
    at: Dirs, src: str, dst: str, executable: bool, exact: bool, fill: _Fill
) -> None:
    """Create ``dst`` and fill it from ``src``; on any failure ``dst`` is gone again."""
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC, dir_fd=at.objects_fd)
    try:
        dfd = _open_dst(at, dst, executable, exact)
        try:
            fill(sfd, dfd)
        except OSError:
            os.close(dfd)
            os.unlink(dst, dir_fd=at.root_fd)
            raise
        os.close(dfd)
    finally:
        os.close(sfd)


def _clone_fds(sfd: int, dfd: int) -> None:
    fcntl.ioctl(dfd, FICLONE, sfd)


def _copy_fds(sfd: int, dfd: int) -> None:
    try:
        # copy_file_range copies in the kernel (and server-side on NFS 4.2);
        # on xfs and btrfs it may share extents like a reflink does.
        while os.copy_file_range(sfd, dfd, 1 << 30):
            pass
    except OSError as exc:
        # Older kernels refuse it across filesystems or on some (FUSE, NFS<4.2).
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        os.lseek(sfd, 0, os.SEEK_SET)
        os.ftruncate(dfd, 0)
        os.lseek(dfd, 0, os.SEEK_SET)
        while chunk := os.read(sfd, 1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(dfd, view) :]


_WAYS: dict[str, Callable[[Dirs, str, str, bool, bool], None]] = {
    "reflink": _reflink,
    "hardlink": _hardlink,
    "copy": _copy,
    "symlink": _symlink,
}
