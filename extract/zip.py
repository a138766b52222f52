"""The zip (and wheel) reader: zipfile parses, hutch checks and writes.

zipfile trusts the central directory and reads data through it, so on its own
it accepts archives other tools read differently. Before any member is written
hutch checks every entry's local header against its central record (name,
method, sizes, CRC), that no two entries' byte ranges overlap (the overlapping
"non-recursive" zip bomb, Fifield 2019, fixed in CPython only from 3.11.8 as
gh-109858 / CVE-2024-0450), and that the declared sizes fit the limits.

zipfile parses the central directory; the data of stored and deflate members
(every wheel's) hutch then reads itself, from the byte range it has checked,
with one pread and one inflate call (extract/inflate.py) for a member of up to
CHUNK bytes and in CHUNK steps for a bigger one. bzip2 and lzma members go
through zipfile's own reader. The declared sizes are an upper bound, not a trusted value: no member
writes more than ``file_size`` bytes, and one that holds more or less, whose
deflate stream does not end, or that fails its CRC is refused. This module is
the seam where zipfile's exceptions become ArchiveError.
"""

from __future__ import annotations

import copy
import itertools
import lzma
import os
import stat
import struct
import zipfile
from collections.abc import Sequence
from typing import BinaryIO, NamedTuple

from hutch.extract import Member, inflate
from hutch.extract.checks import Tree
from hutch.extract.writer import CHUNK, Blob, BlobWriter
from hutch.store import parallel
from hutch.store.errors import ArchiveError

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_EOCD = b"PK\x05\x06"
_DESCRIPTOR = b"PK\x07\x08"
_MAX32 = 0xFFFFFFFF
_SUPPORTED = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_UNIX = 3  # create_system of zips made on Unix; only then is external_attr a mode
_FLAG_ENCRYPTED = 0x1
_FLAG_DESCRIPTOR = 0x8
_FLAG_PATCHED = 0x20
_FLAG_STRONG = 0x40
_FLAG_UTF8 = 0x800
# Members hutch inflates itself (see _ZipUnpacker.write); bzip2 and lzma, which
# no wheel uses, go through zipfile's reader.
_DIRECT = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# What writing a member costs, for cutting an archive into parts of equal cost:
# ~100 µs per member (mostly creating the blob) and ~500 bytes per µs (inflate,
# CRC, blake3, write). Archives that cost less than ~0.1 s are written by this
# process alone (a fork and its reaping cost ~2 ms).
_MEMBER_US = 100
_BYTES_PER_US = 500
_PARTS_FROM_US = 100_000

# What zipfile and its codecs raise for corrupt input (RuntimeError: encrypted;
# NotImplementedError: unknown method). OSError is sorted out by errno.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    inflate.error,
    lzma.LZMAError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
)


class _Plan(NamedTuple):
    info: zipfile.ZipInfo
    raw: str
    rel: str
    executable: bool
    start: int  # where the member's compressed bytes begin, after its local header


def _name(info: zipfile.ZipInfo) -> tuple[str, bytes]:
    """The entry's name, and its raw bytes as stored in the central directory.

    Without the UTF-8 flag (bit 11) APPNOTE says cp437, which is how zipfile
    decodes it; but zips made on Unix by Info-ZIP and others store UTF-8 bytes
    without the flag, and unzip writes those bytes as they are. So bytes that
    are valid UTF-8 are read as UTF-8, and only the rest as cp437. The raw name
    is kept whole (zipfile's ``filename`` is cut at the first NUL).
    """
    name = info.orig_filename
    if name.isascii():
        return name, name.encode("ascii")  # the same bytes in UTF-8 and cp437
    if info.flag_bits & _FLAG_UTF8:
        return name, name.encode("utf-8")
    raw = name.encode("cp437")
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError:
        return name, raw


def _zip64_sizes(extra: bytes) -> tuple[int | None, int | None]:
    """(uncompressed, compressed) from a local header's ZIP64 extra field, if any."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 1:
            usize = int.from_bytes(body[0:8], "little") if len(body) >= 8 else None
            csize = int.from_bytes(body[8:16], "little") if len(body) >= 16 else None
            return usize, csize
        pos += 4 + size
    return None, None


class _ZipUnpacker:
    def __init__(self, f: BinaryIO, zf: zipfile.ZipFile, writer: BlobWriter, size: int) -> None:
        self.f = f
        self.fd = f.fileno()
        self.zf = zf
        self.writer = writer
        self.budget = writer.budget
        self.display = writer.budget.display
        self.size = size
        self.tree = Tree(self.display)

    def refuse(self, member: str | None, reason: str) -> ArchiveError:
        return ArchiveError(self.display, reason, member=member)

    def check_end(self) -> None:
        # zipfile searches the last 64 KiB for the end record, so bytes after it
        # are silently ignored; other readers may find a different directory.
        tail = 22 + len(self.zf.comment)
        self.f.seek(self.size - tail)
        if self.f.read(4) != _EOCD:
            raise self.refuse(None, "trailing data after the zip end-of-central-directory record")

    def local_range(self, info: zipfile.ZipInfo, raw: str, central: bytes) -> tuple[int, int]:
        """Check the local header against the central record; return where its data starts, ends."""
        offset = info.header_offset
        if not 0 <= offset <= self.size - _LOCAL.size:
            raise self.refuse(raw, "central directory points outside the archive")
        # One read for the header and the name it must hold; the extra field is
        # read only when ZIP64 sizes are needed from it.
        head = os.pread(self.fd, _LOCAL.size + len(central), offset)
        if len(head) < _LOCAL.size or head[:4] != b"PK\x03\x04":
            raise self.refuse(raw, "central directory points at no local header")
        _sig, _ver, flags, method, _t, _d, crc, csize, usize, nlen, xlen = _LOCAL.unpack_from(head)
        start = offset + _LOCAL.size + nlen + xlen
        if nlen != len(central) or head[_LOCAL.size :] != central:
            name = os.pread(self.fd, nlen, offset + _LOCAL.size)
            raise self.refuse(raw, f"local header names {name!r}, central directory {central!r}")
        if (flags ^ info.flag_bits) & _FLAG_UTF8 and not central.isascii():
            # zipfile decodes each copy of the name by its own flag and refuses
            # a difference; the same bytes then read as different names.
            raise self.refuse(raw, "local header and central directory decode the name differently")
        if method != info.compress_type:
            raise self.refuse(
                raw, f"local header method {method} differs from central {info.compress_type}"
            )
        if flags & _FLAG_ENCRYPTED:
            raise self.refuse(raw, "encrypted entries are not supported")
        want = (info.CRC, info.compress_size, info.file_size)
        end: int = start + info.compress_size
        if flags & _FLAG_DESCRIPTOR:
            # Streaming writers leave the local fields zero and put crc and sizes
            # in a descriptor after the data; streaming readers trust it instead.
            return start, self.descriptor_end(raw, end, want)
        if _MAX32 in (csize, usize):
            u64, c64 = _zip64_sizes(os.pread(self.fd, xlen, start - xlen))
            usize = u64 if usize == _MAX32 and u64 is not None else usize
            csize = c64 if csize == _MAX32 and c64 is not None else csize
        if (crc, csize, usize) != want:
            raise self.refuse(
                raw,
                "local header disagrees with the central directory "
                f"(crc/compressed/size {crc:08x}/{csize}/{usize} vs "
                f"{info.CRC:08x}/{info.compress_size}/{info.file_size})",
            )
        return start, end

    def descriptor_end(self, raw: str, start: int, want: tuple[int, int, int]) -> int:
        """Check a data descriptor (optional signature; 4- or 8-byte sizes); return its end."""
        self.f.seek(start)
        data = self.f.read(24)
        body, base = (data[4:], start + 4) if data[:4] == _DESCRIPTOR else (data, start)
        for width, fmt in ((4, "<III"), (8, "<IQQ")):
            size = 4 + 2 * width
            if len(body) >= size and struct.unpack(fmt, body[:size]) == want:
                return base + size
        raise self.refuse(raw, "data descriptor disagrees with the central directory")

    def plan(self) -> list[_Plan]:
        infos = self.zf.infolist()
        ranges: list[tuple[int, int, str]] = []
        declared = 0
        plans: list[_Plan] = []
        for info in infos:
            raw, central = _name(info)
            self.budget.add_entry(raw)
            if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG):
                raise self.refuse(raw, "encrypted entries are not supported")
            if info.flag_bits & _FLAG_PATCHED:
                raise self.refuse(raw, "compressed patched data (flag bit 5) is not supported")
            if info.compress_type not in _SUPPORTED:
                raise self.refuse(raw, f"unsupported compression method {info.compress_type}")
            mode = info.external_attr >> 16 if info.create_system == _UNIX else 0
            ftype = stat.S_IFMT(mode)
            if ftype == stat.S_IFLNK:
                raise self.refuse(raw, "zip symlinks are not allowed (their target is file data)")
            if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise self.refuse(raw, "device, FIFO or socket entries are not allowed")
            start, end = self.local_range(info, raw, central)
            ranges.append((info.header_offset, end, raw))
            rel = self.tree.name(raw)
            if raw.endswith("/"):
                if info.file_size:
                    raise self.refuse(raw, "directory entry carries data")
                if rel is not None:
                    self.tree.add_dir(raw, rel)
                continue
            if rel is None:
                raise self.refuse(raw, "entry names the extraction root itself")
            self.tree.claim(raw, rel, "file")
            declared += info.file_size
            plans.append(_Plan(info, raw, rel, bool(mode & 0o111), start))
        self.check_overlaps(ranges)
        # Declared sizes bound what zipfile can return, so a zip that cannot fit
        # is refused before a byte is written.
        self.budget.check_unpacked(declared, "declared unpacked size", None)
        self.budget.check_ratio(declared, "declared unpacked size", None)
        return plans

    def check_overlaps(self, ranges: list[tuple[int, int, str]]) -> None:
        ranges.sort()
        for (_s1, end1, name1), (start2, _e2, name2) in itertools.pairwise(ranges):
            if start2 < end1:
                raise self.refuse(
                    name2, f"entry overlaps {name1!r} (overlapping entries: a zip bomb)"
                )
        if ranges and ranges[-1][1] > self.zf.start_dir:
            raise self.refuse(ranges[-1][2], "entry data overlaps the central directory")

    def write(self, p: _Plan) -> Blob:
        info = p.info
        if info.compress_type not in _DIRECT:
            blob = self.write_via_zipfile(p)
        elif info.compress_size <= CHUNK and info.file_size <= CHUNK:
            blob = self.write_small(p)
        else:
            member = _MemberReader(self, p)
            blob = self.writer.write(p.raw, member.read, executable=p.executable)
            member.check_crc()
        if blob.size != info.file_size:
            raise self.size_error(p, blob.size)
        return blob

    def size_error(self, p: _Plan, size: int) -> ArchiveError:
        return self.refuse(p.raw, f"size {size} differs from the declared {p.info.file_size}")

    def overlong_error(self, p: _Plan) -> ArchiveError:
        # zipfile cuts such a member off at its declared size; unzip writes it all.
        return self.refuse(
            p.raw, f"size differs from the declared {p.info.file_size} (its data holds more)"
        )

    def crc_error(self, p: _Plan, crc: int) -> ArchiveError:
        return self.refuse(
            p.raw, f"corrupt member: CRC-32 {crc:08x} of its data, {p.info.CRC:08x} declared"
        )

    def pread(self, p: _Plan, n: int, offset: int) -> bytes:
        data = os.pread(self.fd, n, offset)
        if len(data) != n:
            # plan() put every member's range before the central directory, so
            # only an archive cut short since then gets here.
            raise self.refuse(p.raw, "truncated archive: it ends inside the member's data")
        return data

    def write_small(self, p: _Plan) -> Blob:
        """A member of at most CHUNK bytes, packed and unpacked: in memory, in one go.

        Read with one pread and inflated with one call, instead of through
        zipfile.open() and ZipExtFile (a header re-read and ~10 Python calls per
        member). With the blob writer's one write and one hash, the four
        benchmark wheels (8004 files) went from 0.86 s to 0.72 s on tmpfs
        (tests/bench/bench_extract.py, best of 6 alternating runs).
        """
        info = p.info
        data = self.pread(p, info.compress_size, p.start)
        if info.compress_type == zipfile.ZIP_DEFLATED:
            d = inflate.raw()
            try:
                # One byte of room past the declared size shows a member that holds more.
                data = d.decompress(data, info.file_size + 1)
            except inflate.error as exc:
                raise self.refuse(p.raw, f"corrupt member: {exc}") from exc
            if len(data) > info.file_size:
                raise self.overlong_error(p)
            if not d.eof:
                raise self.refuse(p.raw, _ENDS_EARLY)
        if len(data) != info.file_size:
            raise self.size_error(p, len(data))
        crc = inflate.crc32(data)
        if crc != info.CRC:
            raise self.crc_error(p, crc)
        return self.writer.write_bytes(p.raw, data, executable=p.executable)

    def write_via_zipfile(self, p: _Plan) -> Blob:
        try:
            with self.zf.open(p.info) as src:
                return self.writer.write(p.raw, src.read, executable=p.executable)
        except _ZIP_ERRORS as exc:
            raise self.refuse(p.raw, f"corrupt member: {exc}") from exc
        except OSError as exc:
            if exc.errno is not None:
                raise  # reading the archive file failed: not the archive's fault
            # bz2 and lzma report corrupt data as an OSError without errno.
            raise self.refuse(p.raw, f"corrupt member: {exc}") from exc

    def run(self) -> list[Member]:
        plans = self.plan()
        self.check_end()
        for p, blob in zip(plans, self.write_all(plans), strict=True):
            self.tree.add_file(p.rel, blob, executable=p.executable)
        return self.tree.members()

    def write_all(self, plans: list[_Plan]) -> list[Blob]:
        """Every member's blob, in plan order; a big archive in parts, on every core.

        Inflating, hashing and creating a few thousand blobs is Python under the
        GIL (~100 µs a member, the create mostly), so the parts are forked
        processes (hutch.store.parallel). Each part writes through its own view
        of the writer (BlobWriter.view): its own directory, blob names that
        follow the plan index, and its own count of bytes, added up here. Only members
        read with pread (stored and deflate: every wheel's) go to parts: zipfile's
        own reader moves the file offset that a forked child would share.
        """
        cost = [_MEMBER_US + p.info.file_size / _BYTES_PER_US for p in plans]
        count = parallel.width()
        # On threads (another thread alive: forked() would not fork), parts
        # would only hand the GIL around (§7, measured and not adopted).
        if (
            not parallel.can_fork()
            or sum(cost) < _PARTS_FROM_US
            or any(p.info.compress_type not in _DIRECT for p in plans)
        ):
            return [self.write(p) for p in plans]
        if count == 1:
            # One of several adds (a worker), or HUTCH_THREADS=1: in order here,
            # and in a worker the back half of what is left goes to a part
            # whenever a finished worker lends its slot.
            mine, theirs = parallel.spread(
                lambda r: [self.write(plans[i]) for i in r],
                lambda r: self.part(r.start).write_part(plans, r),
                len(plans),
                cost,
                least=_PARTS_FROM_US / 2,
            )
            return self.merge([blob for blobs in mine for blob in blobs], theirs)
        parts = parallel.split_weighted(range(len(plans)), count, cost)
        done = parallel.forked(
            lambda part: self.part(part[0]).write_part(plans, part), parts, here=True
        )
        self.writer.skip(len(plans))
        return self.merge([], done)

    def merge(self, blobs: list[Blob], parts: list[tuple[list[Blob], int]]) -> list[Blob]:
        """``blobs`` and then each part's, with the parts' bytes added to this budget."""
        for _, written in parts:
            self.budget.written += written
        # Each part held to the limits alone, and plan() checked the declared
        # total; the sum is checked once more, in case those ever disagree.
        self.budget.check_unpacked(self.budget.written, "unpacked size", None)
        self.budget.check_ratio(self.budget.written, "unpacked size", None)
        return blobs + [blob for part, _ in parts for blob in part]

    def part(self, first: int) -> _ZipUnpacker:
        """This unpacker with a writer view whose blob names start after plan index ``first``."""
        part = copy.copy(self)
        part.writer = self.writer.view(first)
        part.budget = part.writer.budget
        return part

    def write_part(self, plans: list[_Plan], indices: Sequence[int]) -> tuple[list[Blob], int]:
        """The blobs of ``plans[indices]``, and the bytes this part wrote."""
        before = self.budget.written
        with self.writer:
            blobs = [self.write(plans[i]) for i in indices]
        return blobs, self.budget.written - before


_ENDS_EARLY = "truncated member: its deflate data ends before the end of the stream"


class _MemberReader:
    """A stored or deflated member larger than CHUNK, read from the archive in steps.

    Memory stays bounded whatever the member's size or ratio: at most CHUNK
    compressed bytes are read at a time and no inflate call returns more than the
    writer asks for. The CRC is computed as the bytes go by, and more bytes
    than declared are refused at once.
    """

    def __init__(self, unpacker: _ZipUnpacker, p: _Plan) -> None:
        self.unpacker = unpacker
        self.p = p
        self.pos = p.start
        self.left = p.info.compress_size  # compressed bytes not yet read
        self.room = p.info.file_size  # bytes the member may still produce
        self.crc = 0
        deflated = p.info.compress_type == zipfile.ZIP_DEFLATED
        self.d = inflate.raw() if deflated else None
        self.tail = b""

    def take(self, n: int) -> bytes:
        data = self.unpacker.pread(self.p, min(n, self.left), self.pos)
        self.pos += len(data)
        self.left -= len(data)
        return data

    def read(self, n: int) -> bytes:
        if self.d is None:
            if not self.left:
                return b""
            data = self.take(n)
        else:
            data = b""
            while not data:
                if self.d.eof:
                    return b""  # zipfile too ignores bytes after the end of the stream
                if not self.tail:
                    if not self.left:
                        raise self.unpacker.refuse(self.p.raw, _ENDS_EARLY)
                    self.tail = self.take(CHUNK)
                try:
                    data = self.d.decompress(self.tail, n)
                except inflate.error as exc:
                    raise self.unpacker.refuse(self.p.raw, f"corrupt member: {exc}") from exc
                self.tail = self.d.unconsumed_tail
        self.room -= len(data)
        if self.room < 0:
            raise self.unpacker.overlong_error(self.p)
        self.crc = inflate.crc32(data, self.crc)
        if not self.room:
            # Checked here, inside the writer's loop, so the blob is unlinked.
            self.check_crc()
        return data

    def check_crc(self) -> None:
        """Once the declared size is reached; also after the writer, for a member of no bytes."""
        if not self.room and self.crc != self.p.info.CRC:
            raise self.unpacker.crc_error(self.p, self.crc)


def unpack_zip(f: BinaryIO, size: int, writer: BlobWriter) -> list[Member]:
    """Extract the zip in ``f`` (``size`` bytes) through ``writer``."""
    display = writer.budget.display
    try:
        zf = zipfile.ZipFile(f)
    except (*_ZIP_ERRORS, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise ArchiveError(display, f"corrupt zip archive: {exc}") from exc
    with zf:
        try:
            return _ZipUnpacker(f, zf, writer, size).run()
        except _ZIP_ERRORS as exc:
            raise ArchiveError(display, f"corrupt zip archive: {exc}") from exc
