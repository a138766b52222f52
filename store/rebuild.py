"""rebuild: re-create the journal from the manifest files (spec/store.md §9).

A cleaner may delete the journal; the manifest files are the durable truth of
what was committed, so nothing committed is lost but names (which live only in
the journal; `hutch add --name` restores them).
"""

from __future__ import annotations

from dataclasses import dataclass

from hutch.store.digest import blake3_bytes, is_blake3_hex
from hutch.store.errors import StoreError
from hutch.store.journal import ArtifactRecord, LogRecord, Txn
from hutch.store.manifest import Manifest
from hutch.store.schema import InvalidDocument, validate
from hutch.store.store import Store


@dataclass(frozen=True)
class RebuildResult:
    artifacts: int
    ignored: list[str]  # manifest files that are not what their name says


def _valid_record(txn: Txn, aid: str) -> ArtifactRecord | None:
    """The journal's record of ``aid`` if it is valid; a damaged one is replaced."""
    raw = txn.artifact_json(aid)
    if raw is None:
        return None
    try:
        return validate(ArtifactRecord, raw, what=f"artifact record {aid[:16]}")
    except InvalidDocument:
        return None  # the manifest file is the truth


def rebuild(store: Store) -> RebuildResult:
    store.require_writable("rebuild the journal")
    with store.lock("rebuild"):
        return rebuild_locked(store)


def rebuild_locked(store: Store) -> RebuildResult:
    """rebuild(), for a caller that already holds the rebuild lock exclusively."""
    found: list[tuple[str, bytes, Manifest, float]] = []
    ignored: list[str] = []
    for path in sorted(store.layout.manifests.glob("*.json")):
        mid = path.stem
        try:
            raw = path.read_bytes()
            mtime = path.stat().st_mtime
            if not is_blake3_hex(mid) or blake3_bytes(raw) != mid:
                ignored.append(path.name)
                continue
            # Bytes from a directory anyone with write access could have put
            # there: validated strictly, paths included, before they are trusted.
            manifest = Manifest.parse(raw, where=str(path))
        except (OSError, StoreError):
            ignored.append(path.name)
            continue
        found.append((mid, raw, manifest, mtime))

    def write(txn: Txn) -> None:
        for mid, raw, manifest, mtime in found:
            aid = manifest.source.artifact_id
            current = _valid_record(txn, aid)
            files = manifest.files
            record = current or ArtifactRecord(
                id=aid,
                manifest=mid,
                urls=list(manifest.source.urls),
                digests=dict(manifest.source.digests),
                size=manifest.source.size,
                files=len(files),
                bytes=sum(e.size or 0 for e in files),
                added=mtime,
                last_used=mtime,
            )
            txn.put_artifact(record)
            txn.put_manifest(mid, raw)
            for algo, hexdigest in record.digests.items():
                txn.put_alias(f"{algo}:{hexdigest}", aid)
            for url in record.urls:
                txn.put_alias(f"url:{url}", aid)
            for key in {e.object_key for e in files}:
                txn.put_ref(key, aid)
        detail = f"{len(found)} artifact(s) from manifest files"
        if ignored:
            detail += f"; ignored {len(ignored)} invalid file(s)"
        txn.append_log(LogRecord.now("rebuild", "committed", detail=detail))

    store.journal.write(write)
    return RebuildResult(len(found), ignored)
