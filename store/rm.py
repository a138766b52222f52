"""rm: forget artifacts (spec/store.md §12, spec/inspect.md).

One write transaction removes every named artifact's journal entries
(artifact, names, aliases, refs) and logs an `rm` record for each. Objects
are not deleted here: other artifacts may share them, and an add in flight may
be about to reference them. They become unreferenced and the next `hutch gc`
frees them, under the lock that makes that safe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from hutch.store.errors import store_error
from hutch.store.journal import ArtifactRecord, LogRecord, Txn
from hutch.store.store import Store


@dataclass(frozen=True)
class RmResult:
    removed: list[ArtifactRecord]
    manifests: int  # manifest files deleted (no remaining artifact used them)
    unreferenced_objects: int  # objects nothing references any more: `hutch gc` frees them
    unreferenced_bytes: int


def rm(store: Store, refs: Sequence[str]) -> RmResult:
    store.require_writable("remove artifacts")
    # Resolve everything first: an unknown ref is exit 2 and nothing is removed.
    with store.journal.read() as txn:
        targets = list({r.id: r for r in (store.get(txn, ref) for ref in refs)})

    def write(txn: Txn) -> tuple[list[ArtifactRecord], set[str]]:
        keys = refs_of(txn, set(targets))
        removed = []
        for aid in targets:
            current = txn.artifact(aid)
            if current is None:
                continue  # another rm or gc got there first
            remove(txn, current, sorted(keys.get(aid, ())), op="rm", detail=describe(current))
            removed.append(current)
        return removed, {k for ks in keys.values() for k in ks}

    removed, keys = store.journal.write(write)

    # The manifest file goes only once the journal no longer needs it, and under
    # the gc lock: an add of the same archive that found the file on disk (and so
    # did not rewrite it) holds that lock, shared, until its commit. rm does not
    # wait for such an add: gc removes a manifest file left here as an orphan.
    manifests = 0
    gc_lock = store.lock("gc")
    if gc_lock.try_acquire():
        try:
            with store.journal.read() as txn:
                live = {a.manifest for a in txn.artifacts()}
            for mid in {r.manifest for r in removed} - live:
                manifests += _unlink(store.layout.manifest_path(mid))
        finally:
            gc_lock.release()
    with store.journal.read() as txn:
        referenced = txn.referenced_objects()
    freed = [_size(store, key) for key in keys - referenced]
    return RmResult(removed, manifests, len(freed), sum(freed))


def refs_of(txn: Txn, artifact_ids: set[str]) -> dict[str, list[str]]:
    """The object keys each artifact references, exactly as the refs table records them."""
    out: dict[str, list[str]] = {}
    for obj, aid in txn.refs():
        if aid in artifact_ids:
            out.setdefault(aid, []).append(obj)
    return out


def remove(
    txn: Txn, record: ArtifactRecord, object_keys: list[str], *, op: str, detail: str
) -> None:
    """Delete one artifact's journal entries and log it (shared by rm and gc)."""
    txn.delete_artifact(record, object_keys)
    txn.append_log(LogRecord.now(op, "committed", artifact=record.id, detail=detail))


def describe(record: ArtifactRecord) -> str:
    """How a log record names an artifact beyond its id: its names, else its first url."""
    return ", ".join(record.names) or (record.urls[0] if record.urls else "")


def _unlink(path: os.PathLike[str]) -> int:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise store_error("remove manifest file", path, exc) from exc
    return 1


def _size(store: Store, key: str) -> int:
    try:
        return store.layout.object_path(key).stat().st_size
    except OSError:
        return 0
