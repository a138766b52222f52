"""The blob writer: the only code in extract/ that creates anything on disk.

Every regular-file member becomes one flat file in the staging directory (or,
for a zip written in parts, in its part's directory: BlobWriter.view), named
by a counter, written with O_CREAT|O_EXCL relative to a directory fd (so no
member name is ever joined onto a path), hashed with blake3 while it is written,
and created with its final object mode (fixed with fchmod before close when the
umask would strip a bit). Bytes are counted as they are written, and the limits
are enforced on that count, never on sizes an archive declares.

Given the store's objects directory (an add), a member whose content is in
memory (at most CHUNK bytes: nearly every file of a package) is hashed first
and created straight at its object path instead, named by its digest alone;
no member name reaches that path either (spec/store.md §7 step 5).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn, Self

from hutch.extract import Limits
from hutch.store import digest, faults
from hutch.store.digest import Blake3Hex
from hutch.store.errors import ArchiveError, store_error
from hutch.store.fsutil import current_umask
from hutch.store.manifest import object_key

if TYPE_CHECKING:
    from hutch.store.layout import ObjectsDir

CHUNK = 1 << 20

# The kernel, not the archive, decides these; O_NOFOLLOW and O_EXCL make the
# open fail rather than follow or reuse anything that is already there.
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Reader = Callable[[int], bytes]

_MODES = (0o444, 0o555)


class Blob(NamedTuple):
    # The staged file, a str (pathlib costs ~5 µs a join, per member, issue 7);
    # None when the content was written straight to its object path.
    path: str | None
    digest: Blake3Hex
    size: int


def limit_error(
    display: str, member: str | None, what: str, limit: str, value: str
) -> ArchiveError:
    """A limit refusal that says which limit tripped and how to raise it."""
    how = {
        "max_unpacked": "--max-unpacked SIZE or HUTCH_MAX_UNPACKED",
        # Limits.from_env: an explicit size also lifts the ratio check below it.
        "max_ratio": "--max-unpacked SIZE or HUTCH_MAX_UNPACKED (an explicit size also "
        "allows any compression ratio up to that size)",
        "max_entries": "--max-entries N or HUTCH_MAX_ENTRIES",
    }[limit]
    return ArchiveError(
        display,
        f"{what} exceeds the {limit} limit ({value}); possible decompression bomb",
        member=member,
        hint=f"if you trust this archive, raise the limit with {how}",
    )


class Budget:
    """Counts bytes and entries against Limits; one per archive (each part of a
    zip written in parts counts in a copy of its own, summed afterwards)."""

    def __init__(self, limits: Limits, archive_size: int, display: str) -> None:
        self.limits = limits
        self.display = display
        self.written = 0
        self.decoded = 0
        self.entries = 0
        # Past the grace amount, output may be at most max_ratio times the
        # archive's size on disk: real archives compress 1.3-4x (spec/extract.md
        # §Limits), a bomb of zeros ~1000x (gzip) to ~32000x (zstd).
        self.ratio_cap = max(limits.ratio_grace, limits.max_ratio * archive_size)

    def check_unpacked(self, total: int, what: str, member: str | None) -> None:
        if total > self.limits.max_unpacked:
            raise limit_error(
                self.display, member, what, "max_unpacked", f"{self.limits.max_unpacked} bytes"
            )

    def check_ratio(self, total: int, what: str, member: str | None) -> None:
        if total > self.ratio_cap:
            limits = self.limits
            raise limit_error(
                self.display,
                member,
                what,
                "max_ratio",
                f"{limits.max_ratio}x the archive size past {limits.ratio_grace} bytes "
                f"= {self.ratio_cap} bytes",
            )

    def add_written(self, n: int, member: str | None) -> None:
        """Count file bytes before they are written, so a limit is never overshot."""
        self.written += n
        self.check_unpacked(self.written, "unpacked size", member)
        self.check_ratio(self.written, "unpacked size", member)

    def add_decoded(self, n: int) -> None:
        """Count decompressed bytes, file data or not (tar headers, padding, zeros)."""
        self.decoded += n
        # Tar headers and padding can triple a tree of tiny files, so only the
        # ratio (not max_unpacked, which is about file contents) bounds the stream.
        self.check_ratio(self.decoded, "decompressed stream", None)

    def add_entry(self, member: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise limit_error(
                self.display,
                member,
                "number of entries",
                "max_entries",
                f"{self.limits.max_entries} entries",
            )


def _write_all(fd: int, data: bytes) -> None:
    # One write(2) nearly always takes it all; a memoryview only for the rest.
    done = os.write(fd, data)
    if done < len(data):
        view = memoryview(data)[done:]
        while view:
            view = view[os.write(fd, view) :]


class BlobWriter:
    """Writes member contents as flat blob files into ``staging``."""

    def __init__(self, staging: Path, budget: Budget, objects: ObjectsDir | None = None) -> None:
        self.staging = staging
        self._prefix = f"{os.fspath(staging)}/"
        self.budget = budget
        self.objects = objects
        self._placed = False  # no file created at an object path yet (faults: add.placing)
        self._count = 0
        try:
            self._dirfd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise store_error("open staging directory", staging, exc) from exc
        # A blob is created with its final mode, as GNU tar creates a file with
        # the archive's mode (the open that creates a 0444 file may still write
        # it; staging is private, so nobody else sees it half-written). Only a
        # umask that strips one of those bits (0o077, say) needs the fchmod that
        # makes the mode exact. Skipping it saves a syscall per blob (~1.5 us).
        umask = current_umask()
        self._fchmod = umask is None or bool(umask & 0o555)

    def view(self, first: int) -> BlobWriter:
        """A writer for one part of an archive (extract/zip.py), to close when done.

        Its blob names follow ``first`` (a member's index), it counts its own
        bytes, and it creates its blobs in a subdirectory of its own: creating
        files in one directory takes that directory's lock, so parts writing
        into one directory wait for each other.
        """
        part = copy.copy(self)
        part._count = first
        part._placed = True  # add.placing stops or kills the add's own process only
        part.budget = copy.copy(self.budget)
        name = f"part-{first:08x}"
        try:
            os.mkdir(name, 0o700, dir_fd=self._dirfd)
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            part._dirfd = os.open(name, flags, dir_fd=self._dirfd)
        except OSError as exc:
            raise store_error("create staging directory", self.staging / name, exc) from exc
        part.staging = self.staging / name
        part._prefix = f"{self._prefix}{name}/"
        return part

    def skip(self, count: int) -> None:
        """Blob names up to ``count`` were taken by views (view()); go on after them."""
        self._count = max(self._count, count)

    def close(self) -> None:
        os.close(self._dirfd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self, *, executable: bool) -> tuple[int, str]:
        self._count += 1
        name = f"{self._count:08x}"
        try:
            return os.open(name, _FLAGS, _MODES[executable], dir_fd=self._dirfd), name
        except OSError as exc:
            raise store_error("create blob", self.staging / name, exc) from exc

    def _abandon(self, fd: int, name: str, exc: BaseException) -> NoReturn:
        os.close(fd)
        # A partial blob is never left behind, not even in private staging.
        os.unlink(name, dir_fd=self._dirfd)
        if isinstance(exc, OSError):
            raise store_error("write blob", self.staging / name, exc) from exc
        raise exc

    def write_bytes(self, member: str, data: bytes, *, executable: bool) -> Blob:
        """A blob holding ``data``: a whole member already in memory (at most ~CHUNK).

        Most members are a few KiB, so one write and one blake3 call replace the
        read loop; the bytes are counted before the blob is even created.
        """
        size = len(data)
        self.budget.add_written(size, member)
        blake = digest.blake3_bytes(data)
        if self.objects is not None:
            self._place(self.objects, data, blake, executable=executable)
            return Blob(None, blake, size)
        return Blob(f"{self._prefix}{self._stage(data, executable)}", blake, size)

    def _stage(self, data: bytes, executable: bool) -> str:
        """A new staged blob holding ``data``; its name in the staging directory."""
        fd, name = self._create(executable=executable)
        try:
            if data:
                _write_all(fd, data)
            if self._fchmod:
                os.fchmod(fd, _MODES[executable])
        except BaseException as exc:
            self._abandon(fd, name, exc)
        os.close(fd)
        return name

    def _place(
        self, objects: ObjectsDir, data: bytes, blake: Blake3Hex, *, executable: bool
    ) -> None:
        """Put ``data`` at its object path, created there: no staged blob, no rename.

        On the benchmark wheels' 8004 files that halves what creating them
        costs the filesystem. The file is visible before its bytes are, which
        is safe because nothing trusts an object that no committed manifest
        refers to: a crash leaves an unreferenced partial file, which the next
        add replaces and gc frees; this add refers to it only after its syncfs.
        A file already there is kept only if it holds exactly these bytes with
        the object's mode, what `verify --full` accepts: a committed object,
        another add's (finished; one still writing fails the check), or what a
        crash left. Anything else is replaced whole: a staged blob renamed over it.
        """
        key = object_key(blake, executable=executable)
        path = objects.path(key)
        mode = _MODES[executable]
        try:
            try:
                fd = os.open(path, _FLAGS, mode)
            except FileNotFoundError:
                objects.make_fanout(path)
                fd = os.open(path, _FLAGS, mode)
        except FileExistsError:
            from hutch.store.verify import full_problem

            if full_problem(key, path, len(data), blake) is not None:
                self._replace(path, data, executable)
            return
        except OSError as exc:
            raise store_error("create object", path, exc) from exc
        try:
            if not self._placed:
                self._placed = True
                faults.point("add.placing")
            if data:
                _write_all(fd, data)
            if self._fchmod:
                os.fchmod(fd, mode)
        except OSError as exc:
            # The partial file stays: unlinking it by name could remove another
            # add's intact copy renamed over it meanwhile. Unreferenced, it is
            # replaced by the next add of this content and freed by gc.
            raise store_error("write object", path, exc) from exc
        finally:
            os.close(fd)

    def _replace(self, path: str, data: bytes, executable: bool) -> None:
        """Replace what is at ``path`` with a staged blob of ``data``, flushed first.

        Rare (a crash's leftover, a damaged object, another add still writing
        it), so it may cost an fsync: between our check and this rename, the
        other add may have finished, flushed and committed the path, and a
        power loss must then find either its file or ours whole, on any
        filesystem (spec/durability.md §3).
        """
        name = self._stage(data, executable)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dirfd)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(name, path, src_dir_fd=self._dirfd)
        except OSError as exc:
            raise store_error("replace object", path, exc) from exc

    def write(self, member: str, read: Reader, *, executable: bool) -> Blob:
        """Copy ``read(CHUNK)`` until it returns b"" into a new blob; hash and count."""
        hasher = digest.new("blake3")
        size = 0
        fd, name = self._create(executable=executable)
        try:
            while data := read(CHUNK):
                n = len(data)
                self.budget.add_written(n, member)
                hasher.update(data)
                _write_all(fd, data)
                size += n
            if self._fchmod:
                os.fchmod(fd, _MODES[executable])
        except BaseException as exc:
            self._abandon(fd, name, exc)
        os.close(fd)
        return Blob(f"{self._prefix}{name}", Blake3Hex(hasher.hexdigest()), size)
