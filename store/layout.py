"""Where everything lives in a store (spec/store.md §3), creating one, and its modes.

Modes are the permission bits of a private or a group-shared store
(spec/permissions.md). Every directory or metadata file hutch creates in a
store goes through ``Modes.mkdir`` or ``Modes.fix``: create, then set the
exact bits, because the mode given to mkdir(2)/open(2) is filtered by the
creating user's umask, and one member with ``umask 077`` would otherwise lock
every other member of a shared store out of the directory they created.
"""

from __future__ import annotations

import grp
import json
import os
from pathlib import Path
from typing import NamedTuple

from hutch.store.errors import UsageError, store_error
from hutch.store.fsutil import atomic_write

CACHEDIR_TAG = b"""Signature: 8a477f597d28d172789f06886806bc55
# This file is a cache directory tag created by hutch.
# For information about cache directory tags, see https://bford.info/cachedir/
"""
FORMAT = 1
FANOUT = [f"{i:02x}" for i in range(256)]
# Lock files every writer opens read-write; made at init so that in a shared
# store they exist with the group's bits before any member's umask can decide.
FIXED_LOCKS = ("gc.lock",)


class Layout(NamedTuple):
    root: Path
    journal: Path

    @classmethod
    def at(cls, root: Path) -> Layout:
        journal = os.environ.get("HUTCH_JOURNAL")
        return cls(root, Path(journal) if journal else root / "journal")

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def config(self) -> Path:
        return self.root / "hutch-store.json"

    def object_path(self, key: str) -> Path:
        return self.objects / key[:2] / key[2:]

    @staticmethod
    def key_of(object_path: str | os.PathLike[str]) -> str:
        """The object key an object path names (the inverse of object_path)."""
        head, name = os.path.split(os.fspath(object_path))
        return os.path.basename(head) + name

    def manifest_path(self, manifest_id: str) -> Path:
        return self.manifests / f"{manifest_id}.json"

    def modes(self) -> Modes:
        """The store's modes, read from its config (for code that has no Store)."""
        return Modes.load(self)


class ObjectsDir(NamedTuple):
    """objects/ as an add writes into it: content whose digest is known goes
    straight to its object path (extract/writer.py, spec/store.md §7 step 5)."""

    root: str  # Layout.objects as a str: pathlib costs ~5 µs a join, per member
    modes: Modes

    def path(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key[2:]}"

    def make_fanout(self, path: str) -> None:
        """A cleaner removed objects/ab/: it only costs a mkdir, with the store's modes
        (a shared store's group must write it)."""
        self.modes.mkdir(Path(path).parent, parents=True)


class Modes(NamedTuple):
    """Permission bits for a private or a group-shared store (spec/permissions.md).

    ``dir`` is for every directory, ``file`` for the metadata every writer must
    open read-write (the LMDB files, lock files). Objects (0444/0555) and
    manifest files (0444) are read-only in both kinds of store: what makes them
    replaceable by the group is the group-writable directory they live in.
    """

    dir: int = 0o755
    file: int = 0o644
    shared_group: str | None = None
    gid: int | None = None  # the shared group's id, when it exists on this host

    @classmethod
    def private(cls) -> Modes:
        return cls()

    @classmethod
    def shared(cls, group: str) -> Modes:
        """setgid group-writable directories: new entries inherit the group (mkdir(2))."""
        try:
            gid: int | None = grp.getgrnam(group).gr_gid
        except KeyError:
            gid = None
        return cls(0o2775, 0o664, group, gid)

    @classmethod
    def load(cls, layout: Layout) -> Modes:
        try:
            data = json.loads(layout.config.read_bytes())
        except (OSError, ValueError):
            return cls()
        group = data.get("shared_group") if isinstance(data, dict) else None
        return cls.shared(group) if isinstance(group, str) and group else cls()

    def mkdir(self, path: Path, *, parents: bool = False) -> None:
        """Create ``path`` (and missing parents) with the store's bits; existing ones stay."""
        try:
            os.mkdir(path, self.dir)
        except FileExistsError:
            return
        except FileNotFoundError:
            if not parents or path.parent == path:
                raise
            self.mkdir(path.parent, parents=True)
            try:
                os.mkdir(path, self.dir)
            except FileExistsError:
                return
        self.fix(path, self.dir)

    def fix(self, path: Path | int, mode: int) -> None:
        """Give what this user just created (a path or an fd) the shared group and ``mode``.

        A private store keeps what the umask made: it is one user's choice. A
        shared store gets the exact bits, whatever this member's umask is.
        """
        if self.shared_group is None:
            return
        st = os.stat(path)
        if self.gid is not None and st.st_gid != self.gid:
            # Only when a parent lost its setgid bit; a member may chgrp to their group.
            os.chown(path, -1, self.gid)
        # After chown, which may clear the setgid bit (chown(2)).
        os.chmod(path, mode)


def init(layout: Layout, modes: Modes) -> None:
    """Create the store's skeleton. Idempotent; never touches existing content."""
    if modes.shared_group is not None and modes.gid is None:
        raise UsageError(
            f"no group {modes.shared_group!r} on this host",
            hint="create it first (groupadd), and add the store's users to it",
        )
    try:
        # Directories above the store are the user's own: the umask decides.
        layout.root.parent.mkdir(parents=True, exist_ok=True)
        fresh = not layout.config.exists()
        if fresh and layout.root.is_dir() and os.stat(layout.root).st_uid == os.geteuid():
            # An empty directory made for the store (`mkdir /srv/cache && hutch init ...`).
            modes.fix(layout.root, modes.dir)
        modes.mkdir(layout.root)
        for path in (layout.objects, layout.manifests, layout.staging, layout.locks):
            modes.mkdir(path)
        for sub in FANOUT:
            modes.mkdir(layout.objects / sub)
        for name in FIXED_LOCKS:
            _create(layout.locks / name, modes)
        # Written once here and never rewritten: read-only even in a shared store.
        tag = layout.root / "CACHEDIR.TAG"
        if not tag.exists():
            atomic_write(tag, CACHEDIR_TAG, mode=0o444)
        if fresh:
            config = {"format": FORMAT, "shared_group": modes.shared_group}
            atomic_write(layout.config, json.dumps(config).encode() + b"\n", mode=0o444)
    except OSError as exc:
        raise store_error("create the store at", layout.root, exc) from exc


def _create(path: Path, modes: Modes) -> None:
    """An empty file with the store's ``modes.file``, unless it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, modes.file)
    except FileExistsError:
        return
    try:
        modes.fix(fd, modes.file)
    finally:
        os.close(fd)
