"""Filesystem primitives used everywhere: atomic writes, batched durability, path containment.

One of each, so every caller gets the same crash behaviour and the same idea of
which member names are safe.
"""

from __future__ import annotations

import ctypes
import os
import re
import unicodedata
from pathlib import Path

# The libc this process already runs on: ctypes.util.find_library() would run
# `ldconfig -p` in a subprocess on every start (~7 ms, issue 7).
_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush every dirty page of the filesystem holding ``path``, in one call.

    One syncfs(2) replaces thousands of fsync(2)s (measured here: ~6 s of
    fsyncs per 10k files vs tens of ms). Linux-only; elsewhere fall back to sync().
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    except AttributeError:  # pragma: no cover - non-Linux libc
        os.sync()
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hostname() -> str:
    """This host's name. uname(2) is what gethostname(3) reads on Linux; importing
    socket for it would cost ~2.5 ms of every command's start-up (issue 7)."""
    return os.uname().nodename


def current_umask() -> int | None:
    """This process's umask, read without changing it; None where Linux does not say.

    os.umask() can only read it by setting it, and between the two calls
    another thread's files would be created with the wrong mode; Linux 4.7+
    shows it in /proc/self/status. Callers treat None as "fix every mode".
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def temp_name(path: str | os.PathLike[str], tag: str = "tmp") -> Path:
    """A sibling name unique across processes and hosts (NFS shares a directory)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{tag}-{os.getpid()}-{os.urandom(4).hex()}")


def atomic_write(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o444, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one.

    The mode is set and the data fsynced *before* the rename, so the file is never
    visible at its final path with the wrong permissions or partial contents.
    """
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    if durable:
        fsync_dir(Path(path).parent)


class UnsafePath(ValueError):
    """A member name that must never be joined onto a directory. ``reason`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name!r}: {reason}")
        self.name = name
        self.reason = reason


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# NAME_MAX of every filesystem hutch supports (ext4, xfs, btrfs, tmpfs, NFS).
NAME_MAX = 255
PATH_MAX = 4096


# A name that is already safe and normalised: ASCII components of the usual
# characters, none of them "." or "..", one slash between them. Such names are
# nearly every member of a real archive, and this one match (~0.5 µs) stands
# for the whole check below (~5 µs); a name it does not match takes the check.
_PLAIN = re.compile(r"(?:(?!\.\.?(?:/|\Z))[A-Za-z0-9._+~@=-]+/)*(?!\.\.?\Z)[A-Za-z0-9._+~@=-]+")


def safe_relpath(name: str) -> str:
    """Return ``name`` as a normalised relative POSIX path that stays inside its root.

    This is hutch's one path-containment check: archive members, --subdir and
    symlink targets all go through it. Rejects absolute and drive paths,
    backslashes, '..' anywhere, NUL and control characters, and over-long
    components. '.' components and repeated or trailing slashes are dropped.
    """
    # Under 256 ASCII characters, no component can pass NAME_MAX nor the path PATH_MAX.
    if len(name) <= NAME_MAX and _PLAIN.fullmatch(name):
        return name
    return _checked_relpath(name)


def _checked_relpath(name: str) -> str:
    if not name:
        raise UnsafePath(name, "empty name")
    if _CONTROL.search(name):
        raise UnsafePath(name, "control character in name")
    if "\\" in name:
        raise UnsafePath(name, "backslash in name (a Windows path separator)")
    if name.startswith("/"):
        raise UnsafePath(name, "absolute path")
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        raise UnsafePath(name, "drive-letter path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise UnsafePath(name, "names the root itself")
    for part in parts:
        if part == "..":
            raise UnsafePath(name, "'..' component")
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise UnsafePath(name, f"component longer than {NAME_MAX} bytes")
    rel = "/".join(parts)
    if len(rel.encode("utf-8", "surrogateescape")) >= PATH_MAX:
        raise UnsafePath(name, f"path longer than {PATH_MAX} bytes")
    return rel


def fold_key(rel: str) -> str:
    """The key two names collide under on case-insensitive or normalising filesystems."""
    if rel.isascii():
        return rel.lower()  # NFC leaves ASCII as it is, and casefold is lower() there
    return unicodedata.normalize("NFC", rel).casefold()
