"""Extract: archive bytes in, safe staged blobs and a member list out.

Interface (the store depends on exactly this):

    extract(archive, staging, *, limits=Limits(), display=None) -> list[Member]

- ``archive``: path of the downloaded archive (format detected by magic bytes).
- ``staging``: an existing, empty, private directory. extract() writes one blob
  file per regular-file member into it (flat, any names), hashing with blake3
  while writing, and leaves each blob with its final object mode (0o444, or
  0o555 when executable). It creates nothing outside ``staging``.
- Returns members sorted by path. Directories implied by file paths are listed
  too. A hardlink member reuses the digest of its target and has ``blob=None``.
- Raises ArchiveError (exit 5) naming the archive (``display``, else the
  path), the member and the reason; OSErrors while writing (ENOSPC, EACCES)
  become StoreError via hutch.store.errors.store_error. On any error the
  caller removes ``staging``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hutch.store.digest import Blake3Hex

Kind = Literal["file", "dir", "symlink"]

GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Bomb limits. Bytes are counted as written, never trusted from headers."""

    max_unpacked: int = 64 * GiB
    max_entries: int = 1_000_000
    # Real archives (even CUDA wheels) compress well under 20:1; a gzip bomb of
    # zeros is ~1000:1. The ratio is only enforced past ``ratio_grace`` bytes.
    max_ratio: int = 200
    ratio_grace: int = 256 << 20


@dataclass(frozen=True)
class Member:
    path: str  # safe, normalised, relative POSIX path
    kind: Kind
    size: int = 0
    executable: bool = False
    digest: Blake3Hex | None = None  # files only
    target: str | None = None  # symlinks only: the link text, checked to stay inside
    blob: Path | None = None  # staged content for files; None for hardlinks


def extract(
    archive: Path, staging: Path, *, limits: Limits | None = None, display: str | None = None
) -> list[Member]:
    from hutch.extract.unpack import unpack

    return unpack(archive, staging, limits=limits or Limits(), display=display or str(archive))
