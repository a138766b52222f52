"""unpack: detect the format, then stream the archive into staged blobs (spec/extract.md).

The whole stage reads top to bottom:

1. open the archive and read its first bytes; the magic decides the format;
2. hand the open file to the tar reader (through a decompressor) or the zip
   reader, which check every name and write every file through one BlobWriter;
3. return the checked, sorted member list. Directories and symlinks are only
   Members: nothing but flat blob files (and, given ``objects``, files named by
   their own digest) is ever created, so nothing lands outside ``staging`` and
   ``objects`` whatever the archive names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from hutch.extract import Limits, Member
from hutch.extract.detect import BLOCK, compression, describe, is_tar, is_zip
from hutch.extract.tar import unpack_tar
from hutch.extract.writer import BlobWriter, Budget
from hutch.extract.zip import unpack_zip
from hutch.store.errors import ArchiveError, store_error

if TYPE_CHECKING:
    from hutch.store.layout import ObjectsDir


def unpack(
    archive: Path,
    staging: Path,
    *,
    limits: Limits,
    display: str,
    objects: ObjectsDir | None = None,
) -> list[Member]:
    try:
        f = open(archive, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        raise store_error("open archive", archive, exc) from exc
    try:
        size = os.fstat(f.fileno()).st_size
        head = f.read(BLOCK)
        f.seek(0)
        budget = Budget(limits, size, display)
        with BlobWriter(staging, budget, objects) as writer:
            if is_zip(head):
                return unpack_zip(f, size, writer)
            kind = compression(head)
            if kind is not None:
                return unpack_tar(f, kind, writer)
            if is_tar(head):
                return unpack_tar(f, "none", writer)
            raise ArchiveError(
                display, f"not a recognised archive (tar, zip, or compressed tar): {describe(head)}"
            )
    except OSError as exc:
        raise store_error("read archive", archive, exc) from exc
    finally:
        f.close()
