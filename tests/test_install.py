"""Install: link modes and their fallbacks, destinations, installed modes (spec/install.md).

Every fallback cause is produced by a real filesystem situation: ext4/tmpfs
have no reflink (EOPNOTSUPP), btrfs refuses to clone a nodatacow object into
an ordinary directory (EINVAL), a store and a DEST on two filesystems (EXDEV),
an object at ext4's 65000-link limit (EMLINK). EPERM (fs.protected_hardlinks,
two real users) is in test_shared.py; a filesystem that refuses chmod is bindfs
--chmod-deny (FUSE). Loop-mounted xfs and btrfs, tmpfs, bind and FUSE mounts
need root; those tests skip cleanly without it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Hutch, objects, tree

ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not ROOT, reason="needs root: mounts filesystems")

# A member of a test archive: (kind, name, payload, mode); payload is bytes for
# a file and the target for a symlink.
Member = tuple[str, str, bytes | str, int]


# -- helpers -----------------------------------------------------------------------
def run(
    h: Hutch, *args: str | os.PathLike[str], umask: int = -1, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `hutch` command, optionally under another umask."""
    return subprocess.run(
        [sys.executable, "-m", "hutch", "--store", str(h.store), *map(str, args)],
        capture_output=True,
        text=True,
        env={**h.env, **(env or {})},
        umask=umask,
        timeout=120,
        check=False,
    )


def ok(h: Hutch, *args: str | os.PathLike[str], umask: int = -1) -> str:
    """Run hutch; it must succeed. Returns stderr, where the install summary is."""
    result = run(h, *args, umask=umask)
    assert result.returncode == 0, f"hutch {args}: exit {result.returncode}\n{result.stderr}"
    return result.stderr


def add(h: Hutch, archive: Path, umask: int = -1) -> str:
    """Add ``archive``; its artifact id."""
    result = run(h, "add", archive, umask=umask)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def make_tar(out: Path, members: list[Member]) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for kind, name, payload, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 1_700_000_000
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                assert isinstance(payload, str)
                info.type = tarfile.SYMTYPE
                info.linkname = payload
                tar.addfile(info)
            else:
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return out


def small_tree(out: Path, *, big: bool = False) -> Path:
    """An artifact with nested dirs, an executable, a symlink; optionally a 1 MiB file."""
    members: list[Member] = [
        ("dir", "pkg", b"", 0o755),
        ("file", "pkg/a.txt", b"alpha\n", 0o644),
        ("file", "pkg/run.sh", b"#!/bin/sh\necho run\n", 0o755),
        ("dir", "pkg/sub", b"", 0o700),
        ("file", "pkg/sub/b.txt", b"beta\n", 0o600),
        ("file", "pkg/sub/tool", b"#!/bin/sh\necho tool\n", 0o700),
        ("symlink", "pkg/link", "sub/b.txt", 0o777),
    ]
    if big:
        # Bigger than btrfs's inline limit, so its extents can be shared.
        members.append(("file", "pkg/big.bin", os.urandom(1 << 20), 0o644))
    return make_tar(out, members)


def contents(root: Path) -> dict[str, tuple[bytes, bool] | str]:
    """Files as (bytes, executable) following symlinks-to-objects, dirs as 'dir'."""
    out: dict[str, tuple[bytes, bool] | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path) and not os.path.isabs(os.readlink(path)):
                out[rel] = f"-> {os.readlink(path)}"
                continue
            out[rel] = (Path(path).read_bytes(), os.access(path, os.X_OK))
    return out


def unzip(archive: Path, into: Path) -> Path:
    subprocess.run(["unzip", "-qq", str(archive), "-d", str(into)], check=True)
    return into


def untar(archive: Path, into: Path) -> Path:
    into.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(into)], check=True)
    return into


def siblings(dest: Path) -> list[str]:
    """Everything beside DEST that an install could have left (its temporary trees)."""
    return sorted(p.name for p in dest.parent.iterdir() if "hutch-tmp" in p.name)


def fs_type(path: Path) -> str:
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return out.stdout.strip()


def can_reflink(directory: Path) -> bool:
    a, b = directory / ".probe-a", directory / ".probe-b"
    a.write_bytes(b"x")
    try:
        with a.open("rb") as src, b.open("wb") as dst:
            fcntl.ioctl(dst.fileno(), 0x40049409, src.fileno())  # FICLONE
    except OSError:
        return False
    finally:
        a.unlink()
        b.unlink(missing_ok=True)
    return True


def shares_extents(path: Path) -> bool:
    """FIEMAP: does any extent of ``path`` carry FIEMAP_EXTENT_SHARED (a reflink)?"""
    count = 32
    buf = bytearray(struct.pack("=QQIIII", 0, 2**64 - 1, 1, 0, count, 0) + bytes(56 * count))
    with path.open("rb") as f:
        fcntl.ioctl(f.fileno(), 0xC020660B, buf)  # FS_IOC_FIEMAP, FIEMAP_FLAG_SYNC
    (mapped,) = struct.unpack_from("=I", buf, 20)
    flags = [struct.unpack_from("=I", buf, 32 + i * 56 + 40)[0] for i in range(mapped)]
    return any(f & 0x2000 for f in flags)


def modes(root: Path) -> dict[str, int]:
    out = {".": os.lstat(root).st_mode & 0o7777}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not os.path.islink(path):
                out[os.path.relpath(path, root)] = st.st_mode & 0o7777
    return out


class Mounts:
    """Loop-mounted filesystems, tmpfs and bind mounts for one test; unmounted after it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.mounted: list[Path] = []

    def _mount(self, args: list[str], at: Path) -> Path:
        at.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", *args, str(at)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount ({' '.join(args)}): {result.stderr.strip()}")
        self.mounted.append(at)
        return at

    def loop(self, fstype: str) -> Path:
        mkfs = {
            "xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"],
            "btrfs": ["mkfs.btrfs", "-q"],
            "ext4": ["mkfs.ext4", "-q", "-F"],
        }[fstype]
        if shutil.which(mkfs[0]) is None:
            pytest.skip(f"{mkfs[0]} is not installed (apt-get install xfsprogs btrfs-progs)")
        self.base.mkdir(parents=True, exist_ok=True)
        image = self.base / f"{fstype}.img"
        with image.open("wb") as f:
            f.truncate(300 << 20)
        made = subprocess.run([*mkfs, str(image)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"{mkfs[0]} failed: {made.stderr.strip()}")
        return self._mount(["-o", "loop", "-t", fstype, str(image)], self.base / fstype)

    def tmpfs(self, options: str = "size=256m", name: str = "tmpfs") -> Path:
        return self._mount(["-t", "tmpfs", "-o", options, "hutch-test"], self.base / name)

    def bind_ro(self, source: Path) -> Path:
        return self._mount(["--bind", "-o", "ro", str(source)], self.base / "ro")

    def no_chmod(self, source: Path) -> Path:
        """``source`` again through FUSE (bindfs), where chmod fails with EPERM, as on vfat."""
        if shutil.which("bindfs") is None:
            pytest.skip("bindfs is not installed (apt-get install bindfs)")
        at = self.base / "no-chmod"
        at.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["bindfs", "--chmod-deny", str(source), str(at)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount bindfs: {result.stderr.strip()}")
        self.mounted.append(at)
        return at

    def unmount_all(self) -> None:
        for at in reversed(self.mounted):
            if subprocess.run(["umount", str(at)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(at)], capture_output=True, check=False)
        self.mounted.clear()


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    m = Mounts(tmp_path / "mnt")
    try:
        yield m
    finally:
        m.unmount_all()


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A directory on a filesystem other than tmp_path's: /dev/shm (tmpfs), else a tmpfs mount."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != tmp_path.stat().st_dev:
        d = Path(tempfile.mkdtemp(prefix="hutch-exdev-", dir=shm))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
        return
    if not ROOT:
        pytest.skip("no second filesystem: /dev/shm is missing and mounting a tmpfs needs root")
    m = Mounts(tmp_path / "mnt")
    try:
        yield m.tmpfs()
    finally:
        m.unmount_all()


# -- link modes ----------------------------------------------------------------------
@pytest.mark.parametrize("link", ["auto", "hardlink", "copy", "symlink"])
def test_every_link_mode_installs_the_same_tree(hutch: Hutch, tmp_path: Path, link: str) -> None:
    """install.md §1: each mode yields the archive's exact tree; each places files its own way."""
    archive = small_tree(tmp_path / "t.tar.gz")
    aid = add(hutch, archive)
    dest = tmp_path / "dest"
    summary = ok(hutch, "install", aid, dest, "--link", link)
    assert contents(dest) == contents(untar(archive, tmp_path / "tar"))
    used = link
    if link == "auto":
        # auto reflinks where the filesystem can, else hardlinks; and says why not reflink.
        used = "reflink" if "4 files (4 reflink)" in summary else "hardlink"
        if used == "hardlink":
            assert re.search(r"4 files \(4 hardlink; no reflink: E\w+ — this filesystem", summary)
    else:
        assert f"4 files (4 {link})" in summary, summary
    by_inode = {p.stat().st_ino for p in objects(hutch.store)}
    for name, want in (("pkg/a.txt", (0o444, 0o644)), ("pkg/run.sh", (0o555, 0o755))):
        path = dest / name
        st = path.stat()
        if used == "hardlink":
            assert st.st_ino in by_inode
            assert st.st_mode & 0o777 == want[0]  # the object's own mode comes with the inode
        elif used == "symlink":
            assert Path(os.readlink(path)).parent.parent == hutch.store / "objects"
            assert st.st_mode & 0o777 == want[0]
        else:
            assert st.st_ino not in by_inode
            assert st.st_nlink == 1
            assert st.st_mode & 0o777 == want[1]


def _assert_reflink_refused(
    h: Hutch, result: subprocess.CompletedProcess[str], dest: Path, first_file: str
) -> None:
    """Exit 6, naming the mode, the file (``first_file`` begins it), the errno and a hint."""
    assert result.returncode == 6, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: cannot install {first_file}"), first
    assert "with --link reflink" in first
    assert re.search(r"\((ENOTSUP|EOPNOTSUPP|ENOTTY|EINVAL)\)", first), first
    assert "caused by:" in result.stderr
    assert str(h.store / "objects") in result.stderr
    assert "hint: reflinks need xfs" in result.stderr
    assert not dest.exists()
    assert siblings(dest) == []


def test_explicit_reflink_without_filesystem_support_fails_clearly(
    hutch: Hutch, tmp_path: Path
) -> None:
    """install.md §2: an explicit mode that cannot work is exit 6 naming mode, file, errno."""
    if can_reflink(tmp_path):
        pytest.skip(f"{fs_type(tmp_path)} at {tmp_path} supports reflink")
    aid = add(hutch, small_tree(tmp_path / "t.tar.gz"))
    dest = tmp_path / "dest"
    result = run(hutch, "install", aid, dest, "--link", "reflink")
    _assert_reflink_refused(hutch, result, dest, f"{dest}/pkg/")


def test_store_and_dest_on_two_filesystems_copy_exdev(
    hutch: Hutch, tmp_path: Path, other_fs: Path
) -> None:
    """install.md §2: EXDEV (another filesystem) sends auto to copy; explicit links fail."""
    aid = add(hutch, small_tree(tmp_path / "t.tar.gz"))
    dest = other_fs / "dest"
    summary = ok(hutch, "install", aid, dest)
    assert (
        "4 files (4 copy; no reflink or hardlink: EXDEV — the store and DEST are on "
        "different filesystems)" in summary
    ), summary
    assert modes(dest) == {
        ".": 0o755,
        "pkg": 0o755,
        "pkg/a.txt": 0o644,
        "pkg/run.sh": 0o755,
        "pkg/sub": 0o755,
        "pkg/sub/b.txt": 0o644,
        "pkg/sub/tool": 0o755,
    }
    assert os.readlink(dest / "pkg/link") == "sub/b.txt"
    for link in ("hardlink", "reflink"):
        failed = run(hutch, "install", aid, other_fs / link, "--link", link)
        assert failed.returncode == 6, failed.stderr
        assert f"with --link {link}: Invalid cross-device link (EXDEV)" in failed.stderr
        assert "hint: hard links and reflinks cannot cross filesystems" in failed.stderr
        assert not (other_fs / link).exists()
    assert sorted(p.name for p in other_fs.iterdir()) == ["dest"]


def _ext_dir(tmp_path: Path, mounts: Mounts) -> Path:
    """A directory on ext2/3/4 (link limit 32000/65000): tmp_path, else a loop-mounted ext4."""
    if fs_type(tmp_path) == "ext2/ext3":
        return tmp_path
    if not ROOT:
        pytest.skip(f"{tmp_path} is {fs_type(tmp_path)}; an ext4 loop mount needs root")
    return mounts.loop("ext4")


def _fill_links(obj: Path, into: Path) -> int:
    """Hard-link ``obj`` until the filesystem says EMLINK; how many links it took."""
    into.mkdir()
    for n in range(70_000):
        try:
            os.link(obj, into / str(n))
        except OSError as exc:
            if exc.errno == errno.EMLINK:
                return n
            raise
    pytest.skip(f"no EMLINK after 70000 links on {fs_type(into)}")


def test_object_at_the_link_limit_is_copied_emlink(tmp_path: Path, mounts: Mounts) -> None:
    """install.md §2: EMLINK (the object has the filesystem's maximum of links) → copy, per file."""
    base = _ext_dir(tmp_path, mounts)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")}
    h = Hutch(base / "store", env)
    aid = add(h, small_tree(tmp_path / "t.tar.gz"))
    full = next(p for p in objects(h.store) if p.read_bytes() == b"alpha\n")
    fill = base / "fill"
    try:
        assert _fill_links(full, fill) > 30_000
        dest = base / "dest"
        summary = ok(h, "install", aid, dest, "--link", "auto")
        assert "4 files (3 hardlink, 1 copy;" in summary, summary
        assert (
            "hardlink refused: EMLINK x1 — the object has as many links as the filesystem "
            "allows" in summary
        )
        assert (dest / "pkg/a.txt").stat().st_nlink == 1
        assert (dest / "pkg/a.txt").stat().st_mode & 0o777 == 0o644  # a copy's mode
        assert (dest / "pkg/sub/b.txt").stat().st_ino == (dest / "pkg/link").stat().st_ino
        refused = run(h, "install", aid, base / "hard", "--link", "hardlink")
        assert refused.returncode == 6
        assert "with --link hardlink: Too many links (EMLINK)" in refused.stderr
        assert not (base / "hard").exists()
        assert siblings(base / "hard") == []
    finally:
        shutil.rmtree(fill, ignore_errors=True)


@pytest.mark.parametrize("umask", [0o077, 0o000])
@pytest.mark.parametrize("link", ["hardlink", "copy"])
def test_installed_modes_whatever_the_umask(
    hutch: Hutch, tmp_path: Path, umask: int, link: str
) -> None:
    """install.md §4: dirs 0755; hardlinks share 0444/0555; copies 0644/0755; any umask."""
    aid = add(hutch, small_tree(tmp_path / "t.tar.gz"), umask=umask)
    dest = tmp_path / "dest"
    ok(hutch, "install", aid, dest, "--link", link, umask=umask)
    ro, rx = (0o444, 0o555) if link == "hardlink" else (0o644, 0o755)
    assert modes(dest) == {
        ".": 0o755,
        "pkg": 0o755,
        "pkg/a.txt": ro,
        "pkg/run.sh": rx,
        "pkg/sub": 0o755,  # 0700 in the archive: an installed tree is for others to use too
        "pkg/sub/b.txt": ro,
        "pkg/sub/tool": rx,
    }


@pytest.mark.parametrize("link", ["auto", "hardlink", "copy", "symlink"])
def test_verify_before_link_in_every_mode(hutch: Hutch, tmp_path: Path, link: str) -> None:
    """store.md §10: damage is healed before linking, whatever the mode (symlink: even with
    --verify none, since a symlink cannot notice a missing object)."""
    archive = small_tree(tmp_path / "t.tar.gz")
    aid = add(hutch, archive)
    found = objects(hutch.store)
    found[0].unlink()
    victim = found[1]
    victim.chmod(0o644)
    with victim.open("r+b") as f:
        f.truncate(1)
    dest = tmp_path / "dest"
    args = ["--verify", "none"] if link == "symlink" else []
    summary = ok(hutch, "install", aid, dest, "--link", link, *args)
    assert "repaired 2 damaged file(s) first" in summary
    assert contents(dest) == contents(untar(archive, tmp_path / "tar"))
    hutch.ok("verify", "--full")


# -- a big tree, built in parts by several processes (install.md §5) ----------------
# Names that sort between a directory and its contents (`-`, `.`, `+` and ` `
# sort before `/`), as a wheel has them: numpy/, numpy-2.1.dist-info/, numpy.libs/.
_NAMES = ["pkg", "pkg-1.0.dist-info", "pkg.libs", "pkg+x", "pkg a", "pkg0", "pkg/", "z"]


def _big_tree(out: Path) -> Path:
    """More entries than install builds in one process, under names that sort awkwardly."""
    members: list[Member] = []
    for top in ("pkg", "pkg-1.0.dist-info", "pkg.libs", "pkg+x", "pkg a", "pkg0", "z"):
        members.append(("dir", top, b"", 0o755))
        for d in ("sub", "sub-2", "sub.d", "sub/deep", "sub/deep-er", "sub/deep/er"):
            members.append(("dir", f"{top}/{d}", b"", 0o755))
            members += [
                ("file", f"{top}/{d}/f{i:03d}{'.sh' if i % 7 == 0 else ''}",
                 f"{top}/{d}/{i}\n".encode(), 0o755 if i % 7 == 0 else 0o644)
                for i in range(30)
            ]  # fmt: skip
        members.append(("symlink", f"{top}/sub/deep/link", "../f001", 0o777))
    assert len(members) > 1000  # install._PARTS_FROM
    return make_tar(out, members)


def test_shared_dirs_are_every_directory_a_later_part_needs() -> None:
    """install._build: a part's entries need only directories of their own part or ``made``.

    Every split of every prefix of an awkwardly named tree, into 2 to 5 parts.
    """
    from hutch.store.install import _shared_dirs
    from hutch.store.manifest import Entry, path_order
    from hutch.store.parallel import split

    paths = {"/".join(p) for a in _NAMES for b in ["", *_NAMES] for p in [[a, b] if b else [a]]}
    paths = {p.strip("/").replace("//", "/") for p in paths}
    dirs = {p.rsplit("/", 1)[0] for p in paths if "/" in p}
    entries = sorted(
        (Entry(p, "dir" if p in dirs else "file") for p in paths | dirs),
        key=lambda e: path_order(e.path),
    )
    for n in range(2, len(entries) + 1):
        tree_ = entries[:n]
        for count in range(2, 6):
            parts = split(tree_, count)
            made = _shared_dirs(tree_, parts)
            assert made <= {e.path for e in tree_ if e.type == "dir"}
            for part in parts:
                here = set(made)
                for e in part:
                    parent = e.path.rpartition("/")[0]
                    assert not parent or parent in here, (e.path, [x.path for x in part])
                    if e.type == "dir":
                        here.add(e.path)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_big_tree_built_in_parts_is_the_same_tree(
    hutch: Hutch, tmp_path: Path, threads: str
) -> None:
    """install.md §5: however many processes build it, the tree is the archive's."""
    archive = _big_tree(tmp_path / "big.tar.gz")
    aid = add(hutch, archive)
    dest = tmp_path / "dest"
    result = run(hutch, "install", aid, dest, "--link", "hardlink", env={"HUTCH_THREADS": threads})
    assert result.returncode == 0, result.stderr
    assert re.search(r": 1260 files \(1260 hardlink\)", result.stderr), result.stderr
    assert contents(dest) == contents(untar(archive, tmp_path / "tar"))
    assert siblings(dest) == []


def test_a_big_tree_takes_up_the_slot_of_a_finished_install(
    hutch: Hutch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lone_thread: None
) -> None:
    """install.md §5: several installs build a tree per worker; once the small tree's
    worker has ended, its slot goes to the big tree still being built, whose back half a
    helper builds, its directories made first; the tree is the archive's."""
    from hutch.store import install as installing
    from hutch.store.install import InstallOptions, InstallResult, install_all
    from hutch.store.store import Store

    archive = _big_tree(tmp_path / "big.tar.gz")
    big = add(hutch, archive)
    small = add(hutch, make_tar(tmp_path / "small.tar.gz", [("file", "f", b"f\n", 0o644)]))
    monkeypatch.setenv("HUTCH_THREADS", "2")
    log = tmp_path / "parts"
    real_place, real_part = installing._place, installing._build_part

    def slow_place(*args: Any, **kwargs: Any) -> None:
        # In steps of 64 entries: the small tree ends while the big one has most to go.
        if len(args[1]) == 64:
            time.sleep(0.02)
        real_place(*args, **kwargs)

    def logged_part(*args: Any, **kwargs: Any) -> Any:
        with log.open("a") as f:  # only a helper builds a part of a tree alone
            f.write(f"{os.getpid()} {len(args[1])}\n")
        return real_part(*args, **kwargs)

    monkeypatch.setattr(installing, "_place", slow_place)
    monkeypatch.setattr(installing, "_build_part", logged_part)
    store = Store.open(hutch.store)
    with store.journal.read() as txn:
        records = [store.resolve(txn, aid) for aid in (small, big)]
    pairs = [(r, tmp_path / name) for r, name in zip(records, ("s", "b"), strict=True) if r]
    results = install_all(store, pairs, InstallOptions(link="hardlink"))
    assert [type(r) for r in results] == [InstallResult, InstallResult], results
    parts = [line.split() for line in log.read_text().splitlines()]
    assert parts, "no helper built part of the big tree"
    assert all(int(pid) != os.getpid() for pid, _ in parts)
    assert contents(tmp_path / "b") == contents(untar(archive, tmp_path / "tar"))
    assert contents(tmp_path / "s") == {"f": (b"f\n", False)}


def test_damage_in_every_part_is_healed(hutch: Hutch, tmp_path: Path) -> None:
    """store.md §10: objects found damaged by the worker processes are healed, then linked."""
    archive = _big_tree(tmp_path / "big.tar.gz")
    aid = add(hutch, archive)
    by_name = {p.read_bytes(): p for p in objects(hutch.store)}
    first = by_name[b"pkg/sub/0\n"]  # in the first part, built by a forked child
    last = by_name[b"z/sub/deep/er/29\n"]  # in the last, built by the parent itself
    first.unlink()
    last.chmod(0o644)
    last.write_bytes(b"z")
    dest = tmp_path / "dest"
    result = run(hutch, "install", aid, dest, env={"HUTCH_THREADS": "2"})
    assert result.returncode == 0, result.stderr
    assert "repaired 2 damaged file(s) first" in result.stderr
    assert contents(dest) == contents(untar(archive, tmp_path / "tar"))


def test_link_failure_in_a_worker_is_reported_like_anywhere_else(
    hutch: Hutch, tmp_path: Path
) -> None:
    """install.md §2: an explicit mode refused inside a worker process: exit 6, mode, errno."""
    if can_reflink(tmp_path):
        pytest.skip(f"{fs_type(tmp_path)} at {tmp_path} supports reflink")
    aid = add(hutch, _big_tree(tmp_path / "big.tar.gz"))
    dest = tmp_path / "dest"
    result = run(hutch, "install", aid, dest, "--link", "reflink", env={"HUTCH_THREADS": "2"})
    # The first file in path order: the first part's, built by a forked child.
    _assert_reflink_refused(hutch, result, dest, f"{dest}/pkg a/sub-2/f000.sh with")


@pytest.mark.parametrize(("link", "inodes"), [("auto", 60), ("symlink", 60), ("auto", 4)])
def test_a_full_dest_filesystem_names_the_path_in_full(
    hutch: Hutch, tmp_path: Path, mounts: Mounts, link: str, inodes: int
) -> None:
    """install.md §2: out of inodes on DEST's filesystem (a copy, a symlink or, with 4
    inodes, a directory that cannot be made): exit 6, ENOSPC and the full path of what
    could not be made (the tree is built from directory descriptors, link.Dirs), a
    hint, and nothing left behind."""
    aid = add(hutch, _big_tree(tmp_path / "big.tar.gz"))
    full = mounts.tmpfs(f"size=64m,nr_inodes={inodes}", "full")
    dest = full / "dest"
    result = run(hutch, "install", aid, dest, "--link", link, env={"HUTCH_THREADS": "2"})
    assert result.returncode == 6, result.stderr
    cause = re.search(r"caused by: No space left on device \(ENOSPC\): (.*)", result.stderr)
    assert cause, result.stderr
    built = re.escape(f"{full}/.dest.hutch-tmp-")
    assert re.search(rf"(^| -> ){built}\d+-[0-9a-f]+/pkg", cause[1]), cause[1]
    assert "hint: free space on that filesystem" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(full.iterdir()) == []


# -- destinations -------------------------------------------------------------------
def _versioned(tmp_path: Path, version: int, files: int = 400) -> Path:
    members: list[Member] = [("dir", "v", b"", 0o755)]
    members += [("file", f"v/f{i:05d}", f"{version}:{i}\n".encode(), 0o644) for i in range(files)]
    members.append(("file", "v/VERSION", f"{version}\n".encode() * 1000, 0o644))
    return make_tar(tmp_path / f"v{version}.tar.gz", members)


def test_force_swaps_atomically_and_leaves_nothing(hutch: Hutch, tmp_path: Path) -> None:
    """store.md §11: readers of DEST see the old tree or the new one, never neither or a mix."""
    one = add(hutch, _versioned(tmp_path, 1))
    two = add(hutch, _versioned(tmp_path, 2))
    dest = tmp_path / "out" / "dest"
    ok(hutch, "install", one, dest)
    seen: set[str] = set()
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                text = (dest / "v" / "VERSION").read_text()
            except OSError as exc:
                problems.append(f"{exc}")
                continue
            if text not in ("1\n" * 1000, "2\n" * 1000):
                problems.append(f"torn read: {text[:10]!r}")
            seen.add(text[:2])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for aid in (two, one, two):
            inode = dest.stat().st_ino
            ok(hutch, "install", aid, dest, "--force")
            assert dest.stat().st_ino != inode
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert seen == {"1\n", "2\n"}
    assert (dest / "v" / "VERSION").read_text().startswith("2\n")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest"]


def test_force_replaces_a_file_or_a_symlink(hutch: Hutch, tmp_path: Path) -> None:
    """store.md §11: --force replaces whatever DEST is; a symlink's target is left alone."""
    aid = add(hutch, small_tree(tmp_path / "t.tar.gz"))
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("mine")
    as_link = tmp_path / "as-link"
    as_link.symlink_to(target)
    as_file = tmp_path / "as-file"
    as_file.write_text("old")
    for dest in (as_link, as_file):
        assert run(hutch, "install", aid, dest).returncode == 2
        ok(hutch, "install", aid, dest, "--force")
        assert not dest.is_symlink()
        assert (dest / "pkg/a.txt").read_bytes() == b"alpha\n"
        assert siblings(dest) == []
    assert (target / "keep").read_text() == "mine"


def test_failed_force_keeps_the_old_tree_and_leaves_nothing(hutch: Hutch, tmp_path: Path) -> None:
    """store.md §11: a failing install changes nothing, and nothing is left beside DEST."""
    if can_reflink(tmp_path):
        pytest.skip("this filesystem has reflink, so --link reflink would not fail")
    aid = add(hutch, small_tree(tmp_path / "t.tar.gz"))
    dest = tmp_path / "out" / "dest"
    ok(hutch, "install", aid, dest)
    before = (dest.stat().st_ino, tree(dest))
    assert run(hutch, "install", aid, dest, "--force", "--link", "reflink").returncode == 6
    assert (dest.stat().st_ino, tree(dest)) == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest"]


@pytest.mark.parametrize("point", ["install.built", "install.swapped"])
def test_killed_install_leaves_dest_whole_and_next_install_cleans(
    hutch: Hutch, tmp_path: Path, point: str
) -> None:
    """store.md §11 crash table: kill -9 while building or after the swap."""
    one = add(hutch, _versioned(tmp_path, 1, files=10))
    two = add(hutch, _versioned(tmp_path, 2, files=10))
    dest = tmp_path / "out" / "dest"
    ok(hutch, "install", one, dest)
    crashed = run(hutch, "install", two, dest, "--force", env={"HUTCH_CRASH_AT": point})
    assert crashed.returncode == -9
    version = (dest / "v/VERSION").read_text()[:2]
    assert version == ("1\n" if point == "install.built" else "2\n")
    assert len(siblings(dest)) == 1  # the half-built tree, or the old one
    ok(hutch, "install", one, dest, "--force")
    assert siblings(dest) == []
    assert (dest / "v/VERSION").read_text()[:2] == "1\n"


def _project(tmp_path: Path) -> Path:
    """An sdist-like tree: one leading directory, symlinks within and across subtrees."""
    return make_tar(
        tmp_path / "proj.tar.gz",
        [
            ("dir", "proj-1.0", b"", 0o755),
            ("file", "proj-1.0/README", b"readme\n", 0o644),
            ("symlink", "proj-1.0/docs", "share/data", 0o777),
            ("dir", "proj-1.0/bin", b"", 0o755),
            ("file", "proj-1.0/bin/run", b"#!/bin/sh\n", 0o755),
            ("dir", "proj-1.0/share", b"", 0o755),
            ("dir", "proj-1.0/share/data", b"", 0o755),
            ("file", "proj-1.0/share/data/x.txt", b"x\n", 0o644),
            ("dir", "proj-1.0/src", b"", 0o755),
            ("dir", "proj-1.0/src/pkg", b"", 0o755),
            ("file", "proj-1.0/src/pkg/__init__.py", b"init\n", 0o644),
            ("symlink", "proj-1.0/src/pkg/self", "__init__.py", 0o777),
            ("symlink", "proj-1.0/src/pkg/up", "../pkg/__init__.py", 0o777),
        ],
    )


def _sneaky(tmp_path: Path) -> Path:
    """top/a/b/l -> x/../.. normalises to top/a, but x -> ../../c, so it resolves to ''."""
    return make_tar(
        tmp_path / "sneaky.tar.gz",
        [
            ("dir", "top", b"", 0o755),
            ("dir", "top/a", b"", 0o755),
            ("dir", "top/a/b", b"", 0o755),
            ("dir", "top/c", b"", 0o755),
            ("symlink", "top/a/b/x", "../../c", 0o777),
            ("symlink", "top/a/b/l", "x/../..", 0o777),
        ],
    )


@pytest.mark.parametrize("n", [1, 2])
def test_strip_components_matches_gnu_tar(hutch: Hutch, tmp_path: Path, n: int) -> None:
    """cli.md install: --strip-components N installs what `tar --strip-components=N` extracts."""
    archive = _project(tmp_path)
    aid = add(hutch, archive)
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    subprocess.run(
        ["tar", "-xzf", str(archive), "-C", str(gnu), f"--strip-components={n}"], check=True
    )
    ok(hutch, "install", aid, tmp_path / "dest", "--strip-components", str(n))
    assert tree(tmp_path / "dest") == tree(gnu)


def test_subdir_and_strip_reroot_the_tree(hutch: Hutch, tmp_path: Path) -> None:
    """install.md §3: --subdir picks a directory, then --strip-components strips inside it."""
    aid = add(hutch, _project(tmp_path))
    ok(hutch, "install", aid, tmp_path / "share", "--subdir", "proj-1.0/share/")
    assert contents(tmp_path / "share") == {"data": "dir", "data/x.txt": (b"x\n", False)}
    ok(
        hutch,
        "install",
        aid,
        tmp_path / "x",
        "--subdir",
        "./proj-1.0//share",
        "--strip-components",
        "1",
    )
    assert contents(tmp_path / "x") == {"x.txt": (b"x\n", False)}
    ok(hutch, "install", aid, tmp_path / "src", "--subdir", "proj-1.0/src", "--link", "copy")
    assert contents(tmp_path / "src") == {
        "pkg": "dir",
        "pkg/__init__.py": (b"init\n", False),
        "pkg/self": "-> __init__.py",
        "pkg/up": "-> ../pkg/__init__.py",
    }
    assert (tmp_path / "src/pkg/up").read_bytes() == b"init\n"
    assert siblings(tmp_path / "src") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--subdir", "proj-1.0/src/pkg"],
            (
                "symlink 'proj-1.0/src/pkg/up' -> '../pkg/__init__.py' points outside what "
                "--subdir proj-1.0/src/pkg installs"
            ),
        ),
        (
            ["--subdir", "proj-1.0/src", "--strip-components", "1"],
            (
                "symlink 'proj-1.0/src/pkg/up' -> '../pkg/__init__.py' points outside what "
                "--subdir proj-1.0/src --strip-components 1 installs"
            ),
        ),
        (["--subdir", "top"], "symlink 'top/a/b/l' -> 'x/../..' points outside"),
        (["--subdir", "proj-1.0/README"], "--subdir 'proj-1.0/README' is a file in this artifact"),
        (["--subdir", "proj-1.0/docs"], "--subdir 'proj-1.0/docs' is a symlink in this artifact"),
        (["--subdir", "nope"], "--subdir 'nope' is not in this artifact"),
        (["--subdir", "../etc"], "invalid --subdir '../etc': '..' component"),
        (["--strip-components", "9"], "--strip-components 9 leaves nothing to install"),
    ],
)
def test_subdir_and_strip_refusals(
    hutch: Hutch, tmp_path: Path, args: list[str], message: str
) -> None:
    """install.md §3: a re-rooted tree must exist, be a directory, and stay inside itself."""
    archive = _sneaky(tmp_path) if "top" in args else _project(tmp_path)
    aid = add(hutch, archive)
    dest = tmp_path / "dest"
    result = run(hutch, "install", aid, dest, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not dest.exists()
    assert siblings(dest) == []


def test_strip_components_collisions_merge_dirs_refuse_files(hutch: Hutch, tmp_path: Path) -> None:
    """install.md §3: two leading dirs stripped onto one path: dirs merge, files are refused."""
    merge = make_tar(
        tmp_path / "m.tar.gz",
        [
            ("dir", "a", b"", 0o755),
            ("dir", "a/common", b"", 0o755),
            ("file", "a/common/1", b"1", 0o644),
            ("dir", "b", b"", 0o755),
            ("file", "b/only-b", b"b", 0o644),
            ("dir", "b/common", b"", 0o755),
            ("file", "b/common/2", b"2", 0o644),
        ],
    )
    aid = add(hutch, merge)
    ok(hutch, "install", aid, tmp_path / "merged", "--strip-components", "1")
    assert sorted(contents(tmp_path / "merged")) == ["common", "common/1", "common/2", "only-b"]
    clash = make_tar(
        tmp_path / "c.tar.gz",
        [("file", "a/x", b"a", 0o644), ("file", "b/x", b"b", 0o644)],
    )
    aid = add(hutch, clash)
    result = run(hutch, "install", aid, tmp_path / "clash", "--strip-components", "1")
    assert result.returncode == 2
    assert "--strip-components 1 puts both 'a/x' and 'b/x' at 'x'" in result.stderr


def test_dead_temporary_trees_are_removed_even_read_only_ones(hutch: Hutch, tmp_path: Path) -> None:
    """store.md §11: a killed install's tree (even one with a read-only dir) goes next time."""
    aid = add(hutch, small_tree(tmp_path / "t.tar.gz"))
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".dest.hutch-tmp-999999999-abcd"  # pid beyond pid_max: never alive
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "f").write_text("x")
    (dead / "sub").chmod(0o555)
    ok(hutch, "install", aid, out / "dest")
    assert sorted(p.name for p in out.iterdir()) == ["dest"]
    assert out.stat().st_mode & 0o777 == 0o755  # never chmod'ed outside the dead tree


# -- reflink filesystems and read-only stores (root) ---------------------------------------
@pytest.mark.root
@root_only
@pytest.mark.parametrize("fstype", ["xfs", "btrfs"])
def test_reflink_on_xfs_and_btrfs(fstype: str, mounts: Mounts, tmp_path: Path) -> None:
    """install.md §1: auto reflinks where the filesystem can; clones are 0644/0755, CoW."""
    base = mounts.loop(fstype)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")}
    h = Hutch(base / "store", env)
    aid = add(h, small_tree(tmp_path / "t.tar.gz", big=True))
    for link in ("auto", "reflink"):
        dest = base / f"dest-{link}"
        summary = ok(h, "install", aid, dest, "--link", link, umask=0o077)
        assert "5 files (5 reflink)" in summary, summary
        assert shares_extents(dest / "pkg/big.bin")
        assert (dest / "pkg/big.bin").stat().st_nlink == 1
        assert modes(dest)["pkg/big.bin"] == 0o644
        assert modes(dest)["pkg/run.sh"] == 0o755
        assert modes(dest)["pkg/sub"] == 0o755
    # Copy-on-write: writing an installed clone leaves the store's object intact.
    with (base / "dest-auto/pkg/big.bin").open("r+b") as f:
        f.write(b"changed")
    h.ok("verify", "--full")


@pytest.mark.root
@root_only
def test_btrfs_nodatacow_store_cannot_clone_einval(mounts: Mounts, tmp_path: Path) -> None:
    """install.md §2: EINVAL from FICLONE (nodatacow object, ordinary DEST) → hardlink."""
    base = mounts.loop("btrfs")
    (base / "store").mkdir()
    # New files inherit nodatacow from their directory; DEST's directory has it not.
    subprocess.run(["chattr", "+C", str(base / "store")], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")}
    h = Hutch(base / "store", env)
    aid = add(h, small_tree(tmp_path / "t.tar.gz", big=True))
    summary = ok(h, "install", aid, base / "dest")
    assert (
        "5 files (5 hardlink; no reflink: EINVAL — the filesystem refused to clone these files)"
        in summary
    ), summary
    refused = run(h, "install", aid, base / "clone", "--link", "reflink")
    assert refused.returncode == 6
    assert "with --link reflink: Invalid argument (EINVAL)" in refused.stderr
    assert "nodatacow" in refused.stderr
    assert not (base / "clone").exists()


@pytest.mark.root
@root_only
def test_install_from_a_read_only_bind_mount(
    hutch: Hutch, wheels: list[Path], mounts: Mounts, tmp_path: Path
) -> None:
    """permissions.md §5: intact artifacts install from a read-only store; repairs say why not."""
    aid = add(hutch, wheels[0])
    ro = Hutch(mounts.bind_ro(hutch.store), hutch.env)
    assert not os.access(ro.store, os.W_OK)
    journal = hutch.store / "journal" / "data.mdb"
    before = hashlib.sha256(journal.read_bytes()).hexdigest()
    # Another mount point: link(2) says EXDEV even on the same filesystem.
    summary = ok(ro, "install", aid, tmp_path / "d1")
    assert "no hardlink: EXDEV — the store and DEST are on different filesystems" in summary
    assert contents(tmp_path / "d1") == contents(unzip(wheels[0], tmp_path / "unzip"))
    victim = objects(hutch.store)[0]
    victim.chmod(0o644)
    victim.write_bytes(b"")
    damaged = run(ro, "install", aid, tmp_path / "d2")
    assert damaged.returncode == 3, damaged.stderr
    assert "could not be repaired: the store at" in damaged.stderr
    assert "is read-only for this user" in damaged.stderr
    assert "hint: ask the store's owner to run `hutch verify --repair`" in damaged.stderr
    assert not (tmp_path / "d2").exists()
    assert siblings(tmp_path / "d2") == []
    added = run(ro, "add", wheels[-1])
    assert added.returncode == 6
    assert "read-only" in added.stderr
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == before


@root_only
def test_a_copy_onto_a_filesystem_that_refuses_chmod_leaves_nothing(
    hutch: Hutch, mounts: Mounts, tmp_path: Path
) -> None:
    """install.md §4: under umask 077 a copy needs fchmod; where the filesystem refuses it
    (vfat, FUSE), the install fails naming the file and EPERM, and the file it created is
    gone with its descriptor (link._open_dst)."""
    from hutch.store.link import Linker, opened

    aid = add(hutch, small_tree(tmp_path / "t.tar.gz"), umask=0o077)
    (tmp_path / "under").mkdir()
    root = mounts.no_chmod(tmp_path / "under")
    failed = run(hutch, "install", aid, root / "dest", "--link", "copy", umask=0o077)
    assert failed.returncode == 6, failed.stderr
    assert "Operation not permitted (EPERM)" in failed.stderr
    assert not (root / "dest").exists()
    assert siblings(root / "dest") == []

    # The command fails at the temporary root's chmod (and removes that root), so
    # _open_dst's own cleanup is shown here, by one copy.
    key, obj = next((p.name, p) for p in objects(hutch.store))
    src = f"{obj.parent.name}/{key}"
    fds = len(os.listdir("/proc/self/fd"))
    with opened(str(hutch.store / "objects"), str(root)) as at, pytest.raises(PermissionError):
        Linker("copy").link_many([(key, src, "a.txt", False, obj.stat().st_size)], at)
    assert os.listdir(root) == []
    assert len(os.listdir("/proc/self/fd")) == fds
