"""The manifest: what an artifact's tree is, in canonical bytes (spec/store.md §4).

Values are frozen, slotted dataclasses, not pydantic models: an install of a
wheel builds thousands of Entries, and importing pydantic alone costs ~95 ms
on every command (measured, issue 7). Bytes become a Manifest in one of two
ways, by where they come from:

- ``Manifest.load(raw, mid)``: bytes hutch committed. They must hash to the
  manifest id the artifact record names, which proves they are exactly the
  bytes that were built from checked members at commit; they are decoded
  without being validated again (validate once, at the boundary).
- ``Manifest.parse(raw)``: bytes from outside (a manifest file a journal
  rebuild picks up): validated strictly (hutch.store.schema, with pydantic)
  and then checked as a tree (safe paths, hex digests, one entry per path),
  every issue collected before one error is raised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

from hutch.store.digest import Blake3Hex, blake3_bytes, is_blake3_hex
from hutch.store.errors import StoreError
from hutch.store.fsutil import UnsafePath, safe_relpath

FORMAT = 1
EntryType = Literal["file", "dir", "symlink"]
# Read by pydantic when hutch.store.schema validates foreign bytes (a plain
# dict, so that defining these classes never imports pydantic).
_STRICT: dict[str, Any] = {"extra": "forbid", "strict": True}
# Linux gives up after 40 symlinks in one lookup (path_resolution(7), ELOOP).
MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True, slots=True)
class Source:
    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    urls: tuple[str, ...]
    size: int
    digests: dict[str, str]  # algo -> hex; always blake3 and sha256

    @property
    def artifact_id(self) -> Blake3Hex:
        return Blake3Hex(self.digests["blake3"])

    def to_dict(self) -> dict[str, Any]:
        return {"digests": dict(self.digests), "size": self.size, "urls": sorted(set(self.urls))}


class Entry(NamedTuple):
    """One member of the tree. A NamedTuple: an install builds thousands of these,
    and a tuple is made ~4x faster than a frozen dataclass (measured on 8004)."""

    path: str
    type: EntryType
    size: int | None = None
    exec: bool | None = None  # the manifest's own key (spec/store.md §4)
    digest: str | None = None
    target: str | None = None

    @property
    def object_key(self) -> str:
        """The object this file entry is stored as: its blake3, plus ``.x`` if executable."""
        assert self.digest is not None
        return object_key(self.digest, executable=bool(self.exec))

    def to_dict(self) -> dict[str, Any]:
        """The entry's JSON object: only the keys its type carries."""
        if self.type == "file":
            return {
                "digest": self.digest,
                "exec": bool(self.exec),
                "path": self.path,
                "size": self.size,
                "type": "file",
            }
        if self.type == "symlink":
            return {"path": self.path, "target": self.target, "type": "symlink"}
        return {"path": self.path, "type": self.type}


def object_key(digest: str, *, executable: bool) -> str:
    return f"{digest}.x" if executable else digest


def path_order(path: str) -> bytes:
    """The canonical order of entries: bytewise on the encoded path (a dir before its contents)."""
    return path.encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Manifest:
    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    source: Source
    entries: tuple[Entry, ...]
    format: int = FORMAT

    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.type == "file"]

    def canonical_bytes(self) -> bytes:
        """JSON, keys sorted, no whitespace, entries by bytewise path: the id's input."""
        entries = sorted(self.entries, key=lambda e: path_order(e.path))
        data = {
            "entries": [e.to_dict() for e in entries],
            "format": self.format,
            "source": self.source.to_dict(),
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        )

    @property
    def id(self) -> Blake3Hex:
        return blake3_bytes(self.canonical_bytes())

    @classmethod
    def load(cls, raw: bytes, manifest_id: str, *, where: str) -> Manifest:
        """Decode committed bytes; they must hash to ``manifest_id`` (see the module doc)."""
        got = blake3_bytes(raw)
        if got != manifest_id:
            raise StoreError(
                f"the manifest bytes in {where} do not hash to their id {manifest_id[:16]} "
                f"(got {got[:16]}): damaged",
                path=where,
                op="read manifest",
                hint="run `hutch doctor`; `hutch doctor --rebuild` rebuilds the journal "
                "from the manifest files",
            )
        data = json.loads(raw)
        s = data["source"]
        get = dict.get
        make = tuple.__new__  # Entry's own __new__ adds a Python call per entry
        entries = tuple(
            [
                make(
                    Entry,
                    (
                        e["path"],
                        e["type"],
                        get(e, "size"),
                        get(e, "exec"),
                        get(e, "digest"),
                        get(e, "target"),
                    ),
                )
                for e in data["entries"]
            ]
        )
        return cls(Source(tuple(s["urls"]), s["size"], s["digests"]), entries, data["format"])

    @classmethod
    def parse(cls, raw: bytes, *, where: str) -> Manifest:
        """Validate bytes from outside hutch's commit path; InvalidDocument lists every issue."""
        from hutch.store.schema import InvalidDocument, validate

        manifest = validate(cls, raw, what=f"manifest {where}")
        problems = manifest.problems()
        if problems:
            raise InvalidDocument(f"manifest {where}", problems)
        return manifest

    def problems(self) -> list[str]:
        """What makes this manifest unusable as a tree: every issue, not just the first."""
        out: list[str] = []
        if self.format != FORMAT:
            out.append(f"format {self.format} (this hutch reads format {FORMAT})")
        out += [
            f"source.digests has no {algo}"
            for algo in ("blake3", "sha256")
            if algo not in self.source.digests
        ]
        if not is_blake3_hex(self.source.digests.get("blake3", "")):
            out.append("source.digests.blake3 is not a blake3 hex digest")
        tree: dict[str, Entry] = {}
        for e in self.entries:
            out += [f"entry {e.path!r}: {p}" for p in _entry_problems(e)]
            if e.path in tree:
                out.append(f"entry {e.path!r}: listed twice")
            tree[e.path] = e
        for e in self.entries:
            parent = e.path.rpartition("/")[0]
            if parent and (tree.get(parent) is None or tree[parent].type != "dir"):
                out.append(f"entry {e.path!r}: its parent {parent!r} is not a directory entry")
            if e.type == "symlink" and e.target and escapes(e.path, e.target, tree):
                out.append(f"entry {e.path!r}: symlink target {e.target!r} leaves the tree")
        return out


def escapes(link: str, target: str, tree: dict[str, Entry]) -> bool:
    """Does ``link -> target`` resolve outside the tree's root, following its symlinks?

    A lexical check is not enough: `a/b/l -> x/../..` with `a/b/x -> ../../c`
    normalises to `a` but resolves (c, then up twice) to outside the root.
    """
    where = link.split("/")[:-1]
    pending = [p for p in reversed(target.split("/")) if p not in ("", ".")]
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if not where:
                return True
            where.pop()
            continue
        where.append(part)
        entry = tree.get("/".join(where))
        if entry is None or entry.type == "file":
            return False  # the kernel stops here (ENOENT, ENOTDIR): nothing further is reached
        if entry.type == "symlink":
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return False  # ELOOP: the kernel stops too
            where.pop()
            pending.extend(
                p for p in reversed((entry.target or "").split("/")) if p not in ("", ".")
            )
    return False


def _entry_problems(e: Entry) -> list[str]:
    out = []
    try:
        if safe_relpath(e.path) != e.path:
            out.append("path is not normalised")
    except UnsafePath as exc:
        out.append(f"unsafe path: {exc.reason}")
    if e.type == "file":
        if e.size is None or e.size < 0:
            out.append("a file needs a size >= 0")
        if e.exec is None:
            out.append("a file needs exec")
        if e.digest is None or not is_blake3_hex(e.digest):
            out.append("a file needs a blake3 hex digest")
        if e.target is not None:
            out.append("a file has no target")
    elif e.type == "symlink":
        if not e.target or e.target.startswith("/"):
            out.append("a symlink needs a relative target")
        if (e.size, e.exec, e.digest) != (None, None, None):
            out.append("a symlink has only a target")
    elif (e.size, e.exec, e.digest, e.target) != (None, None, None, None):
        out.append("a directory has no size, exec, digest or target")
    return out
