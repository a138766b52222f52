"""Extract: every odd archive right, every hostile archive refused (spec/extract.md)."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import archives
import hypothesis.configuration
import pytest
from archives import CASES, END, Case, D, F, Node, S, Tree, header, member
from conftest import Hutch
from hutch.extract import Limits, Member, extract, parse_size
from hutch.extract import tar as tar_reader
from hutch.extract.checks import Tree as MemberTree
from hutch.store import digest
from hutch.store.errors import ArchiveError, DiskFull, UsageError
from hutch.store.fsutil import UnsafePath, safe_relpath
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

VALID = [c for c in CASES if c.reason is None]
HOSTILE = [c for c in CASES if c.reason is not None]
GNU_TAR = shutil.which("tar")

# pyproject's norecursedirs replaces pytest's default ignores, so a .hypothesis/
# in the checkout becomes a collection error on the next run (hypothesis warns,
# filterwarnings=error); its plugin writes there during collection, before any
# fixture runs. Keep hypothesis's files out of the checkout.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    hypothesis.configuration.set_hypothesis_home_dir(
        Path(tempfile.gettempdir()) / f"hutch-hypothesis-{os.getuid()}"
    )
UNZIP = shutil.which("unzip")


def _ids(cases: list[Case]) -> list[str]:
    return [c.name for c in cases]


# -- helpers -----------------------------------------------------------------


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(case: Case, tmp: Path) -> tuple[Path, Path]:
    archive = tmp / "archive"
    archive.write_bytes(case.build())
    staging = tmp / "staging"
    staging.mkdir()
    return archive, staging


def tree_of_members(members: list[Member]) -> Tree:
    """The tree the store's installer would build from these members."""
    by_digest = {m.digest: m.blob for m in members if m.blob is not None}
    tree: Tree = {}
    for m in members:
        if m.kind == "dir":
            tree[m.path] = D
        elif m.kind == "symlink":
            assert m.target is not None
            tree[m.path] = S(m.target)
        else:
            blob = m.blob or by_digest[m.digest]
            assert blob is not None
            tree[m.path] = F(Path(blob).read_bytes(), x=m.executable)
    return tree


def tree_on_disk(root: Path) -> Tree:
    """A directory as GNU tar or unzip left it: paths, types, content, any x bit."""
    tree: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            st_ = path.lstat()
            if stat.S_ISLNK(st_.st_mode):
                tree[rel] = S(os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                tree[rel] = D
            else:
                tree[rel] = F(path.read_bytes(), x=bool(st_.st_mode & 0o111))
    return tree


def _describe(tree: Tree) -> dict[str, tuple[str, int, bool, str | None]]:
    return {k: (v.kind, len(v.content), v.executable, v.target) for k, v in sorted(tree.items())}


def assert_staging_flat(staging: Path) -> None:
    """Only regular blob files with an object mode; no directory, no symlink."""
    for entry in os.scandir(staging):
        st_ = entry.stat(follow_symlinks=False)
        assert stat.S_ISREG(st_.st_mode), entry.name
        assert stat.S_IMODE(st_.st_mode) in (0o444, 0o555), oct(st_.st_mode)


# -- the corpus ----------------------------------------------------------------


def test_corpus_is_large_enough() -> None:
    """spec/extract.md §Corpus: at least 35 odd and hostile archives."""
    assert len(CASES) >= 35
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", VALID, ids=_ids(VALID))
def test_valid_archive_extracts_expected_tree(case: Case, tmp_path: Path) -> None:
    """spec/extract.md §Tree: members, blobs and modes are the expected tree."""
    archive, staging = _run(case, tmp_path)
    members = extract(archive, staging, limits=case.limits, display=case.name)
    assert [m.path for m in members] == sorted(m.path for m in members)
    assert tree_of_members(members) == case.tree, _describe(tree_of_members(members))
    assert_staging_flat(staging)
    for m in members:
        if m.kind == "file" and m.blob is not None:
            data = Path(m.blob).read_bytes()
            assert m.size == len(data)
            assert m.digest == digest.blake3_bytes(data)
            assert stat.S_IMODE(os.stat(m.blob).st_mode) == (0o555 if m.executable else 0o444)
            assert Path(m.blob).parent == staging
    assert _listing(tmp_path) - {"archive", "staging"} == {
        f"staging/{p.name}" for p in staging.iterdir()
    }


@pytest.mark.parametrize("case", HOSTILE, ids=_ids(HOSTILE))
def test_hostile_archive_refused(case: Case, tmp_path: Path) -> None:
    """spec/extract.md §Refusals: ArchiveError naming archive, member and reason."""
    archive, staging = _run(case, tmp_path)
    with pytest.raises(ArchiveError) as info:
        extract(archive, staging, limits=case.limits, display=case.name)
    err = info.value
    assert err.exit_code == 5
    assert case.reason is not None
    assert case.reason in err.reason, err.reason
    assert err.archive == case.name
    assert case.name in str(err)
    # Nothing outside staging, not even an empty directory; inside, only blobs.
    assert {p.split("/")[0] for p in _listing(tmp_path)} <= {"archive", "staging"}
    assert_staging_flat(staging)


# -- GNU tar and unzip as the reference ---------------------------------------

TAR_VALID = [c for c in VALID if c.fmt == "tar" and c.compare]
ZIP_VALID = [c for c in VALID if c.fmt == "zip" and c.compare]


def _hutch_tree(archive: Path, tmp: Path) -> Tree:
    staging = tmp / "staging"
    staging.mkdir()
    return tree_of_members(extract(archive, staging))


@pytest.mark.skipif(GNU_TAR is None, reason="GNU tar not installed")
@pytest.mark.parametrize("case", TAR_VALID, ids=_ids(TAR_VALID))
def test_same_tree_as_gnu_tar(case: Case, tmp_path: Path) -> None:
    """spec/extract.md §Tree: hutch's tree equals `tar -xf`'s, paths/types/content/x/targets."""
    archive = tmp_path / "archive"
    archive.write_bytes(case.build())
    out = tmp_path / "gnu"
    out.mkdir()
    proc = subprocess.run(
        ["tar", "-xf", str(archive), "-C", str(out), "--no-same-owner"],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    gnu = tree_on_disk(out)
    ours = _hutch_tree(archive, tmp_path)
    assert ours == gnu, (_describe(ours), _describe(gnu))


@pytest.mark.skipif(UNZIP is None, reason="unzip not installed")
@pytest.mark.parametrize("case", ZIP_VALID, ids=_ids(ZIP_VALID))
def test_same_tree_as_unzip(case: Case, tmp_path: Path) -> None:
    """spec/extract.md §Tree: hutch's tree of a zip equals unzip's."""
    archive = tmp_path / "archive.zip"
    archive.write_bytes(case.build())
    out = tmp_path / "unzip"
    out.mkdir()
    proc = subprocess.run(
        ["unzip", "-qq", str(archive), "-d", str(out)], capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    ours = _hutch_tree(archive, tmp_path)
    assert ours == tree_on_disk(out), (_describe(ours), _describe(tree_on_disk(out)))


def _make_source_tree(root: Path, *, simple: bool = False) -> None:
    (root / "pkg" / "empty-dir").mkdir(parents=True)
    (root / "pkg" / "a.txt").write_bytes(b"a" * 3000)
    (root / "pkg" / "empty").write_bytes(b"")
    run = root / "pkg" / "run.sh"
    run.write_bytes(b"#!/bin/sh\n")
    run.chmod(0o755)
    os.link(root / "pkg" / "a.txt", root / "pkg" / "hard.txt")
    os.symlink("a.txt", root / "pkg" / "link")
    if simple:
        return
    deep = root / "pkg" / ("long-" * 30) / ("deeper-" * 30)
    deep.mkdir(parents=True)
    (deep / ("name-" * 40 + ".txt")).write_bytes(b"deep\n")
    os.symlink("../" + ("long-" * 30) + "/" + ("deeper-" * 30), root / "pkg" / "sub" / "x")
    (root / "pkg" / "ünïcödé-名前.txt").write_bytes("ü".encode())
    with open(root / "pkg" / "sparse.img", "wb") as f:
        f.write(b"head")
        f.seek(5 << 20)
        f.write(b"middle")
        f.truncate(9 << 20)


@pytest.mark.skipif(GNU_TAR is None, reason="GNU tar not installed")
@pytest.mark.parametrize(
    ("fmt", "extra"),
    [
        ("gnu", ["--sparse"]),
        ("oldgnu", ["--sparse"]),
        ("pax", ["--sparse", "--sparse-version=0.0"]),
        ("pax", ["--sparse", "--sparse-version=0.1"]),
        ("pax", ["--sparse", "--sparse-version=1.0"]),
        ("ustar", []),
        ("v7", []),
    ],
)
def test_archives_made_by_gnu_tar(fmt: str, extra: list[str], tmp_path: Path) -> None:
    """spec/extract.md §Tree: real GNU tar output in every format, sparse files included."""
    src = tmp_path / "src"
    (src / "pkg" / "sub").mkdir(parents=True)
    _make_source_tree(src, simple=fmt in ("ustar", "v7"))
    archive = tmp_path / f"{fmt}.tar.gz"
    subprocess.run(
        ["tar", f"--format={fmt}", *extra, "-czf", str(archive), "-C", str(src), "pkg"],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(out)], check=True)
    ours = _hutch_tree(archive, tmp_path)
    assert ours == tree_on_disk(out) == tree_on_disk(src)


# -- limits ---------------------------------------------------------------


def gzip_bomb(size: int = 2 << 30) -> bytes:
    """A tar.gz of one ``size``-byte file of zeros (~1/1000 of size), built in ~0.3 s.

    Deflating 2 GiB takes seconds, but after a full flush the compressor's output
    for the next MiB of zeros does not depend on anything before it, so one
    compressed MiB is repeated. The gzip trailer's CRC is computed separately.
    """
    chunk = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = header("bomb", size=size)
    parts = [c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)]
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    parts.append(block * (size // len(chunk)))
    parts.append(c.compress(END) + c.flush())
    crc = zlib.crc32(head)
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(END, crc)
    total = len(head) + size + len(END)
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = crc.to_bytes(4, "little") + (total & 0xFFFFFFFF).to_bytes(4, "little")
    return gzip_header + b"".join(parts) + trailer


def test_bomb_builder_is_a_real_gzip() -> None:
    """The fast bomb builder makes a valid gzip (checked small, with the stdlib)."""
    import gzip

    small = gzip_bomb(4 << 20)
    assert gzip.decompress(small) == header("bomb", size=4 << 20) + bytes(4 << 20) + END


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """os.write, counting: the returned list's one item is the bytes written so far."""
    written = [0]
    real_write = os.write

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        n = real_write(fd, data)
        written[0] += n
        return n

    monkeypatch.setattr(os, "write", counting_write)
    return written


def test_2gib_gzip_bomb_stops_before_1gib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """spec/extract.md §Limits: default limits stop 2 GiB of zeros before 1 GiB is written."""
    bomb = gzip_bomb()
    assert len(bomb) < 3 << 20
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(bomb)
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    staging = where / f"hutch-bomb-{os.getpid()}"
    staging.mkdir()
    written = _count_writes(monkeypatch)
    try:
        start = time.monotonic()
        with pytest.raises(ArchiveError) as info:
            extract(archive, staging)
        assert time.monotonic() - start < 30
    finally:
        shutil.rmtree(staging)
    assert "max_ratio" in info.value.reason
    assert info.value.hint is not None
    assert "--max-unpacked" in info.value.hint
    assert "HUTCH_MAX_UNPACKED" in info.value.hint
    assert 0 < written[0] < 1 << 30
    assert written[0] <= 200 * len(bomb)  # the default ratio, past the default 256 MiB grace


def test_raising_max_unpacked_lifts_the_ratio_check(tmp_path: Path) -> None:
    """spec/extract.md §Limits: an explicit --max-unpacked is the user's own bound."""
    archive = tmp_path / "zeros.tar.gz"
    archive.write_bytes(gzip_bomb(8 << 20))
    strict = Limits(max_ratio=10, ratio_grace=1 << 20)
    (tmp_path / "s1").mkdir()
    with pytest.raises(ArchiveError, match="max_ratio"):
        extract(archive, tmp_path / "s1", limits=strict)
    (tmp_path / "s2").mkdir()
    lifted = Limits(max_unpacked=64 << 20, max_ratio=10, ratio_grace=64 << 20)
    members = extract(archive, tmp_path / "s2", limits=lifted)
    assert [m.size for m in members] == [8 << 20]


def test_limits_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """spec/extract.md §Limits: flags win over HUTCH_MAX_UNPACKED / HUTCH_MAX_ENTRIES."""
    monkeypatch.delenv("HUTCH_MAX_UNPACKED", raising=False)
    monkeypatch.delenv("HUTCH_MAX_ENTRIES", raising=False)
    assert Limits.from_env(None, None) == Limits()
    monkeypatch.setenv("HUTCH_MAX_UNPACKED", "2GiB")
    monkeypatch.setenv("HUTCH_MAX_ENTRIES", "500")
    env = Limits.from_env(None, None)
    assert (env.max_unpacked, env.max_entries) == (2 << 30, 500)
    assert env.ratio_grace == 2 << 30
    flags = Limits.from_env(1 << 20, 7)
    assert (flags.max_unpacked, flags.max_entries) == (1 << 20, 7)
    assert flags.ratio_grace == Limits().ratio_grace
    monkeypatch.setenv("HUTCH_MAX_ENTRIES", "many")
    with pytest.raises(UsageError, match="HUTCH_MAX_ENTRIES"):
        Limits.from_env(None, None)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("123", 123),
        ("2GiB", 2 << 30),
        ("2gib", 2 << 30),
        ("2G", 2 << 30),
        ("1.5 MiB", 3 << 19),
        ("10GB", 10**10),
        ("500k", 500 << 10),
        ("1TiB", 1 << 40),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    """spec/extract.md §Limits: sizes for --max-unpacked."""
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "GiB", "-1", "2 GiBs", "0", "1e9", "2..5G"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


# -- OS errors while writing --------------------------------------------------


def test_enospc_while_writing_is_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spec/extract.md §Errors: ENOSPC while writing a blob is DiskFull (exit 6), not exit 5."""
    archive, staging = _run(CASES[0], tmp_path)
    real_write = os.write

    def full(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(DiskFull) as info:
        extract(archive, staging)
    assert info.value.exit_code == 6
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")
def test_real_enospc_on_a_tiny_tmpfs(tmp_path: Path) -> None:
    """spec/extract.md §Errors: a real full filesystem gives DiskFull with the errno."""
    archive = tmp_path / "big.tar.gz"
    archive.write_bytes(archives.gz(archives.tar([archives.T("big", archives.BIG * 2)])))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {proc.stderr!r}")
    try:
        with pytest.raises(DiskFull) as info:
            extract(archive, mnt)
        assert info.value.errno == errno.ENOSPC
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# -- hypothesis ---------------------------------------------------------------

_PIECES = ["..", ".", "", "a", "B", "/", "//", "\\", "C:", "\x00", "\x1b", "é", "e\u0301", "~"]


@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join) | st.text(max_size=80))
def test_member_names_never_escape(raw: str) -> None:
    """spec/extract.md §Refusals (names): a checked name never escapes its root."""
    try:
        rel = MemberTree("h").name(raw)
    except ArchiveError:
        return
    if rel is None:  # "./": the root itself, only ever accepted for directories
        return
    parts = rel.split("/")
    assert ".." not in parts
    assert "" not in parts
    assert "." not in parts
    assert not rel.startswith("/")
    assert "\\" not in rel
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in rel)
    root = "/stage/root"
    assert os.path.normpath(os.path.join(root, rel)).startswith(root + "/")


@given(st.text(max_size=64))
def test_safe_relpath_output_is_contained(raw: str) -> None:
    """spec/extract.md §Refusals (names): safe_relpath never returns '..' or an absolute path."""
    try:
        rel = safe_relpath(raw)
    except UnsafePath:
        return
    assert ".." not in rel.split("/")
    assert not rel.startswith("/")


_FUZZ_LIMITS = Limits(max_unpacked=64 << 20, max_entries=10_000)
# HUTCH_FUZZ_EXAMPLES=20000 for a long local run; 300 keeps the suite fast.
_FUZZ = int(os.environ.get("HUTCH_FUZZ_EXAMPLES", "300"))


_COMPONENT = st.sampled_from(["a", "b", "c"])
_PATHS = st.lists(_COMPONENT, min_size=1, max_size=3).map("/".join)
_TARGETS = st.lists(st.sampled_from(["..", ".", "a", "b", "c"]), min_size=1, max_size=5).map(
    "/".join
)
_ENTRIES = st.lists(
    st.tuples(_PATHS, st.sampled_from(["dir", "file", "symlink"]), _TARGETS),
    max_size=8,
    unique_by=lambda e: e[0],
)


def _materialise(members: list[Member], root: Path) -> None:
    """Build the tree the way an installer would, parents first (members are sorted)."""
    for m in members:
        path = root / m.path
        if m.kind == "dir":
            path.mkdir()
        elif m.kind == "symlink":
            assert m.target is not None
            os.symlink(m.target, path)
        else:
            path.write_bytes(b"")


@settings(
    max_examples=_FUZZ // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(entries=_ENTRIES)
def test_accepted_symlinks_resolve_inside_the_tree(
    entries: list[tuple[str, str, str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """spec/extract.md §Refusals (symlinks): built on disk, accepted links stay inside."""
    raw = b""
    for path, kind, target in entries:
        if kind == "dir":
            raw += member(path + "/", typ=b"5")
        elif kind == "file":
            raw += member(path, b"x")
        else:
            raw += member(path, typ=b"2", link=target)
    tmp = tmp_path_factory.mktemp("links")
    archive = tmp / "a.tar"
    archive.write_bytes(raw + END)
    staging = tmp / "staging"
    staging.mkdir()
    try:
        members = extract(archive, staging)
    except ArchiveError:
        return
    root = (tmp / "root").resolve()
    root.mkdir()
    _materialise(members, root)
    for m in members:
        resolved = os.path.realpath(root / m.path)
        assert resolved == str(root) or resolved.startswith(str(root) + "/"), (m, resolved)


_PREFIXES = st.sampled_from(
    [
        b"",
        b"\x1f\x8b\x08\x00",
        b"PK\x03\x04",
        b"PK\x05\x06",
        b"BZh9",
        b"\xfd7zXZ\x00",
        b"\x28\xb5\x2f\xfd",
        header("a", size=100),
        member("a", b"x") + header("b", typ=b"x", size=40),
    ]
)


def _only_archive_errors(data: bytes, tmp: Path, limits: Limits | None = None) -> None:
    archive = tmp / "a"
    archive.write_bytes(data)
    staging = tmp / "s"
    staging.mkdir()
    try:
        extract(archive, staging, limits=limits)
    except ArchiveError:
        pass
    assert_staging_flat(staging)


@settings(
    max_examples=_FUZZ, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prefix=_PREFIXES, tail=st.binary(max_size=2048))
def test_arbitrary_bytes_only_raise_archive_error(
    prefix: bytes, tail: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """spec/extract.md §Errors: any input either extracts or raises ArchiveError."""
    _only_archive_errors(prefix + tail, tmp_path_factory.mktemp("fuzz"), _FUZZ_LIMITS)


_SEEDS = {c.name: c for c in CASES if c.reason is None and c.name != "big-file.tar.gz"}


@settings(
    max_examples=_FUZZ, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(sorted(_SEEDS)),
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_mutated_archives_only_raise_archive_error(
    name: str,
    flips: list[tuple[int, int]],
    cut: int | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """spec/extract.md §Errors: damaged real archives never crash with anything else."""
    data = bytearray(_SEEDS[name].build())
    assume(data)
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    _only_archive_errors(bytes(data), tmp_path_factory.mktemp("mut"), _FUZZ_LIMITS)


# -- odds and ends ---------------------------------------------------------------


def test_uv_issue_2235_v7_directory_is_a_directory(tmp_path: Path) -> None:
    """spec/extract.md §Tree: typeflag '0' + trailing '/' is a directory (uv#2235, seed 001)."""
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(
        archives.gz(member("pkg/tests/mo/", typ=b"0") + member("pkg/tests/mo/x.py", b"1") + END)
    )
    (tmp_path / "s").mkdir()
    members = extract(archive, tmp_path / "s")
    kinds = {m.path: m.kind for m in members}
    assert kinds == {
        "pkg": "dir",
        "pkg/tests": "dir",
        "pkg/tests/mo": "dir",
        "pkg/tests/mo/x.py": "file",
    }


def test_error_names_archive_member_and_reason(tmp_path: Path) -> None:
    """spec/extract.md §Errors: the message carries all three, and a hint."""
    archive = tmp_path / "a.tar"
    archive.write_bytes(member("ok") + member("../evil") + END)
    (tmp_path / "s").mkdir()
    with pytest.raises(ArchiveError) as info:
        extract(archive, tmp_path / "s", display="https://example.org/a.tar")
    text = str(info.value)
    assert "https://example.org/a.tar" in text
    assert "'../evil'" in text
    assert "'..' component" in text
    assert info.value.member == "../evil"


def test_hardlink_member_reuses_digest_without_blob(tmp_path: Path) -> None:
    """spec/extract.md §Tree (hardlinks): a hardlink has its target's digest and blob=None."""
    case = next(c for c in CASES if c.name == "hardlink.tar")
    archive, staging = _run(case, tmp_path)
    members = {m.path: m for m in extract(archive, staging)}
    assert members["x/hard"].blob is None
    assert members["x/hard"].digest == members["x/orig"].digest
    assert len(list(staging.iterdir())) == 1


def _many_files(n: int) -> Iterator[archives.T]:
    for i in range(n):
        yield archives.T(f"d{i % 10}/f{i}", b"%d" % i)


def test_many_small_files(tmp_path: Path) -> None:
    """spec/extract.md §Speed: a few thousand members, one blob each, sorted members."""
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(archives.gz(archives.tar(list(_many_files(3000)))))
    (tmp_path / "s").mkdir()
    members = extract(archive, tmp_path / "s")
    assert len([m for m in members if m.kind == "file"]) == 3000
    assert len(list((tmp_path / "s").iterdir())) == 3000


def test_tarfile_module_is_only_imported_by_readers() -> None:
    """STYLE.md §5: tarfile/zipfile/zstandard each live behind one seam."""
    root = Path(__file__).resolve().parents[1] / "extract"
    for path in root.glob("*.py"):
        text = path.read_text()
        if path.name != "tar.py":
            assert "import tarfile" not in text, path
        if path.name != "zip.py":
            assert "import zipfile" not in text, path
        if path.name != "decode.py":
            assert "import zstandard" not in text, path
        assert "import blake3" not in text, path


def test_node_helpers() -> None:
    assert Node("file", b"x") == F(b"x")
    assert tarfile.REGTYPE == b"0"


# -- the direct zip reader (stored and deflate members, spec/extract.md §7) -------

# Not a multiple of any buffer size, and incompressible enough that the deflated
# copy is itself more than one read (CHUNK) long; the same bytes every run.
_NOISE = random.Random(2235).randbytes(3 << 20)
_LARGE = _NOISE + bytes(range(256)) * 4096 + b"tail"


def _zip_of(entries: list[archives.RawEntry], tmp: Path) -> tuple[Path, Path]:
    archive = tmp / "a.zip"
    archive.write_bytes(archives.raw_zip(entries))
    staging = tmp / "staging"
    staging.mkdir()
    return archive, staging


def _refusal(archive: Path, staging: Path) -> str:
    with pytest.raises(ArchiveError) as info:
        extract(archive, staging)
    assert_staging_flat(staging)
    return info.value.reason


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, len(_LARGE)])
def test_zip_member_sizes_round_the_chunk(method: int, size: int, tmp_path: Path) -> None:
    """spec/extract.md §7: whole-in-memory and streamed members give the same bytes."""
    data = _LARGE[:size]
    archive, staging = _zip_of([archives.RawEntry(b"m", data, method=method)], tmp_path)
    (member,) = extract(archive, staging)
    assert member.blob is not None
    assert Path(member.blob).read_bytes() == data
    assert (member.size, member.digest) == (size, digest.blake3_bytes(data))
    assert stat.S_IMODE(os.stat(member.blob).st_mode) == 0o444


def test_streamed_zip_member_matches_unzip(tmp_path: Path) -> None:
    """spec/extract.md §Tree: a 3 MiB deflated and a stored member, as unzip writes them."""
    if UNZIP is None:
        pytest.skip("unzip not installed")
    archive = tmp_path / "big.zip"
    archive.write_bytes(
        archives.zipped(
            [
                archives.Z("d/big", _LARGE),
                archives.Z("d/stored", _LARGE[::-1], method=zipfile.ZIP_STORED),
                archives.Z("d/run", _LARGE[:5000], mode=0o100755),
            ],
            streamed=True,  # data descriptors too
        )
    )
    out = tmp_path / "unzip"
    subprocess.run(["unzip", "-qq", str(archive), "-d", str(out)], check=True)
    assert _hutch_tree(archive, tmp_path) == tree_on_disk(out)


def _deflated(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("data", [archives.HELLO * 50, _LARGE], ids=["small", "large"])
@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_crc_mismatch_is_refused(data: bytes, method: int, tmp_path: Path) -> None:
    """spec/extract.md §Refusals (zip): a CRC mismatch, in memory or streamed; no blob left."""
    bad = zlib.crc32(data) ^ 1
    archive, staging = _zip_of([archives.RawEntry(b"m", data, method=method, crc=bad)], tmp_path)
    assert "CRC" in _refusal(archive, staging)
    assert list(staging.iterdir()) == []  # the streamed blob was unlinked too


@pytest.mark.parametrize("data", [archives.HELLO * 50, _LARGE], ids=["small", "large"])
def test_zip_deflate_data_ending_early_is_refused(data: bytes, tmp_path: Path) -> None:
    """spec/extract.md §Refusals (zip): compressed bytes cut before the deflate stream ends."""
    cut = len(_deflated(data)) // 2
    entry = archives.RawEntry(b"m", data, method=zipfile.ZIP_DEFLATED, csize=cut)
    archive, staging = _zip_of([entry], tmp_path)
    assert "deflate data ends before the end of the stream" in _refusal(archive, staging)


def _as_deflated(one_entry_zip: bytes) -> bytes:
    """A one-entry raw_zip() whose stored payload is relabelled as deflate data."""
    out = bytearray(one_entry_zip)
    central = out.index(b"PK\x01\x02")
    out[8:10] = out[central + 10 : central + 12] = zipfile.ZIP_DEFLATED.to_bytes(2, "little")
    return bytes(out)


@pytest.mark.parametrize("data", [archives.HELLO * 50, _LARGE], ids=["small", "large"])
def test_zip_deflate_stream_without_its_end_is_refused(data: bytes, tmp_path: Path) -> None:
    """spec/extract.md §Refusals (zip): every byte there, CRC right, but no final block.

    zipfile accepts such a member (it stops at the declared size); hutch wants
    the stream's own end, as every deflate stream a zip writer finishes has.
    """
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    unfinished = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert zlib.decompressobj(-15).decompress(unfinished) == data
    entry = archives.RawEntry(b"m", unfinished, crc=zlib.crc32(data), usize=len(data))
    archive = tmp_path / "a.zip"
    archive.write_bytes(_as_deflated(archives.raw_zip([entry])))
    (tmp_path / "staging").mkdir()
    assert "deflate data ends" in _refusal(archive, tmp_path / "staging")


@pytest.mark.parametrize("data", [archives.HELLO * 50, _LARGE], ids=["small", "large"])
@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_member_holding_more_than_declared_is_refused(
    data: bytes, method: int, tmp_path: Path
) -> None:
    """spec/extract.md §Refusals (zip): data past the declared size is refused, not cut off.

    zipfile would cut it at the declared size and check the CRC of what is left;
    unzip writes it all. The CRC here is that of the declared prefix.
    """
    size = len(data) - 1
    entry = archives.RawEntry(b"m", data, method=method, usize=size, crc=zlib.crc32(data[:size]))
    archive, staging = _zip_of([entry], tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        written = _count_writes(mp)
        assert "differs from the declared" in _refusal(archive, staging)
    assert written[0] <= size  # stopped at the declared size, not after writing it all


def test_zip_name_flag_disagreeing_with_central_is_refused(tmp_path: Path) -> None:
    """spec/extract.md §Refusals (zip): local and central copies of a name read differently.

    The bytes are equal, but only the central record sets the UTF-8 flag, so a
    reader trusting the local header gets a cp437 name (zipfile refuses this too).
    """
    raw = archives.raw_zip([archives.RawEntry("café".encode(), archives.HELLO, flags=0x800)])
    out = bytearray(raw)
    out[6:8] = (0).to_bytes(2, "little")  # the local header's flag bits
    archive, staging = tmp_path / "a.zip", tmp_path / "staging"
    archive.write_bytes(bytes(out))
    staging.mkdir()
    assert "decode the name differently" in _refusal(archive, staging)


# -- a big zip, written in parts by several processes (spec/extract.md §7) -------
def _wide_entries(n: int = 1200) -> list[archives.RawEntry]:
    """More members than extract writes in one process; stored and deflated, some big."""
    rng = random.Random(7)
    out = []
    for i in range(n):
        data = rng.randbytes(rng.randrange(0, 3000)) if i % 3 else b"text %d\n" % i * 40
        if i % 97 == 0:
            data = _LARGE[: (1 << 20) + i]  # streamed through _MemberReader
        method = zipfile.ZIP_STORED if i % 5 == 0 else zipfile.ZIP_DEFLATED
        mode = 0o100755 if i % 11 == 0 else 0o100644
        out.append(archives.RawEntry(f"pkg/d{i % 17}/m{i:04d}".encode(), data, method, mode=mode))
    return out


def _members_of(
    archive: Path, staging: Path, threads: str, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, str, int, bool, str | None]]:
    monkeypatch.setenv("HUTCH_THREADS", threads)
    members = extract(archive, staging)
    for m in members:
        if m.blob is not None:
            assert digest.blake3_bytes(Path(m.blob).read_bytes()) == m.digest
            assert stat.S_IMODE(os.stat(m.blob).st_mode) == (0o555 if m.executable else 0o444)
    return [(m.path, m.kind, m.size, m.executable, m.digest) for m in members]


def test_zip_written_in_parts_gives_the_same_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§7: one process or three, the same members and blobs; parts write in their own dirs."""
    archive, staging = _zip_of(_wide_entries(), tmp_path)
    alone = _members_of(archive, staging, "1", monkeypatch)
    assert_staging_flat(staging)
    parted = tmp_path / "parted"
    parted.mkdir()
    assert _members_of(archive, parted, "3", monkeypatch) == alone
    parts = sorted(p.name for p in parted.iterdir())
    assert len(parts) == 3, parts
    assert all(p.startswith("part-") for p in parts), parts
    for part in parted.iterdir():
        assert_staging_flat(part)
    # Blob names follow the member index, as one process names them.
    names = sorted(b.name for part in parted.iterdir() for b in part.iterdir())
    assert names == sorted(p.name for p in staging.iterdir())


def test_zip_is_not_cut_into_parts_on_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§7: with another thread alive no process is forked, and parts on threads are slower."""
    archive, staging = _zip_of(_wide_entries(), tmp_path)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        members = _members_of(archive, staging, "3", monkeypatch)
    finally:
        stop.set()
        other.join()
    assert_staging_flat(staging)
    assert len(members) == 1200 + 17 + 1  # the files, pkg/d0..d16 and pkg


def test_add_of_a_zip_in_parts_commits_the_same_manifest(hutch: Hutch, tmp_path: Path) -> None:
    """store.md §4: the manifest (and so its id) does not depend on how many processes wrote."""
    archive, _ = _zip_of(_wide_entries(), tmp_path)
    other = Hutch(tmp_path / "other-store", hutch.env)
    one = hutch.ok("add", archive, env={"HUTCH_THREADS": "1"}).strip()
    two = other.ok("add", archive, env={"HUTCH_THREADS": "2"}).strip()
    assert one == two
    listed = [json.loads(h.ok("ls", "--json"))[0] for h in (hutch, other)]
    assert listed[0]["manifest"] == listed[1]["manifest"]
    other.ok("verify", "--full")
    assert list((other.store / "staging").iterdir()) == []


@pytest.mark.parametrize("at", [3, 1100])  # in the first part (a child), in the last (here)
def test_zip_refusal_in_a_part_names_the_member(
    at: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§Refusals (zip): a CRC mismatch found by a worker process reads as from one process."""
    entries = _wide_entries()
    entries[at].crc = zlib.crc32(entries[at].data) ^ 1
    archive, staging = _zip_of(entries, tmp_path)
    monkeypatch.setenv("HUTCH_THREADS", "2")
    with pytest.raises(ArchiveError) as info:
        extract(archive, staging)
    assert info.value.member == f"pkg/d{at % 17}/m{at:04d}"
    assert "CRC-32" in info.value.reason


def test_zip_patched_data_flag_is_refused(tmp_path: Path) -> None:
    """spec/extract.md §Refusals (zip): flag bit 5 (compressed patched data) is not data."""
    entry = archives.RawEntry(b"m", archives.HELLO, flags=0x20)
    archive, staging = _zip_of([entry], tmp_path)
    assert "patched data" in _refusal(archive, staging)


def test_enospc_while_streaming_a_zip_member(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spec/extract.md §Errors: ENOSPC half-way through a streamed blob: DiskFull, blob gone."""
    archive, staging = _zip_of([archives.RawEntry(b"m", _LARGE, method=8)], tmp_path)
    real_write = os.write
    calls = 0

    def fills_up(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fills_up)
    with pytest.raises(DiskFull):
        extract(archive, staging)
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize("umask", [0o077, 0o277, 0o777])
def test_blob_modes_are_exact_whatever_the_umask(umask: int, tmp_path: Path) -> None:
    """spec/extract.md §1: blobs end 0444/0555 even when the umask strips those bits."""
    archive = tmp_path / "a.zip"
    archive.write_bytes(
        archives.zipped(
            [
                archives.Z("a", archives.HELLO),
                archives.Z("x", archives.HELLO, mode=0o100755),
                archives.Z("big", _LARGE),
            ]
        )
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    old = os.umask(umask)
    try:
        members = extract(archive, staging)
    finally:
        os.umask(old)
    modes = {m.path: stat.S_IMODE(os.stat(m.blob).st_mode) for m in members if m.blob is not None}
    assert modes == {"a": 0o444, "x": 0o555, "big": 0o444}


def test_peak_memory_of_a_large_member_stays_flat(tmp_path: Path) -> None:
    """spec/extract.md §2, §7: a 96 MiB member is streamed; peak RSS grows by far less."""
    archive = tmp_path / "zeros.zip"
    archive.write_bytes(archives.zipped([archives.Z("zeros", bytes(96 << 20))]))
    (tmp_path / "staging").mkdir()
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from hutch.extract import extract\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "(m,) = extract(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "assert m.size == 96 << 20\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(archive), str(tmp_path / "staging")],
        capture_output=True,
        text=True,
        check=True,
    )
    grown_kib = int(proc.stdout)
    assert grown_kib < 24 << 10, f"peak RSS grew by {grown_kib} KiB"


@given(st.binary(min_size=512, max_size=600) | st.binary(max_size=520))
def test_fast_tar_checksum_is_tarfile_s(block: bytes) -> None:
    """spec/extract.md §7: the faster header checksum gives tarfile's exact answers."""
    try:
        want: object = tar_reader._STDLIB_CHKSUMS(block)
    except struct.error:
        want = struct.error
    try:
        got: object = tar_reader.calc_chksums(block)
    except struct.error:
        got = struct.error
    assert got == want
    assert tarfile.calc_chksums is tar_reader.calc_chksums  # type: ignore[attr-defined]


@given(st.lists(st.sampled_from([0, 0x20, 0x7F, 0x80, 0xFF]), min_size=512, max_size=512))
def test_fast_tar_checksum_on_high_bytes(values: list[int]) -> None:
    """Signed and unsigned sums differ exactly where bytes have the high bit set."""
    block = bytes(values)
    assert tar_reader.calc_chksums(block) == tar_reader._STDLIB_CHKSUMS(block)


_STREAMED_SEED = archives.zipped(
    [
        archives.Z("a", archives.HELLO),
        archives.Z("big", bytes(range(256)) * 6000 + _NOISE[: 1 << 19]),
        archives.Z("stored", bytes(3 << 19), method=zipfile.ZIP_STORED),
    ]
)


@settings(
    max_examples=_FUZZ // 3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(_STREAMED_SEED) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
    near_headers=st.booleans(),
    cut=st.one_of(st.none(), st.integers(0, len(_STREAMED_SEED))),
)
def test_mutated_streamed_zip_members_only_raise_archive_error(
    flips: list[tuple[int, int]],
    near_headers: bool,
    cut: int | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """spec/extract.md §Errors: members read in CHUNK steps, damaged anywhere, never crash."""
    data = bytearray(_STREAMED_SEED)
    heads = [m.start() for m in re.finditer(rb"PK\x03\x04|PK\x01\x02", data)]
    for pos, value in flips:
        where = heads[pos % len(heads)] + pos % 64 if near_headers else pos
        data[where % len(data)] = value
    if cut is not None:
        data = data[:cut]
    _only_archive_errors(bytes(data), tmp_path_factory.mktemp("mutz"), _FUZZ_LIMITS)


@given(
    st.text(alphabet="ab.-_/\\:~@=+\x00 é", max_size=24)
    | st.text(alphabet="a/", min_size=250, max_size=300)
)
def test_safe_relpath_fast_path_agrees_with_the_full_check(raw: str) -> None:
    """extract.md §Refusals (names): the plain-name shortcut never accepts what the
    full check refuses, and returns exactly what it returns."""
    from hutch.store.fsutil import _checked_relpath

    try:
        full: str | None = _checked_relpath(raw)
    except UnsafePath:
        full = None
    try:
        fast: str | None = safe_relpath(raw)
    except UnsafePath:
        fast = None
    assert fast == full


def _stopped_child(parent: int, timeout: float = 60.0) -> int:
    """The pid of a child of ``parent`` that stopped itself at its HUTCH_STOP_AT point."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent and fields[0] in ("T", "t"):
                return int(stat_file.parent.name)
        time.sleep(0.02)
    pytest.fail("no worker reached its stop point")


def test_a_big_zip_takes_up_the_slot_of_a_finished_add(hutch: Hutch, tmp_path: Path) -> None:
    """§7, cli.md HUTCH_THREADS: `hutch add` of several sources lends the slot of a worker
    that ended to a worker still writing a big zip, which writes the back half of what it
    has left in a part; the manifest is the one a single process commits."""
    archive, _ = _zip_of(_wide_entries(), tmp_path)
    small = tmp_path / "small.tar.gz"
    with tarfile.open(small, "w:gz") as tf:
        tf.add(__file__, arcname="pkg/small.py")
    hutch.ok("add", small)  # present: its worker ends at once, with nothing left to start
    alone = Hutch(tmp_path / "alone", hutch.env)
    expected = alone.ok("add", archive, env={"HUTCH_THREADS": "1"}).strip()

    env = {**hutch.env, "HUTCH_THREADS": "1", "HUTCH_STOP_AT": "add.extracted"}
    cmd = [
        sys.executable,
        "-m",
        "hutch",
        "--store",
        str(hutch.store),
        "add",
        str(small),
        str(archive),
    ]
    with subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE) as proc:
        try:
            worker = _stopped_child(proc.pid)
            parts = list((hutch.store / "staging").glob("*/blobs/part-*"))
            os.kill(worker, signal.SIGCONT)
            out, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 0
    assert len(parts) >= 1, "the big zip was written by one process"
    assert out.split()[1] == expected
    listed = {r["id"]: r["manifest"] for r in json.loads(hutch.ok("ls", "--json"))}
    assert listed[expected] == json.loads(alone.ok("ls", "--json"))[0]["manifest"]
    hutch.ok("verify", "--full")
    assert list((hutch.store / "staging").iterdir()) == []
