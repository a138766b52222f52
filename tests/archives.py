"""A corpus of odd and hostile archives, built in code (spec/extract.md §Corpus).

Valid archives come with the tree they must extract to (the tree GNU tar or
unzip produces); hostile ones with the words their refusal reason must contain.
tarfile and zipfile write the ordinary ones; raw header and byte surgery makes
the ones no well-behaved writer would (v7 directories, hand-made sparse maps,
zips whose local headers lie).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import zstandard
from hutch.extract import Limits

# -- expected trees ---------------------------------------------------------


@dataclass(frozen=True)
class Node:
    kind: str  # "file", "dir", "symlink"
    content: bytes = b""
    executable: bool = False
    target: str | None = None


def F(content: bytes = b"", *, x: bool = False) -> Node:  # noqa: N802 - reads like a tree
    return Node("file", content, x)


def S(target: str) -> Node:  # noqa: N802
    return Node("symlink", target=target)


D = Node("dir")
Tree = dict[str, Node]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]
    fmt: str  # "tar" or "zip": which reference tool to compare with
    tree: Tree | None = None  # the expected tree for valid archives
    reason: str | None = None  # words the refusal reason contains
    limits: Limits = field(default_factory=Limits)
    compare: bool = True  # compare with GNU tar / unzip (valid cases only)


# -- tar writing helpers ------------------------------------------------------

BLOCK = 512


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


END = bytes(2 * BLOCK)


def header(
    name: bytes | str,
    *,
    typ: bytes = b"0",
    size: int = 0,
    link: bytes | str = b"",
    mode: int = 0o644,
    magic: bytes = b"ustar\x0000",
    size_field: bytes | None = None,
    extra: dict[int, bytes] | None = None,
) -> bytes:
    """One raw tar header block, checksum included; ``extra`` patches offsets."""
    name = name.encode() if isinstance(name, str) else name
    link = link.encode() if isinstance(link, str) else link
    b = bytearray(BLOCK)
    b[0 : len(name)] = name
    b[100:108] = b"%07o\0" % mode
    b[108:116] = b"0001750\0"
    b[116:124] = b"0001750\0"
    b[124:136] = size_field if size_field is not None else b"%011o\0" % size
    b[136:148] = b"14540000000\0"
    b[156:157] = typ
    b[157 : 157 + len(link)] = link
    b[257:265] = magic
    for offset, value in (extra or {}).items():
        b[offset : offset + len(value)] = value
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


def member(name: bytes | str, data: bytes = b"", **kw: object) -> bytes:
    return header(name, size=len(data), **kw) + pad(data)  # type: ignore[arg-type]


def pax_records(records: dict[str, str] | list[tuple[str, str]]) -> bytes:
    out = b""
    items = records.items() if isinstance(records, dict) else records
    for key, value in items:
        body = f" {key}={value}\n".encode()
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n += 1
        out += str(n).encode() + body
    return out


def pax(records: dict[str, str] | list[tuple[str, str]] | bytes, *, typ: bytes = b"x") -> bytes:
    body = records if isinstance(records, bytes) else pax_records(records)
    return header("PaxHeaders/x", typ=typ, size=len(body)) + pad(body)


def gnu_long(name: str, typ: bytes = b"L") -> bytes:
    data = name.encode() + b"\0"
    return header("././@LongLink", typ=typ, size=len(data), magic=b"ustar  \0") + pad(data)


@dataclass
class T:
    """An entry for tarfile to write."""

    name: str
    data: bytes | None = b""  # None for non-files
    kind: bytes = tarfile.REGTYPE
    link: str = ""
    mode: int = 0o644


def tar(entries: list[T], fmt: int = tarfile.PAX_FORMAT, *, end: bool = True) -> bytes:
    """tarfile's archive of ``entries``; without ``end``, just the entries (to splice)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = e.kind
            ti.mode = e.mode
            ti.linkname = e.link
            ti.mtime = 1_700_000_000
            ti.uname = ti.gname = "hutch"
            if e.kind == tarfile.REGTYPE and e.data is not None:
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
        body = tf.offset
    data = buf.getvalue()
    return data if end else data[:body]


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def bz(data: bytes) -> bytes:
    return bz2.compress(data)


def xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ)


def zst(data: bytes) -> bytes:
    return bytes(zstandard.ZstdCompressor().compress(data))


# -- zip writing helpers ------------------------------------------------------


@dataclass
class Z:
    name: str
    data: bytes = b""
    mode: int | None = 0o100644  # None: a zip made on MS-DOS (no Unix mode)
    method: int = zipfile.ZIP_DEFLATED


def zipped(entries: list[Z], *, streamed: bool = False, zip64: bool = False) -> bytes:
    """A zip written by zipfile; ``streamed`` forces data descriptors (bit 3)."""

    class _Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = io.BytesIO()

        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            return self.buf.write(b)  # type: ignore[arg-type]

    sink: io.BytesIO | _Unseekable = _Unseekable() if streamed else io.BytesIO()
    with zipfile.ZipFile(sink, "w") as zf:
        for e in entries:
            zi = zipfile.ZipInfo(e.name, date_time=(2024, 1, 1, 0, 0, 0))
            zi.compress_type = e.method
            if e.mode is not None:
                zi.create_system = 3
                zi.external_attr = e.mode << 16
            else:
                zi.create_system = 0
                zi.external_attr = 0x10 if e.name.endswith("/") else 0
            with zf.open(zi, "w", force_zip64=zip64) as w:
                w.write(e.data)
    return sink.buf.getvalue() if isinstance(sink, _Unseekable) else sink.getvalue()


_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")


@dataclass
class RawEntry:
    """One hand-made zip entry; every field the hostile cases lie about."""

    name: bytes
    data: bytes
    method: int = 0
    crc: int | None = None
    usize: int | None = None
    csize: int | None = None
    local_name: bytes | None = None
    local_method: int | None = None
    local_usize: int | None = None
    mode: int = 0o100644
    flags: int = 0
    offset: int | None = None  # central record's header offset, if it lies


def raw_zip(entries: list[RawEntry], *, tail: bytes = b"", prefix_locals: bytes = b"") -> bytes:
    out = bytearray(prefix_locals)
    centrals = b""
    for e in entries:
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        payload = e.data
        if e.method == zipfile.ZIP_DEFLATED:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = c.compress(e.data) + c.flush()
        usize = len(e.data) if e.usize is None else e.usize
        csize = len(payload) if e.csize is None else e.csize
        offset = len(out)
        lname = e.name if e.local_name is None else e.local_name
        lmethod = e.method if e.local_method is None else e.local_method
        lusize = usize if e.local_usize is None else e.local_usize
        out += _LOCAL.pack(
            b"PK\x03\x04", 20, e.flags, lmethod, 0, 0x5821, crc, csize, lusize, len(lname), 0
        )
        out += lname + payload
        centrals += (
            _CENTRAL.pack(
                b"PK\x01\x02",
                0x031E,
                20,
                e.flags,
                e.method,
                0,
                0x5821,
                crc,
                csize,
                usize,
                len(e.name),
                0,
                0,
                0,
                0,
                e.mode << 16,
                offset if e.offset is None else e.offset,
            )
            + e.name
        )
    start = len(out)
    out += centrals
    out += struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(centrals), start, 0
    )
    return bytes(out) + tail


def overlapping_zip() -> bytes:
    """Fifield's quoted overlap: entry "a" stores, as its data, entry "b" whole."""
    inner_data = b"kernel" * 100
    inner = (
        _LOCAL.pack(
            b"PK\x03\x04",
            20,
            0,
            0,
            0,
            0x5821,
            zlib.crc32(inner_data),
            len(inner_data),
            len(inner_data),
            1,
            0,
        )
        + b"b"
        + inner_data
    )
    outer_hdr = _LOCAL.pack(
        b"PK\x03\x04", 20, 0, 0, 0, 0x5821, zlib.crc32(inner), len(inner), len(inner), 1, 0
    )
    body = outer_hdr + b"a" + inner
    centrals = b""
    for name, off, data in ((b"a", 0, inner), (b"b", len(outer_hdr) + 1, inner_data)):
        centrals += (
            _CENTRAL.pack(
                b"PK\x01\x02",
                0x031E,
                20,
                0,
                0,
                0,
                0x5821,
                zlib.crc32(data),
                len(data),
                len(data),
                1,
                0,
                0,
                0,
                0,
                0o100644 << 16,
                off,
            )
            + name
        )
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 2, 2, len(centrals), len(body), 0)
    return body + centrals + eocd


# -- sparse archives, by hand (tarfile cannot write them) --------------------

SPARSE_DATA = [(0, b"A" * 512), (8192, b"B" * 700)]
SPARSE_SIZE = 16384  # ends in a hole
SPARSE_CONTENT = b"A" * 512 + bytes(8192 - 512) + b"B" * 700 + bytes(SPARSE_SIZE - 8192 - 700)
# GNU tar only extends a file past its last data region for a final zero-length
# map entry; without one, the copy ends where the data does, whatever the size.
SPARSE_UNTERMINATED = SPARSE_CONTENT[: 8192 + 700]


def _sparse_stored() -> bytes:
    return b"".join(data for _, data in SPARSE_DATA)


def sparse_gnu() -> bytes:
    """GNU 'S' (oldgnu) sparse header: map in the header, realsize at 483."""
    extra: dict[int, bytes] = {}
    entries = [*SPARSE_DATA, (SPARSE_SIZE, b"")]  # how GNU tar records a trailing hole
    for i, (off, data) in enumerate(entries):
        extra[386 + 24 * i] = b"%011o\0" % off
        extra[386 + 24 * i + 12] = b"%011o\0" % len(data)
    extra[483] = b"%011o\0" % SPARSE_SIZE
    stored = _sparse_stored()
    return (
        header("sparse-gnu", typ=b"S", size=len(stored), magic=b"ustar  \0", extra=extra)
        + pad(stored)
        + END
    )


def sparse_pax00() -> bytes:
    records: list[tuple[str, str]] = [
        ("GNU.sparse.size", str(SPARSE_SIZE)),
        ("GNU.sparse.numblocks", str(len(SPARSE_DATA) + 1)),
    ]
    for off, data in [*SPARSE_DATA, (SPARSE_SIZE, b"")]:
        records += [("GNU.sparse.offset", str(off)), ("GNU.sparse.numbytes", str(len(data)))]
    stored = _sparse_stored()
    return pax(records) + member("sparse-00", stored) + END


def sparse_pax01() -> bytes:
    regions = [*SPARSE_DATA, (SPARSE_SIZE, b"")]
    smap = ",".join(f"{off},{len(data)}" for off, data in regions)
    records = {
        "GNU.sparse.size": str(SPARSE_SIZE),
        "GNU.sparse.numblocks": str(len(regions)),
        "GNU.sparse.map": smap,
        "GNU.sparse.name": "sparse-01",
    }
    return pax(records) + member("GNUSparseFile.0/sparse-01", _sparse_stored()) + END


def sparse_pax10() -> bytes:
    records = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "sparse-10",
        "GNU.sparse.realsize": str(SPARSE_SIZE),
    }
    smap = f"{len(SPARSE_DATA)}\n" + "".join(f"{o}\n{len(d)}\n" for o, d in SPARSE_DATA)
    body = pad(smap.encode()) + _sparse_stored()
    return pax(records) + member("GNUSparseFile.0/sparse-10", body) + END


# -- the corpus -------------------------------------------------------------

HELLO = b"hello, world\n"
BASIC = [
    T("pkg/", None, tarfile.DIRTYPE, mode=0o755),
    T("pkg/README", HELLO),
    T("pkg/empty", b""),
    T("pkg/bin/", None, tarfile.DIRTYPE, mode=0o755),
    T("pkg/bin/run", b"#!/bin/sh\necho hi\n", mode=0o755),
    T("pkg/link", None, tarfile.SYMTYPE, link="README"),
]
BASIC_TREE: Tree = {
    "pkg": D,
    "pkg/README": F(HELLO),
    "pkg/empty": F(),
    "pkg/bin": D,
    "pkg/bin/run": F(b"#!/bin/sh\necho hi\n", x=True),
    "pkg/link": S("README"),
}
LONG = "d" * 120 + "/" + "e" * 120 + "/" + "f" * 150 + ".txt"
LONG_TREE: Tree = {
    "d" * 120: D,
    "d" * 120 + "/" + "e" * 120: D,
    LONG: F(HELLO),
    "l": S(LONG),
}
NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")
BIG = bytes(range(256)) * 4096  # 1 MiB, crosses every copy-buffer boundary


def _multi_gzip() -> bytes:
    data = tar([T("a", b"first half\n" * 1000), T("b", b"second half\n" * 1000)])
    cut = 3 * BLOCK + 5000
    return gz(data[:cut]) + gz(data[cut:])


def _split(
    data: bytes, cut: int, compress: Callable[[bytes], bytes], padding: bytes = b""
) -> bytes:
    """Two concatenated compressed streams (what pigz, pbzip2, pzstd or `cat` make)."""
    return compress(data[:cut]) + padding + compress(data[cut:]) + padding


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 1
    return bytes(out)


def _tar_then(tail: bytes) -> bytes:
    return member("a", HELLO) + END + tail


def _huge_pax() -> bytes:
    body = pax_records({"comment": "x" * (2 << 20)})
    return gz(header("PaxHeaders/x", typ=b"x", size=len(body)) + pad(body) + member("a") + END)


def _gzip_bomb(size: int) -> bytes:
    return gz(header("bomb", size=size) + bytes(size) + END)


def _zero_descriptor_crc(data: bytes) -> bytes:
    at = data.index(b"PK\x07\x08") + 4
    return data[:at] + bytes(4) + data[at + 4 :]


def _zip_bomb() -> bytes:
    return zipped([Z("bomb", bytes(64 << 20))])


def _entries(n: int) -> bytes:
    return tar([T(f"f{i}", b"") for i in range(n)])


def _zip_entries(n: int) -> bytes:
    return zipped([Z(f"f{i}") for i in range(n)])


def _not_utf8() -> bytes:
    return member(b"caf\xe9") + END


_SMALL = Limits(max_unpacked=1 << 20, max_entries=1000, max_ratio=10, ratio_grace=1 << 20)
_RATIO = Limits(max_ratio=10, ratio_grace=1 << 20)

CASES: list[Case] = [
    # ---- valid tar: each is compared with GNU tar ----
    Case("ustar-basic.tar.gz", lambda: gz(tar(BASIC, tarfile.USTAR_FORMAT)), "tar", BASIC_TREE),
    Case("gnu-basic.tar.bz2", lambda: bz(tar(BASIC, tarfile.GNU_FORMAT)), "tar", BASIC_TREE),
    Case("pax-basic.tar.xz", lambda: xz(tar(BASIC)), "tar", BASIC_TREE),
    Case("pax-basic.tar.zst", lambda: zst(tar(BASIC)), "tar", BASIC_TREE),
    Case("plain.tar", lambda: tar(BASIC), "tar", BASIC_TREE),
    Case(
        "gnu-longname.tar",
        lambda: tar([T(LONG, HELLO), T("l", None, tarfile.SYMTYPE, link=LONG)], tarfile.GNU_FORMAT),
        "tar",
        LONG_TREE,
    ),
    Case(
        "pax-longname.tar",
        lambda: tar([T(LONG, HELLO), T("l", None, tarfile.SYMTYPE, link=LONG)]),
        "tar",
        LONG_TREE,
    ),
    Case(
        "ustar-prefix.tar",
        lambda: tar([T("p" * 90 + "/" + "q" * 90, HELLO)], tarfile.USTAR_FORMAT),
        "tar",
        {"p" * 90: D, "p" * 90 + "/" + "q" * 90: F(HELLO)},
    ),
    Case(
        "pax-size-override.tar",
        # The ustar size says 0; the pax "size" record (which GNU tar honours) says 13.
        lambda: pax({"size": "13"}) + header("a", size=0) + pad(HELLO) + member("b", b"b") + END,
        "tar",
        {"a": F(HELLO), "b": F(b"b")},
    ),
    Case(
        "pax-path-override.tar",
        lambda: pax({"path": "real/name.txt"}) + member("decoy", HELLO) + END,
        "tar",
        {"real": D, "real/name.txt": F(HELLO)},
    ),
    Case(
        "v7-dir-regtype.tar",
        # The uv "Is a directory (os error 21)" shape: typeflag '0' + trailing slash.
        lambda: member("d/", typ=b"0") + member("d/f", HELLO) + member("e/", typ=b"\0") + END,
        "tar",
        {"d": D, "d/f": F(HELLO), "e": D},
    ),
    Case(
        "v7-dir-pax-path.tar",
        lambda: pax({"path": "d/"}) + member("decoy", typ=b"0") + member("d/f", HELLO) + END,
        "tar",
        {"d": D, "d/f": F(HELLO)},
    ),
    Case(
        "children-before-parent.tar",
        lambda: member("a/b/c", HELLO) + member("a/b/", typ=b"5") + member("a/", typ=b"5") + END,
        "tar",
        {"a": D, "a/b": D, "a/b/c": F(HELLO)},
    ),
    Case(
        "hardlink.tar",
        lambda: tar(
            [
                T("x/orig", HELLO, mode=0o755),
                T("x/hard", None, tarfile.LNKTYPE, link="x/orig", mode=0o644),
            ]
        ),
        "tar",
        {"x": D, "x/orig": F(HELLO, x=True), "x/hard": F(HELLO, x=True)},
    ),
    Case(
        "symlinks-inside.tar",
        lambda: tar(
            [
                T("a/b/", None, tarfile.DIRTYPE),
                T("c", HELLO),
                T("a/b/up", None, tarfile.SYMTYPE, link="../../c"),
                T("a/self", None, tarfile.SYMTYPE, link="."),
                T("a/dir", None, tarfile.SYMTYPE, link="b"),
                T("a/via", None, tarfile.SYMTYPE, link="dir/up"),
                T("dangling", None, tarfile.SYMTYPE, link="nowhere/yet"),
            ]
        ),
        "tar",
        {
            "a": D,
            "a/b": D,
            "c": F(HELLO),
            "a/b/up": S("../../c"),
            "a/self": S("."),
            "a/dir": S("b"),
            "a/via": S("dir/up"),
            "dangling": S("nowhere/yet"),
        },
    ),
    Case("sparse-gnu.tar", sparse_gnu, "tar", {"sparse-gnu": F(SPARSE_CONTENT)}),
    Case("sparse-pax-0.0.tar", sparse_pax00, "tar", {"sparse-00": F(SPARSE_CONTENT)}),
    Case("sparse-pax-0.1.tar", sparse_pax01, "tar", {"sparse-01": F(SPARSE_CONTENT)}),
    Case("sparse-pax-1.0.tar", sparse_pax10, "tar", {"sparse-10": F(SPARSE_UNTERMINATED)}),
    Case(
        "unicode-names.tar.gz",
        lambda: gz(
            member("caf\u00e9/na\u00efve.txt".encode(), HELLO)
            + tar([T("日本語/ファイル.txt", HELLO), T("emoji-🐍", b"")], end=False)
            + END
        ),
        "tar",
        {
            "café": D,
            "café/naïve.txt": F(HELLO),
            "日本語": D,
            "日本語/ファイル.txt": F(HELLO),
            "emoji-🐍": F(),
        },
    ),
    Case(
        "exec-bits.tar",
        lambda: tar(
            [
                T("setuid", b"s", mode=0o4755),
                T("group-x", b"g", mode=0o610),
                T("other-x", b"o", mode=0o601),
                T("sticky", b"t", mode=0o1644),
                T("plain", b"p", mode=0o600),
            ]
        ),
        "tar",
        {
            "setuid": F(b"s", x=True),
            "group-x": F(b"g", x=True),
            "other-x": F(b"o", x=True),
            "sticky": F(b"t"),
            "plain": F(b"p"),
        },
    ),
    Case(
        "dot-slash.tar",
        lambda: (
            member("./", typ=b"5") + member("./pkg/", typ=b"5") + member("./pkg/a", HELLO) + END
        ),
        "tar",
        {"pkg": D, "pkg/a": F(HELLO)},
    ),
    Case(
        "multi-member.tar.gz",
        _multi_gzip,
        "tar",
        {"a": F(b"first half\n" * 1000), "b": F(b"second half\n" * 1000)},
    ),
    Case(
        "concatenated-streams.tar.bz2",
        lambda: _split(tar([T("a", HELLO * 100)]), 1024, bz),
        "tar",
        {"a": F(HELLO * 100)},
    ),
    Case(
        "xz-multistream-padded.tar.xz",
        # xz allows stream padding (multiples of 4 zero bytes) between and after streams.
        lambda: _split(tar([T("a", HELLO * 100)]), 700, xz, padding=bytes(4)),
        "tar",
        {"a": F(HELLO * 100)},
    ),
    Case(
        "zstd-frames.tar.zst",
        lambda: _split(tar([T("a", HELLO * 100)]), 600, zst),
        "tar",
        {"a": F(HELLO * 100)},
    ),
    Case("empty.tar", lambda: bytes(10240), "tar", {}),
    Case("lone-zero-block.tar", lambda: member("a", HELLO) + bytes(BLOCK), "tar", {"a": F(HELLO)}),
    Case("big-file.tar.gz", lambda: gz(tar([T("big", BIG)])), "tar", {"big": F(BIG)}),
    Case(
        "pax-global-header.tar",
        # git archive writes one: a comment with the commit id.
        lambda: (
            pax({"comment": "4b825dc642cb6eb9a060e54bf8d69288fbee4904"}, typ=b"g")
            + member("a", HELLO)
            + END
        ),
        "tar",
        {"a": F(HELLO)},
    ),
    Case(
        "base256-fields.tar",
        lambda: member("a", HELLO, extra={108: b"\x80" + bytes(6) + b"\x01"}) + END,
        "tar",
        {"a": F(HELLO)},
    ),
    Case(
        "repeated-directory.tar",
        lambda: member("d/", typ=b"5") + member("d/", typ=b"5") + member("d/a", HELLO) + END,
        "tar",
        {"d": D, "d/a": F(HELLO)},
    ),
    # ---- valid zip: each is compared with unzip ----
    Case(
        "basic.zip",
        lambda: zipped(
            [
                Z("pkg/", mode=0o40755),
                Z("pkg/README", HELLO),
                Z("pkg/run", b"#!/bin/sh\n", mode=0o100755),
                Z("pkg/empty"),
                Z("pkg/big", BIG, method=zipfile.ZIP_STORED),
                Z("other/implied.txt", HELLO, method=zipfile.ZIP_BZIP2),
            ]
        ),
        "zip",
        {
            "pkg": D,
            "pkg/README": F(HELLO),
            "pkg/run": F(b"#!/bin/sh\n", x=True),
            "pkg/empty": F(),
            "pkg/big": F(BIG),
            "other": D,
            "other/implied.txt": F(HELLO),
        },
    ),
    Case(
        "lzma.zip",
        lambda: zipped([Z("a", BIG, method=zipfile.ZIP_LZMA)]),
        "zip",
        {"a": F(BIG)},
        compare=False,  # Info-ZIP unzip 6.0 has no LZMA (method 14)
    ),
    Case(
        "wheel.whl",
        lambda: zipped(
            [
                Z("demo/__init__.py", b"x = 1\n"),
                Z("demo-1.0.dist-info/METADATA", b"Name: demo\n"),
                Z("demo-1.0.data/scripts/demo", b"#!python\n", mode=0o100755),
                Z("demo-1.0.dist-info/RECORD", b""),
            ]
        ),
        "zip",
        {
            "demo": D,
            "demo/__init__.py": F(b"x = 1\n"),
            "demo-1.0.dist-info": D,
            "demo-1.0.dist-info/METADATA": F(b"Name: demo\n"),
            "demo-1.0.data": D,
            "demo-1.0.data/scripts": D,
            "demo-1.0.data/scripts/demo": F(b"#!python\n", x=True),
            "demo-1.0.dist-info/RECORD": F(),
        },
    ),
    Case(
        "data-descriptors.zip",
        lambda: zipped([Z("a", HELLO), Z("b/c", BIG)], streamed=True),
        "zip",
        {"a": F(HELLO), "b": D, "b/c": F(BIG)},
    ),
    Case(
        "zip64.zip",
        lambda: zipped([Z("a", HELLO), Z("b", BIG, method=zipfile.ZIP_STORED)], zip64=True),
        "zip",
        {"a": F(HELLO), "b": F(BIG)},
    ),
    Case(
        "msdos.zip",
        lambda: zipped([Z("DIR/", mode=None), Z("DIR/FILE.TXT", HELLO, mode=None)]),
        "zip",
        {"DIR": D, "DIR/FILE.TXT": F(HELLO)},
    ),
    Case(
        "unicode.zip",
        lambda: zipped([Z("café/日本.txt", HELLO)]),
        "zip",
        {"café": D, "café/日本.txt": F(HELLO)},
    ),
    Case(
        "utf8-without-flag.zip",
        # Info-ZIP on Unix stores UTF-8 names without flag bit 11; unzip writes them as is.
        lambda: raw_zip([RawEntry("naïve/café.txt".encode(), HELLO)]),
        "zip",
        {"naïve": D, "naïve/café.txt": F(HELLO)},
    ),
    Case(
        "cp437-name.zip",
        lambda: raw_zip([RawEntry(b"caf\x82.txt", HELLO)]),
        "zip",
        {"café.txt": F(HELLO)},
        compare=False,  # unzip's charset conversion depends on its build and locale
    ),
    Case("empty.zip", lambda: zipped([]), "zip", {}, compare=False),  # unzip: exit 1, "empty"
    # ---- hostile tar ----
    Case("dotdot.tar", lambda: member("../evil", HELLO) + END, "tar", reason="'..' component"),
    Case(
        "dotdot-inner.tar.gz",
        lambda: gz(member("a/", typ=b"5") + member("a/../../evil", HELLO) + END),
        "tar",
        reason="'..' component",
    ),
    Case("absolute.tar", lambda: member("/etc/evil", HELLO) + END, "tar", reason="absolute path"),
    Case("drive.tar", lambda: member("C:/evil", HELLO) + END, "tar", reason="drive-letter"),
    Case("drive-backslash.tar", lambda: member("C:\\evil", HELLO) + END, "tar", reason="backslash"),
    Case("unc.tar", lambda: member("\\\\host\\share\\x", HELLO) + END, "tar", reason="backslash"),
    Case(
        "symlink-absolute.tar",
        lambda: member("l", typ=b"2", link="/etc/passwd") + END,
        "tar",
        reason="absolute path",
    ),
    Case(
        "symlink-escape.tar",
        lambda: member("a/", typ=b"5") + member("a/l", typ=b"2", link="../../etc") + END,
        "tar",
        reason="escapes the tree",
    ),
    Case(
        "symlink-escape-chain.tar",
        # Each link is harmless alone; "d/y" climbs out through "d/x".
        lambda: (
            member("d/", typ=b"5")
            + member("d/x", typ=b"2", link="..")
            + member("d/y", typ=b"2", link="x/..")
            + END
        ),
        "tar",
        reason="escapes the tree",
    ),
    Case(
        "write-through-symlink.tar",
        lambda: (
            member("sub/", typ=b"5")
            + member("lnk", typ=b"2", link="sub")
            + member("lnk/file", HELLO)
            + END
        ),
        "tar",
        reason="through the symlink",
    ),
    Case(
        "write-through-symlink-escaping.tar",
        # CVE-2007-4559's second shape: the file lands wherever the link points.
        lambda: member("lnk", typ=b"2", link="/tmp") + member("lnk/evil", HELLO) + END,
        "tar",
        reason="absolute path",
    ),
    Case(
        "symlink-after-child.tar",
        lambda: member("lnk/file", HELLO) + member("lnk", typ=b"2", link="sub") + END,
        "tar",
        reason="both a symlink and a directory",
    ),
    Case(
        "hardlink-missing.tar",
        lambda: member("h", typ=b"1", link="nothing") + END,
        "tar",
        reason="not an earlier entry",
    ),
    Case(
        "hardlink-later.tar",
        lambda: member("h", typ=b"1", link="a") + member("a", HELLO) + END,
        "tar",
        reason="not an earlier entry",
    ),
    Case(
        "hardlink-absolute.tar",
        lambda: member("h", typ=b"1", link="/etc/passwd") + END,
        "tar",
        reason="absolute path",
    ),
    Case(
        "hardlink-outside.tar",
        lambda: member("a", HELLO) + member("h", typ=b"1", link="../a") + END,
        "tar",
        reason="'..' component",
    ),
    Case(
        "hardlink-to-dir.tar",
        lambda: member("d/", typ=b"5") + member("h", typ=b"1", link="d") + END,
        "tar",
        reason="not a regular file",
    ),
    Case("chardev.tar", lambda: member("null", typ=b"3") + END, "tar", reason="character device"),
    Case("blockdev.tar", lambda: member("sda", typ=b"4") + END, "tar", reason="block device"),
    Case("fifo.tar", lambda: member("pipe", typ=b"6") + END, "tar", reason="FIFO"),
    Case(
        "unknown-type.tar",
        lambda: member("z", b"zz", typ=b"Z") + END,
        "tar",
        reason="unsupported entry type",
    ),
    Case(
        "duplicate.tar",
        lambda: member("a", HELLO) + member("a", b"evil") + END,
        "tar",
        reason="duplicate entry",
    ),
    Case(
        "file-then-dir.tar",
        lambda: member("a", HELLO) + member("a/b", HELLO) + END,
        "tar",
        reason="both a file and a directory",
    ),
    Case(
        "dir-then-file.tar",
        lambda: member("a/", typ=b"5") + member("a", HELLO) + END,
        "tar",
        reason="both a file and a directory",
    ),
    Case(
        "nul-in-pax-path.tar",
        lambda: pax({"path": "safe\0../../evil"}) + member("x", HELLO) + END,
        "tar",
        reason="control character",
    ),
    Case(
        "control-char.tar",
        lambda: member("evil\x1b[31m", HELLO) + END,
        "tar",
        reason="control character",
    ),
    Case(
        "newline-name.tar",
        lambda: member("a\nb", HELLO) + END,
        "tar",
        reason="control character",
    ),
    Case(
        "case-collision.tar",
        lambda: member("README", HELLO) + member("readme", HELLO) + END,
        "tar",
        reason="collides",
    ),
    Case(
        "case-collision-dirs.tar",
        lambda: member("Pkg/a", HELLO) + member("pkg/b", HELLO) + END,
        "tar",
        reason="collides",
    ),
    Case(
        "unicode-collision.tar",
        lambda: member(NFC.encode(), HELLO) + member(NFD.encode(), HELLO) + END,
        "tar",
        reason="collides",
    ),
    Case("not-utf8.tar", _not_utf8, "tar", reason="not valid UTF-8"),
    Case(
        "component-too-long.tar",
        lambda: pax({"path": "x" * 256}) + member("x", HELLO) + END,
        "tar",
        reason="component longer than 255",
    ),
    Case(
        "path-too-long.tar",
        lambda: pax({"path": "/".join(["y" * 200] * 21)}) + member("x", HELLO) + END,
        "tar",
        reason="path longer than 4096",
    ),
    Case("truncated.tar.gz", lambda: gz(tar(BASIC))[:-40], "tar", reason="truncated"),
    Case("truncated.tar.bz2", lambda: bz(tar(BASIC))[:-40], "tar", reason="truncated"),
    Case("truncated.tar.xz", lambda: xz(tar(BASIC))[:-40], "tar", reason="truncated"),
    Case("truncated.tar.zst", lambda: zst(tar(BASIC))[:-10], "tar", reason="truncated"),
    Case("truncated-data.tar", lambda: member("a", BIG)[:5000], "tar", reason="truncated"),
    Case(
        "truncated-header.tar",
        lambda: member("a", HELLO) + header("b", size=5)[:300],
        "tar",
        reason="truncated",
    ),
    Case(
        "truncated-no-end-marker.tar.gz",
        # Cut exactly at a header boundary: tarfile sees a clean end.
        lambda: gz(member("a", HELLO)),
        "tar",
        reason="no end-of-archive marker",
    ),
    Case(
        "html.tar.gz",
        lambda: b"<!DOCTYPE html><html><body>Sign in to continue</body></html>\n" * 20,
        "tar",
        reason="HTML",
    ),
    Case("html-inside.gz", lambda: gz(b"<html>" + b"x" * 600), "tar", reason="HTML"),
    Case("empty-file", lambda: b"", "tar", reason="empty file"),
    Case("trailing-garbage.tar", lambda: _tar_then(b"GARBAGE"), "tar", reason="trailing garbage"),
    Case(
        "trailing-garbage-inside.tar.gz",
        lambda: gz(_tar_then(b"\0" * 1000 + b"evil")),
        "tar",
        reason="trailing garbage",
    ),
    Case(
        "trailing-garbage-after-gzip.tar.gz",
        lambda: gz(_tar_then(b"")) + b"<html>",
        "tar",
        reason="trailing garbage after the gzip stream",
    ),
    Case(
        "corrupt-header-mid-archive.tar",
        lambda: member("a", HELLO) + b"\x01" * BLOCK + member("b", HELLO) + END,
        "tar",
        reason="corrupt tar header",
    ),
    Case(
        "corrupt-gzip-crc.tar.gz",
        lambda: _flip(gz(tar(BASIC)), -8),
        "tar",
        reason="corrupt gzip data",
    ),
    Case(
        "dir-with-data.tar",
        lambda: header("d", typ=b"5", size=5) + pad(b"XXXXX") + member("e", HELLO) + END,
        "tar",
        reason="directory entry carries data",
    ),
    Case(
        "symlink-with-data.tar",
        lambda: header("s", typ=b"2", link="e", size=5) + pad(b"XXXXX") + END,
        "tar",
        reason="link entry carries data",
    ),
    Case(
        "negative-size.tar",
        lambda: member("a", HELLO, size_field=b"\xff" * 12) + END,
        "tar",
        reason="negative size",
    ),
    Case(
        "pax-digit-run.tar.gz",
        lambda: gz(pax({"comment": "1" * 5000}) + member("a") + END),
        "tar",
        reason="CVE-2024-6232",
    ),
    Case("pax-huge.tar.gz", _huge_pax, "tar", reason="extended header larger"),
    Case(
        "pax-bad-number.tar",
        lambda: pax({"size": "12abc"}) + member("a", HELLO) + END,
        "tar",
        reason="not a number",
    ),
    Case(
        "pax-bad-record.tar",
        lambda: pax(b"99 path=a\n") + member("a", HELLO) + END,
        "tar",
        reason="malformed pax header",
    ),
    Case(
        "pax-global-path.tar",
        lambda: pax({"path": "evil"}, typ=b"g") + member("a", HELLO) + END,
        "tar",
        reason="global header sets 'path'",
    ),
    Case(
        "gzip-bomb-small-limits.tar.gz",
        lambda: _gzip_bomb(8 << 20),
        "tar",
        reason="max_ratio",
        limits=_SMALL,
    ),
    Case(
        "zero-stream-bomb.tar.xz",
        # Only end-marker zeros: nothing is written, the decoded stream is the bomb.
        lambda: xz(member("a", HELLO) + bytes(16 << 20)),
        "tar",
        reason="decompressed stream",
        limits=_SMALL,
    ),
    Case(
        "max-unpacked.tar",
        lambda: tar([T("a", BIG), T("b", BIG)]),
        "tar",
        reason="max_unpacked",
        limits=Limits(max_unpacked=(1 << 20) + 10),
    ),
    Case(
        "too-many-entries.tar.gz",
        lambda: gz(_entries(1001)),
        "tar",
        reason="max_entries",
        limits=_SMALL,
    ),
    # ---- hostile zip ----
    Case("zip-dotdot.zip", lambda: raw_zip([RawEntry(b"../evil", HELLO)]), "zip", reason="'..'"),
    Case(
        "zip-absolute.zip",
        lambda: raw_zip([RawEntry(b"/etc/evil", HELLO)]),
        "zip",
        reason="absolute path",
    ),
    Case(
        "zip-backslash.zip",
        lambda: raw_zip([RawEntry(b"..\\evil", HELLO)]),
        "zip",
        reason="backslash",
    ),
    Case(
        "zip-nul.zip",
        lambda: raw_zip([RawEntry(b"safe\0/../../evil", HELLO)]),
        "zip",
        reason="control character",
    ),
    Case(
        "zip-symlink.zip",
        lambda: raw_zip([RawEntry(b"lnk", b"/etc/passwd", mode=0o120777)]),
        "zip",
        reason="zip symlinks",
    ),
    Case(
        "zip-fifo.zip", lambda: raw_zip([RawEntry(b"p", b"", mode=0o010644)]), "zip", reason="FIFO"
    ),
    Case(
        "zip-duplicate.zip",
        lambda: raw_zip([RawEntry(b"a", HELLO), RawEntry(b"a", b"evil")]),
        "zip",
        reason="duplicate entry",
    ),
    Case(
        "zip-case-collision.zip",
        lambda: raw_zip([RawEntry(b"A.txt", HELLO), RawEntry(b"a.txt", HELLO)]),
        "zip",
        reason="collides",
    ),
    Case(
        "zip-local-name-mismatch.zip",
        lambda: raw_zip([RawEntry(b"good", HELLO, local_name=b"evil")]),
        "zip",
        reason="local header names",
    ),
    Case(
        "zip-local-size-mismatch.zip",
        lambda: raw_zip([RawEntry(b"a", HELLO, local_usize=1 << 30)]),
        "zip",
        reason="disagrees with the central directory",
    ),
    Case(
        "zip-local-method-mismatch.zip",
        lambda: raw_zip([RawEntry(b"a", HELLO, local_method=zipfile.ZIP_DEFLATED)]),
        "zip",
        reason="method",
    ),
    Case("zip-overlap.zip", overlapping_zip, "zip", reason="overlap"),
    Case(
        "zip-shared-header.zip",
        # Fifield's "full overlap": two central records, one local header.
        lambda: raw_zip([RawEntry(b"a", HELLO), RawEntry(b"a", HELLO, offset=0)]),
        "zip",
        reason="duplicate entry",
    ),
    Case(
        "zip-bad-crc.zip",
        lambda: raw_zip([RawEntry(b"a", HELLO, crc=1234)]),
        "zip",
        reason="CRC",
    ),
    Case(
        "zip-short-member.zip",
        lambda: raw_zip([RawEntry(b"a", HELLO, usize=100)]),
        "zip",
        reason="differs from the declared",
    ),
    Case(
        "zip-encrypted.zip",
        lambda: raw_zip([RawEntry(b"a", HELLO, flags=1)]),
        "zip",
        reason="encrypted",
    ),
    Case(
        "zip-descriptor-mismatch.zip",
        lambda: _zero_descriptor_crc(zipped([Z("a", BIG, method=0)], streamed=True)),
        "zip",
        reason="data descriptor disagrees",
    ),
    Case(
        "zip-unsupported-method.zip",
        lambda: raw_zip([RawEntry(b"a", HELLO, method=9)]),
        "zip",
        reason="unsupported compression method 9",
    ),
    Case(
        "zip-trailing-data.zip",
        lambda: zipped([Z("a", HELLO)]) + b"junk",
        "zip",
        reason="trailing data",
    ),
    Case("zip-truncated.zip", lambda: zipped([Z("a", BIG)])[:-30], "zip", reason="corrupt zip"),
    Case(
        "zip-bomb-declared.zip",
        _zip_bomb,
        "zip",
        reason="max_ratio",
        limits=_RATIO,
    ),
    Case(
        "zip-too-many-entries.zip",
        lambda: _zip_entries(1001),
        "zip",
        reason="max_entries",
        limits=_SMALL,
    ),
]
