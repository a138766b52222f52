"""add: fetch an archive, extract it, and commit it (spec/store.md §7).

The commit path reads top to bottom: resolve, lock, fetch, extract, publish
objects, write the manifest, syncfs, one journal transaction.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from typing import NamedTuple

from hutch.extract import Limits, Member, extract
from hutch.fetch import Fetched, FetchOptions, fetch
from hutch.store import faults
from hutch.store.digest import Pin, blake3_bytes
from hutch.store.errors import HutchError, store_error
from hutch.store.fsutil import atomic_write, syncfs
from hutch.store.journal import ArtifactRecord, LogRecord, Txn
from hutch.store.layout import ObjectsDir
from hutch.store.manifest import Entry, Manifest, Source, object_key
from hutch.store.parallel import forked, width
from hutch.store.store import Store, source_url


class AddRequest(NamedTuple):
    source: str  # URL or local path
    pin: Pin | None = None
    name: str | None = None
    mirrors: Sequence[str] = ()
    fetch: FetchOptions = FetchOptions()
    limits: Limits = Limits()


class AddResult(NamedTuple):
    artifact: str
    fetched: bool  # False when the store already had it
    digests: dict[str, str]


def add_all(store: Store, requests: Sequence[AddRequest]) -> list[AddResult | HutchError]:
    """add() for several sources at once, each in a process of its own, each committed alone.

    A source that fails or is slow holds back no other; each result is its
    AddResult or the HutchError it failed with, in the order given. Processes,
    not threads: most of an add is Python per archive member, under the GIL
    (tests/bench: four wheels on two cores in ~half the time of one by one).
    """
    if len(requests) == 1:
        return [_add_or_error(store, requests[0])]
    # One progress bar per worker, all on one terminal, would garble each other.
    requests = [r._replace(fetch=r.fetch._replace(progress=False)) for r in requests]
    root = store.layout.root
    # Imported once here, so that no worker imports them again (requests alone
    # is ~55 ms): a forked child inherits every module already loaded.
    import hutch.extract.unpack
    import hutch.fetch.download

    if any(source_url(r.source).lower().startswith(("http:", "https:")) for r in requests):
        import hutch.fetch.http  # noqa: F401

    def add_here(request: AddRequest) -> AddResult | HutchError:
        # A forked child: its own journal environment (LMDB's cannot cross fork).
        return _add_or_error(Store.open(root), request)

    # More workers than cores: an add also waits (the network, syncfs), and the
    # biggest archive given first must not leave a core idle at the end. Nor
    # the biggest one at all: the slot of each worker that ends with nothing
    # left to start is lent to those still running (a big zip takes it up,
    # extract/zip.py).
    return forked(
        add_here, requests, running=2 * width(), lend=True, alone=lambda r: source_url(r.source)
    )


def _add_or_error(store: Store, request: AddRequest) -> AddResult | HutchError:
    try:
        return add(store, request)
    except HutchError as exc:
        return exc


def add(store: Store, request: AddRequest) -> AddResult:
    url = source_url(request.source)
    key = str(request.pin) if request.pin else f"url:{url}"

    # 1. Already here? Then nothing is downloaded.
    found = _lookup(store, key)
    if found is not None:
        return _existing(store, found, request, url)
    store.require_writable("add an artifact")

    # 2. Single flight: one process downloads, the others wait and reuse.
    with store.lock(f"source-{blake3_bytes(key.encode())[:32]}"):
        found = _lookup(store, key)
        if found is not None:
            return _existing(store, found, request, url)
        try:
            return _fetch_and_commit(store, request, url)
        except BaseException as exc:
            # Best effort: a full or read-only journal must not replace the real error.
            with contextlib.suppress(HutchError):
                store.log(LogRecord.now("add", "failed", detail=f"{url}: {_oneline(exc)}"))
            raise


def _fetch_and_commit(store: Store, request: AddRequest, url: str) -> AddResult:
    layout = store.layout
    with store.staging("add", url) as stage:
        # 3. Fetch into staging, hashing; the pin is checked before extraction.
        archive = stage / "archive"
        got = fetch([url, *request.mirrors], archive, pin=request.pin, options=request.fetch)
        faults.point("add.fetched")
        aid = got.digests["blake3"]
        if _lookup(store, f"blake3:{aid}") is not None:
            return _existing(store, aid, request, url, got.digests)

        # gc must not delete objects that are written but not yet referenced.
        with store.holding_objects():
            # 4. Extract, hashing: a member held in memory (nearly all) goes
            #    straight to its object path, a bigger one to a staged blob;
            #    each with its final object mode.
            blobs = stage / "blobs"
            try:
                blobs.mkdir()
            except OSError as exc:
                raise store_error("create", blobs, exc) from exc
            objects = ObjectsDir(os.fspath(layout.objects), store.modes)
            members = extract(archive, blobs, limits=request.limits, display=url, objects=objects)
            faults.point("add.extracted")
            # The archive is done with. Gone before the syncfs below, its dirty
            # pages are dropped, not written: a 1 GiB archive would double that flush.
            with contextlib.suppress(OSError):
                os.unlink(archive)
            manifest = _manifest(members, got, url)

            # 5. Publish the staged blobs: rename, never copy; keep intact existing objects.
            with store.journal.read() as txn:
                committed = {k for k in _object_keys(members) if txn.is_referenced(k)}
            _publish(objects, members, committed)
            faults.point("add.published")

            # 6. The manifest file, from which the journal can be rebuilt.
            canonical = manifest.canonical_bytes()
            mid = blake3_bytes(canonical)
            path = layout.manifest_path(mid)
            try:
                # Rewritten unless intact: a power loss can leave it empty.
                if not path.exists() or path.read_bytes() != canonical:
                    atomic_write(path, canonical, mode=0o444, durable=False)
            except OSError as exc:
                raise store_error("write the manifest", path, exc) from exc
            # 7. One syncfs makes every object and the manifest durable at once.
            try:
                syncfs(layout.root)
            except OSError as exc:
                raise store_error("flush (syncfs) the store at", layout.root, exc) from exc
            faults.point("add.synced")

            # 8. One write transaction: the artifact becomes visible whole, or not at all.
            record = _record(aid, mid, manifest, got, request)
            store.journal.write(lambda txn: _commit(txn, record, manifest, canonical))
            faults.point("add.committed")
    return AddResult(aid, fetched=True, digests=got.digests)


def _manifest(members: list[Member], got: Fetched, url: str) -> Manifest:
    entries = tuple(
        Entry(m.path, m.kind)
        if m.kind == "dir"
        else Entry(m.path, "symlink", target=m.target)
        if m.kind == "symlink"
        else Entry(m.path, "file", size=m.size, exec=m.executable, digest=m.digest)
        for m in members
    )
    return Manifest(Source((url,), got.size, dict(got.digests)), entries)


def _object_keys(members: list[Member]) -> set[str]:
    return {object_key(m.digest, executable=m.executable) for m in members if m.blob and m.digest}


def _publish(objects: ObjectsDir, members: list[Member], committed: set[str]) -> None:
    """Move staged blobs into objects/. An existing object is kept only if a committed
    manifest refers to it (it was durable before that commit, spec/store.md §7);
    an unreferenced one may be what a power loss left, so the fresh blob wins."""
    for m in members:
        if m.blob is None or m.digest is None:
            continue
        key = object_key(m.digest, executable=m.executable)
        target = objects.path(key)
        # Only an object a committed manifest refers to can be kept, so only
        # those are looked at (no stat per object when adding new content).
        if key in committed and _intact(target, m.size):
            os.unlink(m.blob)  # keep the inode that installs may share
            continue
        try:
            try:
                os.rename(m.blob, target)
            except FileNotFoundError:
                objects.make_fanout(target)
                os.rename(m.blob, target)
        except OSError as exc:
            raise store_error("publish object", target, exc) from exc


def _intact(path: str, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except FileNotFoundError:
        return False


def _record(
    aid: str, mid: str, manifest: Manifest, got: Fetched, request: AddRequest
) -> ArtifactRecord:
    now = time.time()
    files = manifest.files
    return ArtifactRecord(
        id=aid,
        manifest=mid,
        urls=list(dict.fromkeys([*manifest.source.urls, *request.mirrors])),
        digests=got.digests,
        size=got.size,
        names=[request.name] if request.name else [],
        files=len(files),
        bytes=sum(e.size or 0 for e in files),
        added=now,
        last_used=now,
    )


def _commit(txn: Txn, record: ArtifactRecord, manifest: Manifest, canonical: bytes) -> None:
    txn.put_artifact(record)
    txn.put_manifest(record.manifest, canonical)
    for name in record.names:
        txn.put_name(name, record.id)
    for algo, hexdigest in record.digests.items():
        txn.put_alias(f"{algo}:{hexdigest}", record.id)
    for url in record.urls:
        txn.put_alias(f"url:{url}", record.id)
    for key in {e.object_key for e in manifest.files}:
        txn.put_ref(key, record.id)
    txn.append_log(LogRecord.now("add", "committed", artifact=record.id, detail=record.urls[0]))


def _lookup(store: Store, key: str) -> str | None:
    with store.journal.read() as txn:
        aid = txn.alias(key)
        return aid if aid and txn.artifact(aid) else None


def _existing(
    store: Store, aid: str, request: AddRequest, url: str, digests: dict[str, str] | None = None
) -> AddResult:
    """The artifact is already here: record any new url, name or digest; download nothing."""
    with store.journal.read() as txn:
        record = txn.artifact(aid)
    assert record is not None
    new_urls = [u for u in [url, *request.mirrors] if u not in record.urls]
    new_name = request.name and request.name not in record.names
    new_digests = {a: h for a, h in (digests or {}).items() if a not in record.digests}
    if (new_urls or new_name or new_digests) and store.writable:

        def update(txn: Txn) -> None:
            current = txn.artifact(aid)
            if current is None:
                return
            current.urls = list(dict.fromkeys([*current.urls, *new_urls]))
            if request.name:
                current.names = list(dict.fromkeys([*current.names, request.name]))
                txn.put_name(request.name, aid)
            for u in new_urls:
                txn.put_alias(f"url:{u}", aid)
            current.digests = {**current.digests, **new_digests}
            for algo, hexdigest in new_digests.items():
                txn.put_alias(f"{algo}:{hexdigest}", aid)
            txn.put_artifact(current)

        store.journal.write(update)
    return AddResult(aid, fetched=False, digests=record.digests)


def _oneline(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
