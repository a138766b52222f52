"""Streaming decompressors for tar archives: bounded memory, strict ends.

Each decoder yields decompressed chunks and raises ArchiveError (never a codec
exception) for corrupt data, a stream that ends early, or non-zero bytes after
the last compressed stream. Concatenated streams (``cat a.gz b.gz``, pigz,
pbzip2, multi-frame zstd) are decoded in full, as gzip(1) and GNU tar do; zero
bytes between or after streams are skipped like gzip(1) does (tape padding, xz
stream padding).

Memory stays flat: no call may produce more than about CHUNK bytes, however
well the input compresses. ``zstandard`` is imported here and only here.
"""

from __future__ import annotations

import bz2
import lzma
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

import zstandard
from hutch.extract import inflate
from hutch.extract.detect import Compression
from hutch.extract.writer import CHUNK, Budget
from hutch.store.errors import ArchiveError

_IN_CHUNK = 1 << 18

# zstd's RLE blocks turn 4 input bytes into 128 KiB (ratio 32768:1) and the
# zstandard decompressobj has no output cap, so it is fed at most this much per
# call: <= 64 MiB out per call in the worst case, ~1 GB/s on real data (measured
# on CPython's stdlib sources: 2 KiB slices ~1.0 GB/s, 64 KiB ones ~1.1 GB/s).
_ZSTD_SLICE = 2048

_MAGIC: dict[Compression, tuple[bytes, ...]] = {
    "gzip": (b"\x1f\x8b",),
    "bzip2": (b"BZh",),
    "xz": (b"\xfd7zXZ\x00",),
    # A zstd frame, or a skippable frame (pzstd writes one first).
    "zstd": (b"\x28\xb5\x2f\xfd", *(bytes([0x50 + i, 0x2A, 0x4D, 0x18]) for i in range(16))),
}

_CODEC_ERRORS = (inflate.error, lzma.LZMAError, zstandard.ZstdError, OSError, EOFError, ValueError)


class _Decomp(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


class _Fail:
    def __init__(self, display: str, kind: Compression) -> None:
        self.display = display
        self.kind = kind

    def truncated(self) -> ArchiveError:
        return ArchiveError(
            self.display, f"truncated archive: the {self.kind} stream ends before its end marker"
        )

    def garbage(self) -> ArchiveError:
        return ArchiveError(self.display, f"trailing garbage after the {self.kind} stream")


def _next_stream(f: BinaryIO, rest: bytes, kind: Compression, fail: _Fail) -> bytes | None:
    """After one stream ends: None at a clean end, else the bytes starting the next one."""
    while True:
        rest = rest.lstrip(b"\0")
        if rest:
            break
        rest = f.read(_IN_CHUNK)
        if not rest:
            return None
    while len(rest) < 6 and (more := f.read(_IN_CHUNK)):
        rest += more
    if not rest.startswith(_MAGIC[kind]):
        raise fail.garbage()
    return rest


def _gzip(f: BinaryIO, fail: _Fail) -> Iterator[bytes]:
    d = inflate.gzip()
    data = f.read(_IN_CHUNK)
    while True:
        out = d.decompress(data, CHUNK)
        if out:
            yield out
        if d.eof:
            nxt = _next_stream(f, d.unused_data, "gzip", fail)
            if nxt is None:
                return
            d, data = inflate.gzip(), nxt
            continue
        data = d.unconsumed_tail
        # A full CHUNK may mean the inflater holds more output; ask again before reading.
        if not data and len(out) < CHUNK:
            data = f.read(_IN_CHUNK)
            if not data:
                raise fail.truncated()


def _bz_xz(
    f: BinaryIO, factory: Callable[[], _Decomp], kind: Compression, fail: _Fail
) -> Iterator[bytes]:
    d = factory()
    data = f.read(_IN_CHUNK)
    while True:
        if d.needs_input:
            if not data:
                data = f.read(_IN_CHUNK)
                if not data:
                    raise fail.truncated()
            out = d.decompress(data, CHUNK)
            data = b""
        else:
            out = d.decompress(b"", CHUNK)
        if out:
            yield out
        if d.eof:
            nxt = _next_stream(f, d.unused_data, kind, fail)
            if nxt is None:
                return
            d, data = factory(), nxt


def _zstd(f: BinaryIO, fail: _Fail) -> Iterator[bytes]:
    dctx = zstandard.ZstdDecompressor()
    d = dctx.decompressobj()
    buf = f.read(_IN_CHUNK)
    pos = 0
    pending: list[bytes] = []
    size = 0
    while True:
        if pos >= len(buf):
            buf, pos = f.read(_IN_CHUNK), 0
            if not buf:
                raise fail.truncated()
        piece = buf[pos : pos + _ZSTD_SLICE]
        pos += len(piece)
        out: bytes = d.decompress(piece)
        if out:
            pending.append(out)
            size += len(out)
            if size >= CHUNK:
                yield b"".join(pending)
                pending, size = [], 0
        if d.eof:
            nxt = _next_stream(f, d.unused_data + buf[pos:], "zstd", fail)
            if nxt is None:
                if pending:
                    yield b"".join(pending)
                return
            d, buf, pos = dctx.decompressobj(), nxt, 0


def decoded(f: BinaryIO, kind: Compression, budget: Budget) -> Iterator[bytes]:
    """Decompressed chunks of ``f``; counts them against the budget's ratio limit."""
    fail = _Fail(budget.display, kind)
    if kind == "none":
        source: Iterator[bytes] = iter(lambda: f.read(CHUNK), b"")
    elif kind == "gzip":
        source = _gzip(f, fail)
    elif kind == "bzip2":
        source = _bz_xz(f, bz2.BZ2Decompressor, kind, fail)
    elif kind == "xz":
        source = _bz_xz(f, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), kind, fail)
    else:
        source = _zstd(f, fail)
    try:
        for chunk in source:
            budget.add_decoded(len(chunk))
            yield chunk
    except _CODEC_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real read error on the archive file, not corrupt data
        raise ArchiveError(budget.display, f"corrupt {kind} data: {exc}") from exc
