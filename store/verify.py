"""verify: is every object an artifact needs intact? (spec/store.md §10)

Each object is checked once however many entries and artifacts share it,
spread over the CPUs (hutch.store.parallel): stat checks type, size and mode
(0444, or 0555 for an executable object), on threads; full also re-hashes
with blake3 on the same open descriptor, so what is hashed is what was
checked, in forked workers.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping, Sequence
from typing import Literal

from hutch.store.digest import hash_fd
from hutch.store.errors import Damage
from hutch.store.layout import Layout
from hutch.store.manifest import Entry
from hutch.store.parallel import forked, map_chunks, split_weighted, width

Level = Literal["stat", "full", "none"]

# Files at least this big are hashed with blake3's own threads; smaller ones
# are spread over forked workers (hashing small files is Python under the GIL).
_BIG = 8 << 20
# Forking to re-hash pays only past a few hundred files.
_FORK_FROM = 256
# O_NONBLOCK: opening a FIFO planted at an object's path must not hang; the
# fstat after the open refuses it. No effect on regular files. O_NOFOLLOW: a
# symlink planted there is damage (ELOOP), not the file it points to, which
# may lie outside the store and which an install would link as a symlink.
_OPEN = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW

# st_mode of an intact object: a regular file, 0444 (0555 when executable).
_INTACT = stat.S_IFREG | 0o444
_INTACT_X = stat.S_IFREG | 0o555
# (object key, object path, the manifest's size, the manifest's digest)
_Item = tuple[str, str, int, str]


def verify(layout: Layout, files: Sequence[Entry], level: Level = "stat") -> list[Damage]:
    """The damaged file entries among ``files``, one Damage each (empty when intact)."""
    return verify_all(layout, [files], level)[0]


def verify_all(
    layout: Layout, artifacts: Sequence[Sequence[Entry]], level: Level = "stat"
) -> list[list[Damage]]:
    """verify() for several artifacts at once: an object they share is checked once."""
    if level == "none":
        return [[] for _ in artifacts]
    items: dict[str, _Item] = {}
    # Layout.object_path as a str: pathlib costs ~10 µs a call, 80 ms on a big tree.
    objects = os.fspath(layout.objects)
    for files in artifacts:
        for e in files:
            key = e.object_key
            if key not in items:
                items[key] = (key, f"{objects}/{key[:2]}/{key[2:]}", e.size or 0, e.digest or "")
    todo = list(items.values())
    if level == "stat":
        # stat(2) releases the GIL and is most of the cost: threads suffice.
        found = map_chunks(_stat_problems, todo)
    elif len(todo) < _FORK_FROM:
        found = [_hash_problems(todo)]
    else:
        # Re-hashing is system calls and Python under the GIL: processes, one
        # part per core, this process hashing one of them. The parts are of
        # about equal cost, ~10 µs a file and ~0.4 µs a KiB (cut by count, the
        # benchmark wheels' objects put 96 MB in one part and 26 MB in the other).
        parts = split_weighted(todo, width(), [10 + size / 2500 for _, _, size, _ in todo])
        found = forked(_hash_problems, parts, here=True)
    problems = {key: problem for part in found for key, problem in part}
    return [damage_of(layout, files, problems) for files in artifacts]


def damage_of(layout: Layout, files: Sequence[Entry], problems: Mapping[str, str]) -> list[Damage]:
    """One Damage per entry of ``files`` whose object has a problem (object key -> problem)."""
    if not problems:
        return []
    objects = os.fspath(layout.objects)
    return [
        Damage(e.path, f"{objects}/{key[:2]}/{key[2:]}", problems[key])
        for e in files
        if (key := e.object_key) in problems
    ]


def _shape_problem(st: os.stat_result, size: int, key: str) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size != size:
        if st.st_size < size:
            return f"truncated ({st.st_size} of {size} bytes)"
        return f"wrong size ({st.st_size}, expected {size} bytes)"
    # Hard links share the inode: an object chmod'ed by hand would install
    # every later tree with that mode (writable, or without its exec bit).
    want = 0o555 if key.endswith(".x") else 0o444
    if st.st_mode & 0o7777 != want:
        return f"wrong mode ({st.st_mode & 0o7777:04o}, expected {want:04o})"
    return None


def stat_problem(path: str, size: int, key: str, dir_fd: int | None = None) -> str | None:
    """What `--verify stat` finds wrong with the object at ``path``, or None.

    Also called by the processes that build an install's tree, just before
    each link, with ``path`` under the objects directory ``dir_fd`` opens.
    """
    try:
        st = os.lstat(path, dir_fd=dir_fd)  # a symlink there is damage, as in full_problem
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    # The intact case in two comparisons (type and exact mode in one): this
    # runs once per file of every install.
    if st.st_size == size and st.st_mode == (_INTACT_X if key.endswith(".x") else _INTACT):
        return None
    return _shape_problem(st, size, key)


def _stat_problems(items: Sequence[_Item]) -> list[tuple[str, str]]:
    out = []
    for key, path, size, _digest in items:
        problem = stat_problem(path, size, key)
        if problem:
            out.append((key, problem))
    return out


def _hash_problems(items: Sequence[_Item]) -> list[tuple[str, str]]:
    out = []
    for key, path, size, digest in items:
        problem = full_problem(key, path, size, digest)
        if problem:
            out.append((key, problem))
    return out


def full_problem(key: str, path: str, size: int, digest: str) -> str | None:
    """The stat checks and the blake3 re-hash, on one open file descriptor.

    Also asked by an add that finds a file at an object path it is writing
    (extract/writer.py): it keeps only one that passes.
    """
    try:
        fd = os.open(path, _OPEN)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return "not a regular file" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
    try:
        st = os.fstat(fd)
        problem = _shape_problem(st, size, key)
        if problem:
            return problem
        threads = (os.cpu_count() or 1) if size >= _BIG else 1
        got, _ = hash_fd(fd, size_hint=size, threads=threads)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    finally:
        os.close(fd)
    return None if got == digest else "corrupt (blake3 mismatch)"
