"""Putting one object at one destination path: reflink, hardlink, copy or symlink.

`auto` tries reflink, then hardlink, then copy, per file, and falls back only
for the causes that mean "this way cannot work here" (spec/install.md):

    reflink  → hardlink   EOPNOTSUPP, EINVAL, ENOTTY, EXDEV (no FICLONE here)
    hardlink → copy       EXDEV (another filesystem), EPERM/EACCES (protected
                          hardlinks, another owner), EMLINK (too many links)

Every other error (ENOSPC, ENOENT of the object, ...) is raised. The counts of
modes used and of fallbacks by cause are kept for the install summary.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections import Counter
from pathlib import Path
from typing import Literal

LinkMode = Literal["auto", "reflink", "hardlink", "copy", "symlink"]
MODES: tuple[LinkMode, ...] = ("auto", "reflink", "hardlink", "copy", "symlink")

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
_NO_REFLINK = {errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY, errno.EXDEV, errno.EBADF}
_NO_HARDLINK = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK}
# Causes that hold for a whole filesystem: once seen, stop trying that way.
_FS_WIDE = {errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY, errno.EXDEV}


class LinkFailed(OSError):
    """An explicit link mode that cannot work here; carries the mode and the OS cause."""

    def __init__(self, mode: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror, exc.filename, None, exc.filename2)
        self.mode = mode


class Linker:
    def __init__(self, mode: LinkMode) -> None:
        self.mode = mode
        self.used: Counter[str] = Counter()
        self.fallbacks: Counter[tuple[str, str]] = Counter()  # (from-mode, errno name)
        self._skip: set[str] = set()

    def link(self, src: Path, dst: Path, *, executable: bool) -> None:
        if self.mode == "symlink":
            os.symlink(src, dst)
            self.used["symlink"] += 1
            return
        if self.mode == "copy":
            _copy(src, dst, executable)
            self.used["copy"] += 1
            return
        chain: list[str] = ["reflink", "hardlink", "copy"] if self.mode == "auto" else [self.mode]
        for way in chain:
            if way in self._skip:
                continue
            try:
                if way == "reflink":
                    _reflink(src, dst, executable)
                elif way == "hardlink":
                    os.link(src, dst)
                else:
                    _copy(src, dst, executable)
            except OSError as exc:
                allowed = _NO_REFLINK if way == "reflink" else _NO_HARDLINK
                if way == "copy" or exc.errno not in allowed:
                    raise
                if self.mode != "auto":
                    raise LinkFailed(way, exc) from exc
                self.fallbacks[(way, errno.errorcode.get(exc.errno or 0, "?"))] += 1
                if exc.errno in _FS_WIDE:
                    self._skip.add(way)
                continue
            self.used[way] += 1
            return

    def summary(self) -> str:
        """One line: `412 hardlink, 3 copy (fell back: hardlink->next: EPERM x3)`."""
        used = ", ".join(f"{n} {way}" for way, n in sorted(self.used.items()))
        if not self.fallbacks:
            return used
        why = ", ".join(
            f"{way}->next: {cause} x{n}" for (way, cause), n in sorted(self.fallbacks.items())
        )
        return f"{used} (fell back: {why})"


def _open_dst(dst: Path, executable: bool) -> int:
    mode = 0o755 if executable else 0o644
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    # The umask must not make an installed file unreadable or lose its exec bit.
    os.fchmod(fd, mode)
    return fd


def _reflink(src: Path, dst: Path, executable: bool) -> None:
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dfd = _open_dst(dst, executable)
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
        except OSError:
            os.close(dfd)
            os.unlink(dst)
            raise
        os.close(dfd)
    finally:
        os.close(sfd)


def _copy(src: Path, dst: Path, executable: bool) -> None:
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dfd = _open_dst(dst, executable)
        try:
            _copy_fds(sfd, dfd)
        except OSError:
            os.close(dfd)
            os.unlink(dst)
            raise
        os.close(dfd)
    finally:
        os.close(sfd)


def _copy_fds(sfd: int, dfd: int) -> None:
    try:
        # copy_file_range copies in the kernel (and server-side on NFS 4.2).
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
