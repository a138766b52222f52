"""repair: restore damaged objects from the artifact's source (spec/store.md §10).

The archive is re-fetched from its recorded urls and must hash to the artifact
id, so a repair can only ever restore the exact bytes that were committed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hutch.extract import Limits, extract
from hutch.fetch import FetchOptions, fetch
from hutch.store.digest import Pin
from hutch.store.errors import Damage, DamageError, HutchError, store_error
from hutch.store.fsutil import syncfs
from hutch.store.journal import ArtifactRecord, LogRecord
from hutch.store.manifest import Manifest
from hutch.store.store import Store


def repair(
    store: Store,
    record: ArtifactRecord,
    manifest: Manifest,
    damage: Sequence[Damage],
    *,
    options: FetchOptions | None = None,
    limits: Limits | None = None,
) -> None:
    """Heal ``damage`` or raise DamageError saying why not; logs a `repair` record either way."""
    if not store.writable:
        raise DamageError(
            record.id,
            damage,
            why=f"the store at {store.layout.root} is read-only for this user",
            hint="ask the store's owner to run `hutch verify --repair`, or install with "
            "--store pointing at a store you can write",
        )
    # By object, not by path: an install with --subdir or --strip-components
    # names its damage by the paths it installs, not the artifact's own.
    damaged = {store.layout.key_of(d.object) for d in damage}
    try:
        with store.holding_objects(), store.staging("repair", record.id) as stage:
            archive = stage / "archive"
            fetch(record.urls, archive, pin=Pin("blake3", record.id), options=options)
            blobs = stage / "blobs"
            blobs.mkdir()
            members = {m.path: m for m in extract(archive, blobs, limits=limits)}
            restored: set[str] = set()
            for entry in manifest.files:
                key = entry.object_key
                if key not in damaged or key in restored:
                    continue
                member = members.get(entry.path)
                if member is None or member.blob is None:
                    # A hardlink member: any member with the same object has a blob.
                    member = next(
                        (
                            m
                            for m in members.values()
                            if m.blob
                            and m.digest == entry.digest
                            and m.executable == bool(entry.exec)
                        ),
                        None,
                    )
                if member is None or member.blob is None or member.digest != entry.digest:
                    raise HutchError(f"the re-fetched archive has no intact {entry.path!r}")
                target = store.layout.object_path(key)
                try:
                    store.modes.mkdir(target.parent, parents=True)
                    os.replace(member.blob, target)
                except OSError as exc:
                    raise store_error("restore object", target, exc) from exc
                restored.add(key)
            syncfs(store.layout.root)
    except HutchError as exc:
        store.log(LogRecord.now("repair", "failed", artifact=record.id, detail=str(exc)))
        raise DamageError(
            record.id,
            damage,
            why=f"re-fetching {', '.join(record.urls)} failed: {str(exc).splitlines()[0]}",
            hint="make a source reachable again (or `hutch add URL --digest ...` from a "
            "mirror), then run `hutch verify --repair`",
        ) from exc
    store.log(
        LogRecord.now(
            "repair", "committed", artifact=record.id, detail=f"restored {len(restored)} object(s)"
        )
    )
