"""Extract: archive bytes in, safe staged blobs and a member list out.

Interface (the store depends on exactly this):

    extract(archive, staging, *, limits=Limits(), display=None, objects=None) -> list[Member]

- ``archive``: path of the downloaded archive (format detected by magic bytes).
- ``staging``: an existing, empty, private directory. extract() writes one blob
  file per regular-file member into it (flat, counter names; a zip written in
  parts: one directory per part), hashing with blake3
  while writing, and leaves each blob with its final object mode (0o444, or
  0o555 when executable). It creates nothing outside ``staging``, except:
- ``objects`` (an add gives the store's objects/): a member whose content is
  in memory is written straight to its object path, named by its digest, and
  has ``blob=None`` (spec/store.md §7 step 5). A file already there that does
  not hold exactly those bytes is left for the caller to replace: that member
  gets a staged blob.
- Returns members sorted by path. Directories implied by file paths are listed
  too. A hardlink member reuses the digest of its target and has ``blob=None``.
- Raises ArchiveError (exit 5) naming the archive (``display``, else the
  path), the member and the reason; OSErrors while writing (ENOSPC, EACCES)
  become StoreError via hutch.store.errors.store_error. On any error the
  caller removes ``staging`` (a partly written blob is already gone).

Also here: ``Limits.from_env`` (the CLI's --max-unpacked/--max-entries and
HUTCH_MAX_UNPACKED/HUTCH_MAX_ENTRIES) and ``parse_size("2GiB")``. The full
contract, refusal list and limit arithmetic are in spec/extract.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from hutch.store.digest import Blake3Hex
from hutch.store.errors import UsageError

if TYPE_CHECKING:
    from hutch.store.layout import ObjectsDir

Kind = Literal["file", "dir", "symlink"]

GiB = 1 << 30


class Limits(NamedTuple):
    """Bomb limits. Bytes are counted as written, never trusted from headers."""

    max_unpacked: int = 64 * GiB
    max_entries: int = 1_000_000
    # Real archives (even CUDA wheels) compress well under 20:1; a gzip bomb of
    # zeros is ~1000:1. The ratio is only enforced past ``ratio_grace`` bytes.
    # With these, a 2 GiB-of-zeros gzip bomb (2.0 MiB) stops at 405 MiB
    # written; the arithmetic is in spec/extract.md §Limits.
    max_ratio: int = 200
    ratio_grace: int = 256 << 20

    @classmethod
    def from_env(cls, max_unpacked: int | None = None, max_entries: int | None = None) -> Limits:
        """Limits from CLI values, else ``HUTCH_MAX_UNPACKED`` / ``HUTCH_MAX_ENTRIES``.

        An explicit max_unpacked is the user's own bound for archives they
        trust, so it also lifts the ratio check up to that size (the ratio
        check is what refuses high-ratio archives under the default).
        """
        default = cls()
        if max_unpacked is None and (env := os.environ.get("HUTCH_MAX_UNPACKED")):
            max_unpacked = parse_size(env, what="HUTCH_MAX_UNPACKED")
        if max_entries is None and (env := os.environ.get("HUTCH_MAX_ENTRIES")):
            max_entries = parse_count(env, what="HUTCH_MAX_ENTRIES")
        unpacked = default.max_unpacked if max_unpacked is None else max_unpacked
        return cls(
            max_unpacked=unpacked,
            max_entries=default.max_entries if max_entries is None else max_entries,
            ratio_grace=default.ratio_grace
            if max_unpacked is None
            else max(default.ratio_grace, unpacked),
        )


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str, *, what: str = "size") -> int:
    """``"2GiB"`` -> 2147483648. K/M/G/T and KiB.. are powers of 1024, KB.. of 1000."""
    m = _SIZE.fullmatch(text)
    unit = _UNITS.get(m.group(2).lower()) if m else None
    if m is None or unit is None:
        raise UsageError(
            f"invalid {what} {text!r}",
            hint="give bytes or a number with a unit: 500MiB, 2GiB, 1.5G, 10GB",
        )
    value = int(float(m.group(1)) * unit) if "." in m.group(1) else int(m.group(1)) * unit
    if value <= 0:
        raise UsageError(f"invalid {what} {text!r}: must be positive", hint="e.g. 2GiB")
    return value


def parse_count(text: str, *, what: str = "count") -> int:
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise UsageError(f"invalid {what} {text!r}", hint="give a positive whole number")
    return value


class Member(NamedTuple):
    path: str  # safe, normalised, relative POSIX path
    kind: Kind
    size: int = 0
    executable: bool = False
    digest: Blake3Hex | None = None  # files only
    target: str | None = None  # symlinks only: the link text, checked to stay inside
    # Staged content's path for files; None for hardlinks and for content
    # already at its object path.
    blob: str | None = None


def extract(
    archive: Path,
    staging: Path,
    *,
    limits: Limits | None = None,
    display: str | None = None,
    objects: ObjectsDir | None = None,
) -> list[Member]:
    from hutch.extract.unpack import unpack

    return unpack(
        archive,
        staging,
        limits=limits or Limits(),
        display=display or str(archive),
        objects=objects,
    )
