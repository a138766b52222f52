"""verify: is every object an artifact needs intact? (spec/store.md §10)"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from hutch.store.digest import hash_file
from hutch.store.errors import Damage
from hutch.store.layout import Layout
from hutch.store.manifest import Entry, Manifest

Level = Literal["stat", "full", "none"]

# Files at least this big are hashed with blake3's own threads; smaller ones
# are spread over a pool (blake3 releases the GIL while hashing).
_BIG = 8 << 20


def verify(layout: Layout, manifest: Manifest, level: Level = "stat") -> list[Damage]:
    """The damaged file entries of ``manifest``, one Damage each (empty when intact)."""
    if level == "none":
        return []
    by_key: dict[str, list[Entry]] = {}
    for entry in manifest.files:
        by_key.setdefault(entry.object_key, []).append(entry)
    problems: dict[str, str] = {}
    to_hash: list[tuple[str, Entry]] = []
    for key, entries in by_key.items():
        problem = _stat_problem(layout, key, entries[0])
        if problem:
            problems[key] = problem
        elif level == "full":
            to_hash.append((key, entries[0]))
    if to_hash:
        problems.update(_hash_problems(layout, to_hash))
    return [
        Damage(entry.path, str(layout.object_path(key)), problem)
        for key, problem in problems.items()
        for entry in by_key[key]
    ]


def _stat_problem(layout: Layout, key: str, entry: Entry) -> str | None:
    try:
        st = os.stat(layout.object_path(key))
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size != entry.size:
        if st.st_size < (entry.size or 0):
            return f"truncated ({st.st_size} of {entry.size} bytes)"
        return f"wrong size ({st.st_size}, expected {entry.size} bytes)"
    return None


def _hash_problems(layout: Layout, items: list[tuple[str, Entry]]) -> dict[str, str]:
    workers = os.cpu_count() or 2

    def check(item: tuple[str, Entry]) -> tuple[str, str | None]:
        key, entry = item
        size = entry.size or 0
        try:
            got, _ = hash_file(layout.object_path(key), threads=workers if size >= _BIG else 1)
        except OSError as exc:
            return key, f"unreadable ({exc.strerror})"
        return key, None if got == entry.digest else "corrupt (blake3 mismatch)"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return {key: problem for key, problem in pool.map(check, items) if problem}
