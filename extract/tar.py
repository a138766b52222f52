"""The tar reader: tarfile as a header parser only, over a forward-only stream.

tarfile never writes anything here (no extract/extractall, so none of its
filter-bypass CVEs apply: CVE-2007-4559, CVE-2025-4517, CVE-2025-4330 ...). It
parses headers (ustar, GNU long names and sparse maps, PAX overrides) from a
``_Stream`` that decodes the compressed archive as it goes; file data is read
by hutch straight from that stream into the blob writer. This module is the
seam where tarfile's exceptions become ArchiveError.

Where tarfile's reading differs from GNU tar's, GNU tar wins:
- a regular entry whose name ends in '/' is a directory (GNU tar extract.c:
  "BSD tar uses the convention that a slash suffix means a directory"); tarfile
  only does this for typeflag '\\0', not '0';
- tarfile silently stops at a corrupt header or a missing end marker; hutch
  checks the end of the archive itself (see ``check_end``).
"""

from __future__ import annotations

import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

from hutch.extract import Member
from hutch.extract.checks import Tree
from hutch.extract.decode import decoded
from hutch.extract.detect import BLOCK, Compression, describe, is_tar
from hutch.extract.writer import CHUNK, BlobWriter
from hutch.store.errors import ArchiveError

# Extended headers (pax 'x'/'g', GNU 'L'/'K', sparse maps) are read whole into
# memory by tarfile. Real ones are a few KiB (a 4 KiB path, some xattrs); this
# cap keeps a header that claims gigabytes from becoming an allocation.
_META_MAX = 1 << 20

# CVE-2024-6232: Python < 3.11.10 (Debian 12 ships 3.11.2) searches pax headers
# with `\d+ hdrcharset=`, which backtracks quadratically over a long run of
# digits (measured here: 64 KiB of digits, 4 s; 256 KiB, 66 s). No real pax
# value has a run this long (a 64-bit number has 20 digits), so such headers
# are refused before tarfile sees them.
_MAX_DIGIT_RUN = 32
_DIGIT_RUN = re.compile(rb"\d{%d}" % (_MAX_DIGIT_RUN + 1))
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
# tarfile turns an unparsable number into 0 without a word; GNU tar refuses it.
_PAX_NUMBERS = frozenset(
    {"size", "uid", "gid", "GNU.sparse.size", "GNU.sparse.realsize", "GNU.sparse.numblocks",
     "GNU.sparse.offset", "GNU.sparse.numbytes", "GNU.sparse.major", "GNU.sparse.minor"}
)  # fmt: skip
# GNU tar applies a global header's keywords to every later member, tarfile only
# to members that have their own extended header: the two would disagree.
_PAX_NOT_GLOBAL = ("path", "linkpath", "size", "GNU.sparse.")


def _pax_problem(body: bytes, *, is_global: bool) -> str | None:
    """Why a pax header body is refused, or None. Records are "LEN KEY=VALUE\n"."""
    if _DIGIT_RUN.search(body):
        return (
            f"pax header with a run of more than {_MAX_DIGIT_RUN} digits "
            "(refused: it makes Python < 3.11.10 hang, CVE-2024-6232)"
        )
    pos = 0
    while pos < len(body):
        space = body.find(b" ", pos, pos + 12)
        if space < 0 or not body[pos:space].isdigit():
            return "malformed pax header (bad record length)"
        length = int(body[pos:space])
        record = body[pos : pos + length]
        key, eq, value = record[space - pos + 1 : -1].partition(b"=")
        if length <= space - pos or len(record) != length or not record.endswith(b"\n"):
            return "malformed pax header (record length does not match)"
        if not eq or not key:
            return "malformed pax header (record without keyword)"
        name = key.decode("utf-8", "replace")
        if name in _PAX_NUMBERS and not value.isdigit():
            return f"pax header {name}={value[:40]!r} is not a number"
        if is_global and name.startswith(_PAX_NOT_GLOBAL):
            return f"pax global header sets {name!r} (readers disagree on what it applies to)"
        pos += length
    return None


_STDLIB_CHKSUMS: Callable[[bytes], tuple[int, int]] = tarfile.calc_chksums  # type: ignore[attr-defined]
_HIGH_BYTES = bytes(range(0x80, 0x100))


def calc_chksums(buf: bytes) -> tuple[int, int]:
    """tarfile.calc_chksums, exactly, ~17x faster: (unsigned, signed) header checksums.

    tarfile checks every header block with this module-level function, which
    unpacks 504 one-byte fields twice: 10 us per block, 60% of TarInfo.frombuf
    and a quarter of extracting the Django sdist (two blocks per member, pax and
    ustar). Here the sum is taken by zlib.adler32, whose low 16 bits are 1 plus
    the byte sum mod 65521, exact for pieces of at most 256 bytes (<= 65280);
    the signed sum differs by 256 per byte >= 0x80, and ASCII headers have none.
    """
    if type(buf) is not bytes or len(buf) < BLOCK:
        return _STDLIB_CHKSUMS(buf)
    a = zlib.adler32
    # 256 for the checksum field counted as spaces, less the three adler 1s.
    unsigned = (a(buf[:148]) & 0xFFFF) + (a(buf[156:412]) & 0xFFFF) + (a(buf[412:512]) & 0xFFFF)
    unsigned += 256 - 3
    if buf.isascii():
        return unsigned, unsigned
    head, tail = buf[:148], buf[156:512]
    high = 504 - len(head.translate(None, _HIGH_BYTES)) - len(tail.translate(None, _HIGH_BYTES))
    return unsigned, unsigned - 256 * high


def _install_chksums() -> None:
    # Swapped in only while it agrees with the running tarfile's own on blocks
    # of every kind: plain ASCII, all high bytes, and mixed.
    samples = [bytes(BLOCK), b"\xff" * BLOCK, bytes(range(256)) * 2, (b"ustar\x80 " * 74)[:BLOCK]]
    if all(calc_chksums(b) == _STDLIB_CHKSUMS(b) for b in samples):
        tarfile.calc_chksums = calc_chksums  # type: ignore[attr-defined]


_install_chksums()

_ENDS_EARLY = "truncated archive: member data ends early"
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE)
_SPECIAL = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}


class _Stream:
    """A read-only file over decoded chunks that can seek forward, peek and budget.

    tarfile in mode "r" needs read/seek/tell; it only ever seeks forward over
    a well-formed archive, so a backward seek means corrupt headers (a negative
    size) and is refused.
    """

    def __init__(self, chunks: Iterator[bytes], display: str) -> None:
        self._chunks = chunks
        self.display = display
        self._buf = b""
        self._off = 0
        self._pos = 0
        self.meta_budget: int | None = None
        self.last_header = b""  # the block the most recent header parse started on

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buf = self._buf[self._off :] + chunk if self._off < len(self._buf) else chunk
                self._off = 0
                return True
        return False

    def tell(self) -> int:
        return self._pos

    def peek(self, n: int) -> bytes:
        while len(self._buf) - self._off < n and self._fill():
            pass
        return self._buf[self._off : self._off + n]

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = 1 << 62
        if self.meta_budget is not None:
            self.meta_budget -= n
            if self.meta_budget < 0:
                raise ArchiveError(
                    self.display,
                    f"extended header larger than {_META_MAX} bytes (pax, long name or sparse map)",
                )
        avail = len(self._buf) - self._off
        if n <= avail:
            data = self._buf[self._off : self._off + n]
            self._off += n
        else:
            parts = [self._buf[self._off :]]
            got = avail
            self._buf, self._off = b"", 0
            while got < n and self._fill():
                take = self._buf[: n - got]
                parts.append(take)
                got += len(take)
                self._off = len(take)
            data = b"".join(parts)
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        if whence == 2 or pos < self._pos:
            raise ArchiveError(self.display, "corrupt tar header (it points backwards)")
        skip = pos - self._pos
        while skip:
            avail = len(self._buf) - self._off
            if avail == 0:
                if not self._fill():
                    break
                continue
            step = min(avail, skip)
            self._off += step
            self._pos += step
            skip -= step
        return self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


def _header_size(block: bytes) -> int:
    field = block[124:136]
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return -1


class _GuardedTarInfo(tarfile.TarInfo):
    """A TarInfo whose header parse first checks what tarfile is about to trust."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> _GuardedTarInfo:
        stream = tf.fileobj
        assert isinstance(stream, _Stream)
        block = stream.peek(BLOCK)
        stream.last_header = block
        if len(block) == BLOCK and block[156:157] in _PAX_TYPES:
            size = _header_size(block)
            if 0 <= size <= _META_MAX:
                body = stream.peek(BLOCK + size)[BLOCK:]
                problem = _pax_problem(body, is_global=block[156:157] == tarfile.XGLTYPE)
                if problem is not None:
                    raise ArchiveError(stream.display, problem)
        return super().fromtarfile(tf)


def _has_surrogates(text: str) -> bool:
    # tarfile decodes names as UTF-8 with surrogateescape: a lone surrogate
    # means the bytes were not UTF-8, and strict encoding fails on exactly that.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _TarUnpacker:
    def __init__(self, stream: _Stream, tf: tarfile.TarFile, writer: BlobWriter) -> None:
        self.stream = stream
        self.tf = tf
        self.writer = writer
        self.budget = writer.budget
        self.display = writer.budget.display
        self.tree = Tree(self.display)

    def refuse(self, member: str | None, reason: str) -> ArchiveError:
        return ArchiveError(self.display, reason, member=member)

    def entries(self) -> Iterator[tarfile.TarInfo]:
        while True:
            self.stream.meta_budget = _META_MAX
            ti = self.tf.next()
            self.stream.meta_budget = None
            if ti is None:
                return
            # tarfile keeps every TarInfo it has parsed; hutch needs none of them
            # back, so the list is dropped to keep memory flat on huge archives.
            self.tf.members.clear()  # type: ignore[attr-defined]
            yield ti

    def run(self) -> list[Member]:
        for ti in self.entries():
            self.entry(ti)
        self.check_end()
        return self.tree.members()

    def entry(self, ti: tarfile.TarInfo) -> None:
        raw = ti.name
        self.budget.add_entry(raw)
        if _has_surrogates(raw) or _has_surrogates(ti.linkname):
            raise self.refuse(raw, "name is not valid UTF-8")
        if ti.size < 0:
            raise self.refuse(raw, "negative size in header")
        # tarfile strips the slash from a pax path, but GNU tar decides on it.
        slash = raw.endswith("/") or ti.pax_headers.get("path", "").endswith("/")
        v7_dir = ti.type in _FILE_TYPES and slash
        if ti.isdir() or v7_dir:
            if ti.size and (v7_dir or ti.type == tarfile.DIRTYPE):
                # GNU tar reads no data for a directory, so it would parse this
                # data as headers ("Skipping to next header"); tarfile skips it.
                raise self.refuse(raw, "directory entry carries data")
            rel = self.tree.name(raw)
            if rel is not None:
                self.tree.add_dir(raw, rel)
            return
        rel = self.tree.name(raw)
        if rel is None:
            raise self.refuse(raw, "entry names the extraction root itself")
        if ti.type in _FILE_TYPES:
            self.tree.claim(raw, rel, "file")
            executable = bool(ti.mode & 0o111)
            if ti.sparse is None and ti.size <= CHUNK:
                # Most members are small: one read from the decoded stream and one
                # write, instead of a read loop through a closure.
                self.stream.seek(ti.offset_data)
                data = self.stream.read(ti.size)
                if len(data) != ti.size:
                    raise self.refuse(raw, _ENDS_EARLY)
                blob = self.writer.write_bytes(raw, data, executable=executable)
                self.tree.add_file(rel, blob, executable=executable)
                return
            read, size = self.data(ti)
            blob = self.writer.write(raw, read, executable=executable)
            if blob.size != size:
                raise self.refuse(raw, f"size {blob.size} differs from the header's {size}")
            self.tree.add_file(rel, blob, executable=executable)
        elif ti.issym():
            self.no_data(ti)
            self.tree.add_symlink(raw, rel, ti.linkname)
        elif ti.islnk():
            self.no_data(ti)
            self.tree.add_hardlink(raw, rel, ti.linkname)
        elif ti.type in _SPECIAL:
            raise self.refuse(raw, f"{_SPECIAL[ti.type]} entries are not allowed")
        else:
            # GNU tar extracts unknown types as regular files with a warning;
            # hutch refuses rather than guess what the writer meant.
            raise self.refuse(raw, f"unsupported entry type {ti.type!r}")

    def no_data(self, ti: tarfile.TarInfo) -> None:
        if ti.size:
            # No data follows a link header; GNU tar would read this as headers.
            raise self.refuse(ti.name, "link entry carries data")

    def sparse_end(self, ti: tarfile.TarInfo, sparse: list[tuple[int, int]]) -> int:
        """Where GNU tar's copy of a sparse file ends: the end of its last map entry.

        GNU tar writes each data region and extends the file only for a final
        zero-length entry (sparse.c: "Last block of the file is a hole"); the
        header's real size is not used. tarfile pads to the real size instead,
        and lists the empty slots of an old GNU header as (0, 0) entries.
        """
        end = 0
        for offset, numbytes in sparse:
            if (offset, numbytes) == (0, 0):
                continue
            if offset < end or numbytes < 0:
                raise self.refuse(ti.name, "corrupt sparse map (regions overlap or go back)")
            end = offset + numbytes
        if end > ti.size:
            raise self.refuse(ti.name, f"corrupt sparse map (ends at {end}, past size {ti.size})")
        return end

    def data(self, ti: tarfile.TarInfo) -> tuple[Callable[[int], bytes], int]:
        """A reader of the member's content, and how many bytes it must yield."""
        if ti.sparse is not None:
            # tarfile maps GNU and PAX (0.0, 0.1, 1.0) sparse files; holes read as zeros.
            # typeshed says bytes; tarfile stores (offset, numbytes) pairs.
            sparse = cast("list[tuple[int, int]]", ti.sparse)
            size = self.sparse_end(ti, sparse)
            ef = self.tf.extractfile(ti)
            assert ef is not None
            source: Callable[[int], bytes] = ef.read
        else:
            self.stream.seek(ti.offset_data)
            size = ti.size
            source = self.stream.read
        left = size

        def read(n: int) -> bytes:
            nonlocal left
            if left <= 0:
                return b""
            data = source(min(n, left))
            if not data:
                raise self.refuse(ti.name, _ENDS_EARLY)
            left -= len(data)
            return data

        return read, size

    def check_end(self) -> None:
        """The archive must end with a zero block and nothing but zeros after it.

        tarfile stops without error at a corrupt header, at a header cut short,
        or at a clean end of file with no end marker; all three mean a damaged
        or truncated archive. GNU tar accepts a lone zero block (with a warning),
        so one is enough; non-zero bytes after it are refused (GNU tar ignores
        them, but a second parser might not).
        """
        block = self.stream.last_header
        if len(block) < BLOCK:
            raise self.refuse(None, "truncated archive: no end-of-archive marker")
        if block.count(0) != BLOCK:
            raise self.refuse(
                None, f"corrupt tar header or trailing garbage at offset {self.tf.offset}"
            )
        self.stream.seek(self.tf.offset + BLOCK)
        while data := self.stream.read(CHUNK):
            if data.count(0) != len(data):
                raise self.refuse(None, "trailing garbage after the end of the tar archive")


def unpack_tar(f: BinaryIO, kind: Compression, writer: BlobWriter) -> list[Member]:
    """Extract a tar stream (``kind`` says how it is compressed) through ``writer``."""
    budget = writer.budget
    stream = _Stream(decoded(f, kind, budget), budget.display)
    first = stream.peek(BLOCK)
    if not is_tar(first):
        # The caller checked an uncompressed tar's magic; this is what was inside
        # a compressed stream: a gzipped HTML page, a .gz that is not a tarball.
        raise ArchiveError(
            budget.display, f"no tar archive inside the {kind} stream: it holds {describe(first)}"
        )
    try:
        stream.meta_budget = _META_MAX  # the constructor parses the first header
        tf = tarfile.TarFile(
            fileobj=stream,  # type: ignore[arg-type]
            mode="r",
            tarinfo=_GuardedTarInfo,
            encoding="utf-8",
            errors="surrogateescape",
        )
        with tf:
            return _TarUnpacker(stream, tf, writer).run()
    except (tarfile.TarError, EOFError, UnicodeError, ValueError, RecursionError) as exc:
        raise ArchiveError(budget.display, f"corrupt tar archive: {exc}") from exc
