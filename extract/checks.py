"""Member-name and tree checks shared by the tar and zip readers.

Every name goes through ``fsutil.safe_relpath`` (hutch's one containment check);
this module adds what only makes sense for a whole tree: duplicates, a path that
is both a file and a directory, names that collide once case-folded or
NFC-normalised, entries written through a symlink, hardlinks to entries that do
not exist yet, and symlink targets that leave the tree once every symlink on
their way is followed.

Nothing here touches the filesystem: the tree is a dict until the store's
installer builds it from the returned Members.
"""

from __future__ import annotations

from dataclasses import dataclass

from hutch.extract import Kind, Member
from hutch.extract.writer import Blob
from hutch.store.errors import ArchiveError
from hutch.store.fsutil import UnsafePath, fold_key, safe_relpath

# Linux gives up after 40 symlinks on one lookup (path_resolution(7), ELOOP).
_MAX_SYMLINK_HOPS = 40


@dataclass(slots=True)
class _Entry:
    kind: Kind
    explicit: bool  # named by an archive entry, not only implied by a child's path
    member: Member | None = None


class Tree:
    """The tree an archive describes, checked entry by entry as it is read."""

    def __init__(self, display: str) -> None:
        self.display = display
        self._entries: dict[str, _Entry] = {}
        self._folded: dict[str, str] = {}

    def refuse(self, member: str | None, reason: str) -> ArchiveError:
        return ArchiveError(self.display, reason, member=member)

    def name(self, raw: str) -> str | None:
        """``raw`` as a safe relative path; None for the root itself ("./")."""
        if (
            not raw.strip("./")  # cheap filter; ".." also passes it, hence the exact test
            and raw
            and not raw.startswith("/")
            and all(p in ("", ".") for p in raw.split("/"))
        ):
            # GNU tar archives made with `tar -C dir .` start with "./": it names
            # the extraction root, which already exists.
            return None
        try:
            return safe_relpath(raw)
        except UnsafePath as exc:
            raise self.refuse(raw, exc.reason) from None

    # -- registration: every check that does not need later entries happens here,
    #    before a single byte of the member is written.

    def _fold(self, rel: str, raw: str) -> None:
        key = fold_key(rel)
        other = self._folded.setdefault(key, rel)
        if other != rel:
            raise self.refuse(
                raw,
                f"name collides with {other!r} under case folding or Unicode normalisation "
                "(the tree could not be installed on macOS or Windows filesystems)",
            )

    def _parents(self, rel: str, raw: str) -> None:
        parent, slash, _ = rel.rpartition("/")
        if not slash:
            return
        entry = self._entries.get(parent)
        if entry is not None and entry.kind == "dir":
            # Every entry's parents were checked (and registered as directories)
            # when it was added, and no entry ever changes kind, so a parent that
            # is a directory already vouches for all of its own parents. Siblings
            # skip the walk below: 1 lookup instead of one join and lookup per level.
            return
        parts = rel.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            entry = self._entries.get(parent)
            if entry is None:
                self._fold(parent, raw)
                self._entries[parent] = _Entry("dir", explicit=False)
            elif entry.kind == "symlink":
                raise self.refuse(raw, f"entry is written through the symlink {parent!r}")
            elif entry.kind == "file":
                raise self.refuse(raw, f"{parent!r} is both a file and a directory")

    def claim(self, raw: str, rel: str, kind: Kind) -> None:
        """Register ``rel`` as ``kind``; refuse duplicates and kind conflicts."""
        self._parents(rel, raw)
        entry = self._entries.get(rel)
        if entry is not None:
            if entry.kind == "dir" and kind == "dir":
                # A directory named twice (or after its children) changes nothing:
                # hutch keeps no directory metadata.
                entry.explicit = True
                return
            if "dir" in (entry.kind, kind):
                other = kind if entry.kind == "dir" else entry.kind
                raise self.refuse(raw, f"{rel!r} is both a {other} and a directory")
            raise self.refuse(raw, "duplicate entry")
        self._fold(rel, raw)
        self._entries[rel] = _Entry(kind, explicit=True)

    def add_dir(self, raw: str, rel: str) -> None:
        self.claim(raw, rel, "dir")

    def add_file(self, rel: str, blob: Blob, *, executable: bool) -> None:
        """Record a file already claimed with ``claim(raw, rel, "file")``."""
        self._entries[rel].member = Member(
            rel,
            "file",
            size=blob.size,
            executable=executable,
            digest=blob.digest,
            blob=blob.path,
        )

    def add_symlink(self, raw: str, rel: str, target: str) -> None:
        if not target:
            raise self.refuse(raw, "symlink with an empty target")
        if target.startswith("/"):
            raise self.refuse(raw, f"symlink to an absolute path {target!r}")
        # '..' and '.' are how relative links move; whether they stay inside is
        # decided once the whole tree is known (members()). Every other
        # component must be a safe name: no control characters, backslashes,
        # drive letters, or over-long components.
        for part in target.split("/"):
            if part not in ("", ".", ".."):
                try:
                    safe_relpath(part)
                except UnsafePath as exc:
                    raise self.refuse(raw, f"symlink target {target!r}: {exc.reason}") from None
        self.claim(raw, rel, "symlink")
        self._entries[rel].member = Member(rel, "symlink", target=target)

    def add_hardlink(self, raw: str, rel: str, target_raw: str) -> None:
        """A tar hardlink: a second name for an *earlier* regular file."""
        try:
            target = safe_relpath(target_raw)
        except UnsafePath as exc:
            raise self.refuse(raw, f"hardlink target {target_raw!r}: {exc.reason}") from None
        entry = self._entries.get(target)
        if entry is None or not entry.explicit:
            # GNU tar links to what is already on disk; a later entry, or one
            # that never appears, would make it fail (or link outside the tree).
            raise self.refuse(raw, f"hardlink to {target_raw!r}, which is not an earlier entry")
        if entry.kind != "file" or entry.member is None:
            raise self.refuse(raw, f"hardlink to {target_raw!r}, which is not a regular file")
        self.claim(raw, rel, "file")
        src = entry.member
        # A hardlink shares its target's inode, so GNU tar gives it the target's
        # mode; the link entry's own mode field is ignored.
        self._entries[rel].member = Member(
            rel, "file", size=src.size, executable=src.executable, digest=src.digest, blob=None
        )

    # -- whole-tree checks, once every entry is known.

    def _resolve(self, link: str, target: str) -> str | None:
        """Where ``link -> target`` lands, following symlinks; None if it escapes."""
        parts = link.split("/")[:-1]
        pending = [p for p in reversed(target.split("/")) if p not in ("", ".")]
        hops = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if not parts:
                    return None
                parts.pop()
                continue
            parts.append(part)
            entry = self._entries.get("/".join(parts))
            if entry is not None and entry.kind == "symlink" and entry.member is not None:
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise self.refuse(link, "symlink loop")
                inner = entry.member.target or ""
                parts.pop()
                pending.extend(p for p in reversed(inner.split("/")) if p not in ("", "."))
        return "/".join(parts)

    def members(self) -> list[Member]:
        out: list[Member] = []
        for rel, entry in self._entries.items():
            if entry.kind == "symlink":
                assert entry.member is not None
                target = entry.member.target or ""
                where = self._resolve(rel, target)
                if where is None:
                    raise self.refuse(rel, f"symlink target {target!r} escapes the tree")
                if where:
                    try:
                        safe_relpath(where)
                    except UnsafePath as exc:
                        raise self.refuse(rel, f"symlink target {target!r}: {exc.reason}") from None
                out.append(entry.member)
            elif entry.kind == "dir":
                out.append(Member(rel, "dir"))
            else:
                assert entry.member is not None
                out.append(entry.member)
        out.sort(key=lambda m: m.path)
        return out
