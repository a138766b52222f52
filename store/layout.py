"""Where everything lives in a store (spec/store.md §3), and creating one."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from hutch.store.errors import store_error
from hutch.store.fsutil import atomic_write

CACHEDIR_TAG = b"""Signature: 8a477f597d28d172789f06886806bc55
# This file is a cache directory tag created by hutch.
# For information about cache directory tags, see https://bford.info/cachedir/
"""
FORMAT = 1
FANOUT = [f"{i:02x}" for i in range(256)]


@dataclass(frozen=True)
class Layout:
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

    def manifest_path(self, manifest_id: str) -> Path:
        return self.manifests / f"{manifest_id}.json"


@dataclass(frozen=True)
class Modes:
    """Permission bits for a private or a group-shared store (spec/permissions.md)."""

    dir: int = 0o755
    file: int = 0o644
    shared_group: str | None = None

    @classmethod
    def load(cls, layout: Layout) -> Modes:
        try:
            data = json.loads(layout.config.read_bytes())
        except (OSError, ValueError):
            return cls()
        group = data.get("shared_group")
        return cls(0o2775, 0o664, group) if group else cls()


def init(layout: Layout, modes: Modes) -> None:
    """Create the store's skeleton. Idempotent; never touches existing content."""
    try:
        for path in (layout.root, layout.objects, layout.manifests, layout.staging, layout.locks):
            _mkdir(path, modes.dir)
        for sub in FANOUT:
            _mkdir(layout.objects / sub, modes.dir)
        tag = layout.root / "CACHEDIR.TAG"
        if not tag.exists():
            atomic_write(tag, CACHEDIR_TAG, mode=modes.file)
        if not layout.config.exists():
            config = {"format": FORMAT, "shared_group": modes.shared_group}
            atomic_write(layout.config, json.dumps(config).encode() + b"\n", mode=modes.file)
    except OSError as exc:
        raise store_error("create the store at", layout.root, exc) from exc


def _mkdir(path: Path, mode: int) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    # mkdir's mode is filtered by the umask; shared stores need the exact bits.
    if mode & 0o7000 or mode & 0o077 != 0o055:
        os.chmod(path, mode)
