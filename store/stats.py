"""stats: how much the store holds and how much deduplication saves (spec/inspect.md).

Also the accounting the other inspection verbs share: which objects are on
disk (scan_objects) and how many bytes of an artifact are its own and how many
it shares with other artifacts (usage).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hutch.store.journal import ArtifactRecord, Txn
from hutch.store.layout import Layout
from hutch.store.store import Store

_OBJECT_NAME = re.compile(r"[0-9a-f]{62}(\.x)?")


@dataclass(frozen=True)
class ObjectFile:
    key: str  # blake3 hex, plus ".x" when executable
    path: Path
    size: int


def scan_objects(layout: Layout) -> Iterator[ObjectFile]:
    """Every object file under objects/; names that are not object keys are skipped."""
    try:
        fanout = sorted(os.scandir(layout.objects), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for sub in fanout:
        if len(sub.name) != 2 or not sub.is_dir(follow_symlinks=False):
            continue
        try:
            entries = list(os.scandir(sub.path))
        except FileNotFoundError:
            continue  # a cleaner removed the fan-out directory meanwhile
        for entry in entries:
            if not _OBJECT_NAME.fullmatch(entry.name):
                continue
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            yield ObjectFile(sub.name + entry.name, Path(entry.path), size)


@dataclass(frozen=True)
class Usage:
    """An artifact's distinct objects split by who else needs them."""

    unique_bytes: int  # objects only this artifact references: what removing it frees
    shared_bytes: int  # objects other artifacts reference too


def object_sizes(store: Store, txn: Txn, record: ArtifactRecord) -> dict[str, int]:
    """The distinct objects an artifact needs, with their sizes (from its manifest)."""
    try:
        manifest = store.manifest(txn, record)
    except OSError:
        return {}  # no manifest anywhere: `hutch doctor` and `verify` report that
    return {e.object_key: e.size or 0 for e in manifest.files}


def ref_counts(txn: Txn) -> Counter[str]:
    """How many artifacts reference each object."""
    return Counter(obj for obj, _ in txn.refs())


def usage(store: Store, txn: Txn, records: Iterable[ArtifactRecord]) -> dict[str, Usage]:
    counts = ref_counts(txn)
    out = {}
    for record in records:
        sizes = object_sizes(store, txn, record)
        unique = sum(size for key, size in sizes.items() if counts[key] <= 1)
        out[record.id] = Usage(unique, sum(sizes.values()) - unique)
    return out


@dataclass(frozen=True)
class Stats:
    store: str
    journal: str
    artifacts: int
    logical_bytes: int  # the artifacts' files added up, as if each were extracted alone
    objects: int  # object files on disk
    physical_bytes: int  # their sizes
    unreferenced_objects: int  # on disk, referenced by no artifact: `hutch gc` frees them
    unreferenced_bytes: int
    missing_objects: int  # referenced, not on disk: `hutch verify --repair` restores them
    manifests: int  # manifest files
    journal_bytes: int

    @property
    def dedup_ratio(self) -> float:
        """Logical bytes per byte of referenced objects (1.0: nothing shared)."""
        referenced = self.physical_bytes - self.unreferenced_bytes
        return round(self.logical_bytes / referenced, 3) if referenced > 0 else 1.0

    @property
    def saved_bytes(self) -> int:
        return max(0, self.logical_bytes - (self.physical_bytes - self.unreferenced_bytes))


def stats(store: Store) -> Stats:
    layout = store.layout
    with store.journal.read() as txn:
        records = list(txn.artifacts())
        referenced = txn.referenced_objects()
    on_disk = {o.key: o.size for o in scan_objects(layout)}
    unreferenced = [size for key, size in on_disk.items() if key not in referenced]
    try:
        manifests = sum(1 for p in os.scandir(layout.manifests) if p.name.endswith(".json"))
    except FileNotFoundError:
        manifests = 0
    return Stats(
        store=str(layout.root),
        journal=str(layout.journal),
        artifacts=len(records),
        logical_bytes=sum(r.bytes for r in records),
        objects=len(on_disk),
        physical_bytes=sum(on_disk.values()),
        unreferenced_objects=len(unreferenced),
        unreferenced_bytes=sum(unreferenced),
        missing_objects=len(referenced - on_disk.keys()),
        manifests=manifests,
        journal_bytes=_size(layout.journal / "data.mdb"),
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def human_size(n: float) -> str:
    """``1536`` -> ``1.5 KiB``: binary units, as parse_size reads them."""
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024:
            break
        if unit != "PiB":
            n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
