"""Store: an opened store directory: its layout, journal, and recovery on open."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from hutch.store.digest import Pin, is_blake3_hex
from hutch.store.errors import HutchError, ReadOnlyStore, UsageError, store_error
from hutch.store.journal import ArtifactRecord, Journal, LogRecord, Txn
from hutch.store.layout import Layout, Modes, init
from hutch.store.lock import FileLock, joint_shared
from hutch.store.manifest import Manifest
from hutch.store.staging import staging, sweep

_URL = re.compile(r"^(https?|file)://", re.IGNORECASE)


def default_root(option: str | None = None) -> Path:
    """--store, else $HUTCH_STORE, else the platform's user cache dir + hutch."""
    if option:
        return Path(option).expanduser().absolute()
    env = os.environ.get("HUTCH_STORE")
    if env:
        return Path(env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir("hutch"))


# `URL#sha256=HEX`: a source carrying its own pin, the form package indexes
# link their files with (PEP 503), so one `hutch add` can pin several sources.
_FRAGMENT_PIN = re.compile(r"#(sha256|sha512|blake3)=([0-9a-f]+)$", re.IGNORECASE)


def split_pin(source: str) -> tuple[str, Pin | None]:
    """``URL#sha256=HEX`` -> (URL, its Pin); a source without such a fragment is kept whole."""
    m = _FRAGMENT_PIN.search(source)
    if m is None:
        return source, None
    return source[: m.start()], Pin.parse(f"{m[1]}:{m[2]}")


def source_url(source: str) -> str:
    """An http(s)/file URL as given; a local path as its absolute file:// URL."""
    if _URL.match(source):
        return source
    return Path(source).expanduser().absolute().as_uri()


@dataclass
class Store:
    layout: Layout
    journal: Journal
    modes: Modes
    writable: bool

    @classmethod
    def open(cls, root: Path, *, create: bool = True) -> Store:
        """Open the store at ``root``: create it if needed, recover what crashes left.

        A store this user cannot write is opened read-only: installs of intact
        artifacts work, anything that must write says so (spec/permissions.md).
        """
        layout = Layout.at(root)
        if create and not layout.config.exists() and _can_create(root):
            init(layout, Modes())
        modes = Modes.load(layout)
        readonly = not (_store_writable(layout) and _journal_writable(layout.journal))
        if readonly and not Journal.exists(layout.journal):
            raise ReadOnlyStore(
                f"the store at {root} has no journal and this user cannot create one",
                path=layout.journal,
                op="open journal",
                hint="ask the store's owner to run `hutch doctor --rebuild`",
            )
        if readonly:
            journal = Journal.open(layout.journal, readonly=True, mode=modes.file)
            return cls(layout, journal, modes, writable=False)
        # A journal being re-created exists before it is whole. Its rebuild holds
        # this lock exclusively until it is, so every other open waits behind it
        # (spec/store.md §9) instead of adding to, or gc-ing from, a half index.
        missing = not Journal.exists(layout.journal)
        lock = FileLock(layout.locks / "rebuild.lock", shared=not missing, mode=modes.file)
        with lock:
            missing = not Journal.exists(layout.journal)
            journal = Journal.open(layout.journal, readonly=False, mode=modes.file)
            store = cls(layout, journal, modes, writable=True)
            if missing and not lock.shared and any(layout.manifests.glob("*.json")):
                from hutch.store.rebuild import rebuild_locked

                rebuild_locked(store)
        store._recover()
        return store

    def _recover(self) -> None:
        aborted = sweep(self.layout.staging)
        if aborted:
            # Best effort: a full journal must not stop `ls` or `doctor` from running.
            with contextlib.suppress(HutchError):
                self.journal.write(lambda txn: [txn.append_log(r) for r in aborted])

    # -- helpers every verb uses -------------------------------------------
    def require_writable(self, what: str) -> None:
        if not self.writable:
            raise ReadOnlyStore(
                f"cannot {what}: the store at {self.layout.root} is read-only for this user",
                path=self.layout.root,
                op=what,
                hint="ask the store's owner (or a member of its group) to run this, "
                "or use a store you can write with --store",
            )

    @contextmanager
    def staging(self, op: str, detail: str) -> Iterator[Path]:
        with staging(self.layout.staging, op, detail) as path:
            yield path

    def lock(self, name: str, *, shared: bool = False) -> FileLock:
        return FileLock(self.layout.locks / f"{name}.lock", shared=shared, mode=self.modes.file)

    def holding_objects(self) -> AbstractContextManager[None]:
        """gc.lock, shared, while objects are written or published but not yet referenced (§8).

        Shared by every thread of this process that is adding or repairing.
        """
        return joint_shared(self.layout.locks / "gc.lock", mode=self.modes.file)

    def log(self, record: LogRecord) -> None:
        if self.writable:
            self.journal.write(lambda txn: txn.append_log(record))

    def manifest(self, txn: Txn, record: ArtifactRecord) -> Manifest:
        """The artifact's committed manifest, checked against its id (Manifest.load)."""
        raw = txn.manifest_bytes(record.manifest)
        if raw is not None:
            return Manifest.load(raw, record.manifest, where=f"the journal at {self.journal.path}")
        path = self.layout.manifest_path(record.manifest)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise store_error("read the manifest", path, exc) from exc
        return Manifest.load(raw, record.manifest, where=str(path))

    def resolve(self, txn: Txn, ref: str) -> ArtifactRecord | None:
        """An artifact by id, unique id prefix (≥ 8 hex), pinned digest, URL or name."""
        aid: str | None = None
        lowered = ref.lower()
        if is_blake3_hex(lowered):
            aid = lowered
        elif _URL.match(ref):
            aid = txn.alias(f"url:{ref}")
        elif re.fullmatch(r"[0-9a-f]{8,63}", lowered):
            matches = txn.artifact_ids_with_prefix(lowered)
            if len(matches) > 1:
                raise UsageError(
                    f"id prefix {ref!r} is ambiguous: {len(matches)} artifacts match",
                    hint="give more hex digits",
                )
            aid = matches[0] if matches else txn.name(ref)
        elif ":" in ref or re.match(r"^(sha256|sha512|blake3)-", ref):
            pin = Pin.parse(ref)
            aid = txn.alias(str(pin))
        else:
            aid = txn.name(ref)
        return txn.artifact(aid) if aid else None

    def get(self, txn: Txn, ref: str) -> ArtifactRecord:
        record = self.resolve(txn, ref)
        if record is None:
            raise UsageError(
                f"no artifact {ref!r} in the store at {self.layout.root}",
                hint="`hutch ls` lists what the store has; `hutch add URL` adds it",
            )
        return record


def _can_create(root: Path) -> bool:
    probe = root
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK)


def _store_writable(layout: Layout) -> bool:
    """Can this user write every directory a write (add, repair, gc) touches?

    os.access, not a probe write: it answers for the mount too (EROFS on a
    read-only bind mount) without leaving anything behind. A store that is
    only partly writable (a shared store whose modes someone changed) counts
    as read-only, so the user gets one clear "read-only" error rather than a
    permission error halfway through a commit.
    """
    dirs = (layout.root, layout.objects, layout.manifests, layout.staging, layout.locks)
    return all(os.access(d, os.W_OK | os.X_OK) for d in dirs if d.exists() or d == layout.root)


def _journal_writable(path: Path) -> bool:
    if path.exists():
        files = [path / "data.mdb", path / "lock.mdb"]
        return os.access(path, os.W_OK) and all(os.access(f, os.W_OK) for f in files if f.exists())
    return os.access(path.parent, os.W_OK)
