"""The inflater: raw deflate (zip members) and gzip (.tar.gz), with CRC-32.

zlib-ng reads and writes zlib's formats with faster code (SIMD inflate and
CRC-32); Fedora ships it as the system zlib. Inflating and CRC-checking every
member of the four benchmark wheels took 0.32 s with it against 0.65 s with
the stdlib's zlib (tests/bench), about a tenth of what `hutch add` of them
costs. ``zlib_ng`` is imported here and only here; the readers catch
``error`` and turn it into ArchiveError.
"""

from __future__ import annotations

from typing import cast

from zlib_ng import zlib_ng

# The stub declares `error: Exception`, an instance; it is the exception class.
error = cast("type[Exception]", zlib_ng.error)
crc32 = zlib_ng.crc32


def raw() -> zlib_ng._Decompress:
    """A decompressor for a bare deflate stream, as a zip member holds it."""
    return zlib_ng.decompressobj(-15)


def gzip() -> zlib_ng._Decompress:
    """A decompressor for one gzip member; it checks the CRC-32 and ISIZE trailer."""
    return zlib_ng.decompressobj(31)
