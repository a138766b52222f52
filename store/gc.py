"""gc: free what nothing needs (spec/inspect.md §gc, spec/store.md §8).

    1. expire artifacts: unused longer than --max-age, then the least recently
       used until what the rest reference fits in --max-size (one write txn)
    2. scan objects/ and manifests/ for candidates (no lock held)
    3. take gc.lock EXCLUSIVELY, read the journal, delete every candidate it
       does not reference
    4. sweep staging debris of dead operations; log one `gc` record

All of it waits for a journal rebuild in progress (rebuild.lock, shared).

Why step 3 is safe: add and repair hold gc.lock *shared* from the moment they
publish objects (or find them already there) until their journal commit. So
once gc holds it exclusively, every object or manifest file an operation in
flight needs is referenced in the journal gc reads, or has not been published
yet (and cannot be until gc lets go). Candidates found in step 2 that became
referenced meanwhile are kept because the decision uses step 3's read.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from hutch.store.errors import HutchError, StoreError, store_error
from hutch.store.journal import ArtifactRecord, LogRecord, Txn
from hutch.store.rm import refs_of, remove
from hutch.store.staging import sweep
from hutch.store.stats import object_sizes, scan_objects
from hutch.store.store import Store

_MANIFEST = re.compile(r"[0-9a-f]{64}\.json")
# atomic_write's temporary names (fsutil.temp_name): `.<mid>.json.tmp-<pid>-<hex>`.
_MANIFEST_TMP = re.compile(r"\.[0-9a-f]{64}\.json\.tmp-.*")


@dataclass(frozen=True)
class GcOptions:
    dry_run: bool = False
    max_age: float | None = None  # seconds: expire artifacts unused for longer
    max_size: int | None = None  # bytes the kept artifacts' objects may add up to


@dataclass(frozen=True)
class Expired:
    record: ArtifactRecord
    reason: str


@dataclass(frozen=True)
class GcResult:
    dry_run: bool
    artifacts: list[Expired] = field(default_factory=list)
    objects: int = 0  # object files deleted (or that would be)
    object_bytes: int = 0
    manifests: int = 0  # orphan manifest files deleted
    staging: int = 0  # staging directories of dead operations swept

    def summary(self) -> str:
        return (
            f"{len(self.artifacts)} artifact(s), {self.objects} object(s) "
            f"({self.object_bytes} bytes), {self.manifests} manifest file(s), "
            f"{self.staging} staging dir(s)"
        )


def gc(store: Store, options: GcOptions) -> GcResult:
    if not options.dry_run:
        store.require_writable("collect garbage")
    _refuse_a_blank_journal(store)  # not logged: a log record would make it look real
    try:
        # A journal being rebuilt (another process re-indexing the manifest files
        # after the journal was lost) is incomplete: whatever it has not indexed
        # yet would look unreferenced. rebuild holds rebuild.lock exclusively.
        with _lock(store, "rebuild", shared=True):
            result = _gc(store, options)
    except HutchError as exc:
        if not options.dry_run:
            with contextlib.suppress(HutchError):  # never hide the real error
                store.log(LogRecord.now("gc", "failed", detail=str(exc).splitlines()[0]))
        raise
    if not options.dry_run:
        store.log(LogRecord.now("gc", "committed", detail=f"freed {result.summary()}"))
    return result


def blank_journal(store: Store) -> bool:
    """Has this journal never committed anything, though manifest files say the store has?

    Every journal that indexes artifacts has a committed add or rebuild in its
    log. One without, beside manifest files, was replaced or truncated (an
    emptied data.mdb opens as a new environment), and gc would take its
    ignorance for garbage and delete the whole store.
    """
    with store.journal.read() as txn:
        if any(r.outcome == "committed" for r in txn.log_newest_first()):
            return False
    return next(_manifest_files(store.layout.manifests), None) is not None


def _refuse_a_blank_journal(store: Store) -> None:
    if blank_journal(store):
        raise StoreError(
            f"the journal at {store.layout.journal} has never committed anything but the store "
            "has manifest files; refusing to collect garbage",
            path=store.layout.journal,
            op="gc",
            hint="run `hutch doctor --rebuild` to re-index the manifest files first",
        )


def _gc(store: Store, options: GcOptions) -> GcResult:
    with store.journal.read() as txn:
        plan = _plan(store, txn, options, time.time())
    # 1. Expire artifacts (a dry run only plans).
    expired = plan if options.dry_run else _expire(store, plan)
    # 2-3. Unreferenced objects and orphan manifest files.
    gone = {e.record.id for e in expired} if options.dry_run else set()
    objects, object_bytes, manifests = _collect(store, gone, dry_run=options.dry_run)
    # 4. Staging debris (every writable open sweeps too; this catches the rest).
    staging = 0 if options.dry_run else _sweep_staging(store)
    return GcResult(options.dry_run, expired, objects, object_bytes, manifests, staging)


def _lock(store: Store, name: str, *, shared: bool = False) -> AbstractContextManager[object]:
    # A dry run of a store this user cannot write still answers, without locks
    # (it cannot open lock files read-write).
    return store.lock(name, shared=shared) if store.writable else contextlib.nullcontext()


def _plan(store: Store, txn: Txn, options: GcOptions, now: float) -> list[Expired]:
    """The artifacts to expire, least recently used first."""
    records = sorted(txn.artifacts(), key=lambda r: (r.last_used, r.id))
    expired: list[Expired] = []
    if options.max_age is not None:
        cutoff = now - options.max_age
        expired += [
            Expired(r, f"unused since {_iso(r.last_used)}") for r in records if r.last_used < cutoff
        ]
    if options.max_size is not None:
        gone = {e.record.id for e in expired}
        kept = [r for r in records if r.id not in gone]
        needs = {r.id: object_sizes(store, txn, r) for r in kept}
        counts = Counter(key for sizes in needs.values() for key in sizes)
        size_of = {key: size for sizes in needs.values() for key, size in sizes.items()}
        total = sum(size_of.values())
        for record in kept:
            if total <= options.max_size:
                break
            for key in needs[record.id]:
                counts[key] -= 1
                if counts[key] == 0:
                    total -= size_of[key]
            expired.append(
                Expired(record, f"least recently used beyond max size {options.max_size} bytes")
            )
    return expired


def _expire(store: Store, plan: list[Expired]) -> list[Expired]:
    if not plan:
        return []

    def write(txn: Txn) -> list[Expired]:
        keys = refs_of(txn, {e.record.id for e in plan})
        done = []
        for e in plan:
            current = txn.artifact(e.record.id)
            # Used (installed) since the plan was read: no longer a candidate.
            if current is None or current.last_used != e.record.last_used:
                continue
            remove(txn, current, keys.get(current.id, []), op="gc", detail=e.reason)
            done.append(e)
        return done

    return store.journal.write(write)


def _collect(store: Store, gone: set[str], *, dry_run: bool) -> tuple[int, int, int]:
    layout = store.layout
    # Scanned before taking the lock, so adds wait only for the deletions.
    objects = list(scan_objects(layout))
    manifest_files = list(_manifest_files(layout.manifests))
    with _lock(store, "gc"):
        with store.journal.read() as txn:
            if gone:  # dry run: as if the planned artifacts were already removed
                referenced = {obj for obj, aid in txn.refs() if aid not in gone}
            else:
                referenced = txn.referenced_objects()
            live = {a.manifest for a in txn.artifacts() if a.id not in gone}
        count = size = 0
        for obj in objects:
            if obj.key not in referenced and (dry_run or _unlink(obj.path, "object")):
                count += 1
                size += obj.size
        manifests = sum(
            1
            for path in manifest_files
            if path.name[: -len(".json")] not in live and (dry_run or _unlink(path, "manifest"))
        )
    return count, size, manifests


def _manifest_files(directory: Path) -> Iterator[Path]:
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if _MANIFEST.fullmatch(entry.name):
            yield Path(entry.path)
        elif _MANIFEST_TMP.fullmatch(entry.name):
            # Under the exclusive lock no add is writing one: a crash left it.
            yield Path(entry.path)


def _unlink(path: Path, what: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False  # a cleaner (or another gc) was first
    except OSError as exc:
        raise store_error(f"remove unreferenced {what}", path, exc) from exc
    return True


def _sweep_staging(store: Store) -> int:
    aborted = sweep(store.layout.staging)
    if aborted:
        store.journal.write(lambda txn: [txn.append_log(r) for r in aborted])
    return len(aborted)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))
