"""Shared multi-user stores and read-only stores, with real Unix users (spec/permissions.md).

Root only: each test creates its own group and users (unique names, removed
afterwards) and runs hutch as them with runuser. The default python lives
under /root (0700), so the users run a venv made from Debian's /usr/bin/python3
(3.11.2) with hutch pip-installed into it, cached under /tmp by a hash of the
sources. Everything lives under a /tmp directory every user can traverse.
"""

from __future__ import annotations

import fcntl
import grp
import hashlib
import io
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import tree

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates Unix users and groups"),
]

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "cli", "store", "fetch", "extract")
SYSTEM_PYTHON = Path("/usr/bin/python3")
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


def _protected_hardlinks() -> bool:
    try:
        return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    except OSError:
        return False


PROTECTED = _protected_hardlinks()


# -- an interpreter every user can run -----------------------------------------------
def _sources_digest() -> str:
    h = hashlib.sha256()
    for top in SOURCES:
        path = REPO / top
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _run(args: list[str], umask: int = -1) -> None:
    result = subprocess.run(args, capture_output=True, text=True, umask=umask, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)}: exit {result.returncode}\n{result.stderr[-3000:]}")


@pytest.fixture(scope="session")
def user_hutch() -> Path:
    """`hutch` in a venv of /usr/bin/python3 under /tmp: deps once, hutch per source change."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3 to make an interpreter other users can run")
    if not Path(RUNUSER).exists() or shutil.which("useradd") is None:
        pytest.skip("runuser and useradd are needed to run hutch as other users")
    deps = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = Path(f"/tmp/hutch-users-venv-{deps}")
    marker = venv / f".hutch-src-{_sources_digest()}"
    with open("/tmp/hutch-users-venv.lock", "a+b") as lock:
        # Two test runs at once (several engineers, one machine) share the venv.
        fcntl.lockf(lock, fcntl.LOCK_EX)
        if not (venv / "bin" / "python").exists():
            shutil.rmtree(venv, ignore_errors=True)
            _run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], umask=0o022)
            # setuptools for --no-build-isolation below; deps of hutch from its metadata.
            _run([str(venv / "bin/pip"), "install", "-q", "setuptools>=68", str(REPO)], umask=0o022)
        if not marker.exists():
            # Install a copy of the sources, so no build/ or egg-info lands in the repo.
            with tempfile.TemporaryDirectory(prefix="hutch-src-") as src:
                for top in SOURCES:
                    path = REPO / top
                    if path.is_dir():
                        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
                        shutil.copytree(path, Path(src) / top, ignore=ignore)
                    else:
                        shutil.copy(path, Path(src) / top)
                pip = [str(venv / "bin/pip"), "install", "-q", "--no-deps", "--force-reinstall"]
                _run([*pip, "--no-build-isolation", src], umask=0o022)
            for old in venv.glob(".hutch-src-*"):
                old.unlink()
            marker.touch()
    return venv / "bin" / "hutch"


# -- users, a group, a place they can all reach ----------------------------------------
@dataclass(frozen=True)
class User:
    name: str
    uid: int


@dataclass
class Site:
    """A group, its members alice and bob, carol outside it, and a directory for them."""

    group: str
    gid: int
    alice: User
    bob: User
    carol: User
    base: Path
    hutch: Path

    def run(
        self, user: User, *args: str | os.PathLike[str], umask: int = 0o022, store: Path
    ) -> subprocess.CompletedProcess[str]:
        """`hutch --store STORE ARGS` as ``user`` under ``umask``."""
        cmd = [
            RUNUSER,
            "-u",
            user.name,
            "--",
            "sh",
            "-c",
            f'umask {umask:03o}; exec "$0" "$@"',
            str(self.hutch),
            "--store",
            str(store),
            *map(str, args),
        ]
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.base),
            "HUTCH_HTTP_BACKOFF": "0.01",
        }
        return subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=self.base, timeout=120, check=False
        )

    def ok(
        self, user: User, *args: str | os.PathLike[str], umask: int = 0o022, store: Path
    ) -> subprocess.CompletedProcess[str]:
        result = self.run(user, *args, umask=umask, store=store)
        assert result.returncode == 0, (
            f"{user.name}: hutch {' '.join(map(str, args))}: exit {result.returncode}\n"
            f"{result.stderr}"
        )
        return result

    def home(self, user: User, name: str) -> Path:
        """A directory owned by ``user`` (their install destinations go there)."""
        path = self.base / name
        path.mkdir(mode=0o755)
        os.chown(path, user.uid, -1)
        return path


@pytest.fixture
def site(user_hutch: Path) -> Iterator[Site]:
    tag = secrets.token_hex(3)
    group = f"hutchg{tag}"
    names = [f"ha{tag}", f"hb{tag}", f"hc{tag}"]
    created: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="hutch-shared-", dir="/tmp"))
    try:
        _run(["groupadd", group])
        for name in names:
            # -N: the primary group is `users`, not the shared one, so every file
            # that ends up in the store's group got there by setgid inheritance.
            extra = ["-G", group] if name != names[2] else []
            _run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", *extra, name])
            created.append(name)
        base.chmod(0o755)  # mkdtemp makes it 0700
        users = [User(n, pwd.getpwnam(n).pw_uid) for n in names]
        alice, bob, carol = users
        yield Site(group, grp.getgrnam(group).gr_gid, alice, bob, carol, base, user_hutch)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for name in created:
            subprocess.run(["userdel", name], capture_output=True, check=False)
        subprocess.run(["groupdel", group], capture_output=True, check=False)


# -- archives ------------------------------------------------------------------------
def _wheels() -> list[Path]:
    import ensurepip

    found = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("*.whl"))
    if len(found) < 2:
        pytest.skip("this Python does not bundle two ensurepip wheels")
    return found


def _readable_copy(src: Path, site: Site) -> Path:
    dst = site.base / src.name
    shutil.copy(src, dst)
    dst.chmod(0o644)
    return dst


def _tar_with_object_in(prefixes: set[str], out: Path) -> Path:
    """A one-file archive whose object lands in one of the fan-out directories ``prefixes``."""
    import blake3

    n = 0
    while True:
        data = f"landing in a re-made fan-out directory, try {n}\n".encode()
        if blake3.blake3(data).hexdigest()[:2] in prefixes:
            break
        n += 1
    with tarfile.open(out, "w:gz") as tar:
        info = tarfile.TarInfo("land/file.txt")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    out.chmod(0o644)
    return out


def _unzip(archive: Path, into: Path) -> dict[str, tuple[str, bytes | str, bool]]:
    subprocess.run(["unzip", "-qq", str(archive), "-d", str(into)], check=True)
    return tree(into)


def _mode(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_gid


def _store_dirs(store: Path) -> list[Path]:
    dirs = [store, store / "manifests", store / "staging", store / "locks", store / "journal"]
    return [*dirs, store / "objects", *sorted((store / "objects").iterdir())]


# -- tests -----------------------------------------------------------------------------
def test_init_shared_whatever_the_umask(site: Site) -> None:
    """permissions.md §2: `init --shared` makes 2775 group dirs, 0664 journal and locks,
    whatever the umask (077 here)."""
    shared = site.base / "shared"
    shared.mkdir()
    os.chown(shared, 0, site.gid)
    shared.chmod(0o2775)
    store = shared / "store"
    result = site.ok(site.alice, "init", "--shared", site.group, umask=0o077, store=store)
    assert f"shared with group {site.group}" in result.stderr
    for d in _store_dirs(store):
        assert _mode(d) == (0o2775, site.gid), d
    for f in ("journal/data.mdb", "journal/lock.mdb", "locks/gc.lock"):
        assert _mode(store / f) == (0o664, site.gid), f
    for f in ("hutch-store.json", "CACHEDIR.TAG"):
        assert _mode(store / f) == (0o444, site.gid), f
    assert json.loads((store / "hutch-store.json").read_text())["shared_group"] == site.group
    # Not a member: refused, naming the group; an unknown group is a usage error.
    outsider = site.run(site.carol, "init", "--shared", site.group, store=site.base / "c")
    assert outsider.returncode == 6
    assert f"not a member of group {site.group!r}" in outsider.stderr
    unknown = site.run(site.alice, "init", "--shared", "no-such-group-x", store=store)
    assert unknown.returncode == 2


def test_two_members_add_install_and_repair_each_others_artifacts(site: Site) -> None:
    """permissions.md §2-3: alice adds, bob installs (hardlink refused → copy) and adds,
    alice installs bob's; a cleaner deletes objects and fan-out dirs, alice repairs, and bob
    publishes into the directories alice re-made. Both with umask 077/022."""
    pip, setuptools = (_readable_copy(w, site) for w in _wheels()[:2])
    store = site.base / "store"
    site.base.chmod(0o1777)  # like /tmp: alice may create the store here
    site.ok(site.alice, "init", "--shared", site.group, umask=0o077, store=store)
    site.base.chmod(0o755)
    x = site.ok(site.alice, "add", pip, umask=0o077, store=store).stdout.strip()
    objects = [p for p in (store / "objects").rglob("*") if p.is_file()]
    assert objects
    assert {_mode(p)[1] for p in objects} == {site.gid}  # setgid, not alice's `users`
    assert {_mode(p)[0] for p in objects} <= {0o444, 0o555}

    # bob installs alice's artifact: the kernel refuses hard links to her files.
    bob_out = site.home(site.bob, "bob-out")
    result = site.ok(site.bob, "install", x, bob_out / "pip", store=store)
    n = len([p for p in (bob_out / "pip").rglob("*") if p.is_file()])
    if PROTECTED:
        assert re.search(
            rf"{n} files \({n} copy; no reflink: \w+ — this filesystem has no reflink; hardlink "
            rf"refused: EPERM x{n} — another user's objects under fs\.protected_hardlinks\)",
            result.stderr,
        ) or (f"{n} reflink" in result.stderr), result.stderr
        installed = bob_out / "pip" / "pip" / "__init__.py"
        assert installed.stat().st_uid == site.bob.uid
        assert stat.S_IMODE(installed.stat().st_mode) == 0o644
        refused = site.run(
            site.bob, "install", x, bob_out / "hard", "--link", "hardlink", store=store
        )
        assert refused.returncode == 6
        assert "with --link hardlink: Operation not permitted (EPERM)" in refused.stderr
        assert "fs.protected_hardlinks" in refused.stderr
        assert sorted(p.name for p in bob_out.iterdir()) == ["pip"]
    assert tree(bob_out / "pip") == _unzip(pip, site.base / "unzip-pip")

    # bob adds; alice installs bob's artifact.
    y = site.ok(site.bob, "add", setuptools, umask=0o022, store=store).stdout.strip()
    alice_out = site.home(site.alice, "alice-out")
    result = site.ok(site.alice, "install", y, alice_out / "st", umask=0o077, store=store)
    if PROTECTED:
        assert "hardlink refused: EPERM x" in result.stderr
    assert tree(alice_out / "st") == _unzip(setuptools, site.base / "unzip-st")
    for f in ("journal/data.mdb", "journal/lock.mdb"):
        assert _mode(store / f) == (0o664, site.gid), f

    # A cleaner (root, like tmpwatch plus an empty-directory sweep) deletes objects
    # and whole fan-out directories; alice repairs, re-making them for the group.
    victims = sorted({p.parent for p in objects})[:3]
    for d in victims:
        shutil.rmtree(d)
    assert site.run(site.bob, "verify", x, store=store).returncode == 3
    site.ok(site.alice, "verify", "--repair", umask=0o077, store=store)
    for d in victims:
        st = d.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid, st.st_uid) == (
            0o2775,
            site.gid,
            site.alice.uid,
        )

    # bob publishes an object into a directory alice re-made.
    z = _tar_with_object_in({d.name for d in victims}, site.base / "z.tar.gz")
    site.ok(site.bob, "add", z, umask=0o022, store=store)
    landed = [p for d in victims for p in d.iterdir() if p.stat().st_uid == site.bob.uid]
    assert len(landed) == 1

    site.ok(site.bob, "verify", "--full", store=store)
    log = json.loads(site.ok(site.alice, "log", "--json", "-n", "50", store=store).stdout)
    assert {r["user"] for r in log} >= {site.alice.name, site.bob.name}
    assert any(r["op"] == "repair" and r["user"] == site.alice.name for r in log)


def test_a_member_runs_gc_on_the_others_objects(site: Site) -> None:
    """permissions.md §3: any member can gc: bob removes alice's artifact and frees its objects."""
    store = site.base / "store"
    site.base.chmod(0o1777)
    site.ok(site.alice, "init", "--shared", site.group, store=store)
    site.base.chmod(0o755)
    if site.run(site.bob, "gc", "--help", store=store).returncode != 0:
        pytest.skip("`hutch gc` does not exist yet (cli/maintain.py is being built)")
    pip, setuptools = (_readable_copy(w, site) for w in _wheels()[:2])
    x = site.ok(site.alice, "add", pip, store=store).stdout.strip()
    y = site.ok(site.alice, "add", setuptools, umask=0o077, store=store).stdout.strip()
    before = {p for p in (store / "objects").rglob("*") if p.is_file()}
    site.ok(site.bob, "rm", y, store=store)
    site.ok(site.bob, "gc", store=store)
    after = {p for p in (store / "objects").rglob("*") if p.is_file()}
    assert after < before
    site.ok(site.alice, "verify", "--full", x, store=store)


def test_read_only_store_installs_intact_and_explains_repairs(site: Site) -> None:
    """permissions.md §5: carol cannot write root's store: intact installs work, the
    journal is untouched, and a needed repair says the store is read-only and what to do."""
    pip, setuptools = (_readable_copy(w, site) for w in _wheels()[:2])
    store = site.base / "rostore"
    # root's own store, made with the usual umask: 0755 directories, 0644 journal.
    subprocess.run(
        [sys.executable, "-m", "hutch", "--store", str(store), "add", str(pip)],
        check=True,
        capture_output=True,
        umask=0o022,
    )
    aid = json.loads(site.ok(site.carol, "ls", "--json", store=store).stdout)[0]["id"]
    journal = store / "journal" / "data.mdb"
    before = journal.read_bytes()
    out = site.home(site.carol, "carol-out")
    result = site.ok(site.carol, "install", aid, out / "pip", store=store)
    if PROTECTED:
        assert "another user's objects under fs.protected_hardlinks" in result.stderr
    assert tree(out / "pip") == _unzip(pip, site.base / "unzip")

    victim = max((p for p in (store / "objects").rglob("*") if p.is_file()), key=os.path.getsize)
    victim.unlink()
    damaged = site.run(site.carol, "install", aid, out / "again", store=store)
    assert damaged.returncode == 3
    assert "missing" in damaged.stderr
    assert f"the store at {store} is read-only for this user" in damaged.stderr
    assert "hint: ask the store's owner to run `hutch verify --repair`" in damaged.stderr
    assert sorted(p.name for p in out.iterdir()) == ["pip"]
    added = site.run(site.carol, "add", setuptools, store=store)
    assert added.returncode == 6
    assert "is read-only for this user" in added.stderr
    assert journal.read_bytes() == before


def test_force_over_another_users_tree_changes_nothing(site: Site) -> None:
    """install.md §3, the seed's shared-env failure: bob cannot remove alice's tree, so
    --force refuses before swapping; nothing is copied over or into her files."""
    pip, setuptools = (_readable_copy(w, site) for w in _wheels()[:2])
    store = site.base / "store"
    site.base.chmod(0o1777)
    site.ok(site.alice, "init", "--shared", site.group, store=store)
    site.base.chmod(0o755)
    x = site.ok(site.alice, "add", pip, store=store).stdout.strip()
    y = site.ok(site.bob, "add", setuptools, store=store).stdout.strip()
    envs = site.base / "envs"
    envs.mkdir()
    os.chown(envs, 0, site.gid)
    envs.chmod(0o2775)
    site.ok(site.alice, "install", x, envs / "env", store=store)
    before = tree(envs / "env")
    refused = site.run(site.bob, "install", y, envs / "env", "--force", store=store)
    assert refused.returncode == 6, refused.stderr
    assert f"belongs to {site.alice.name}" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert tree(envs / "env") == before
    assert sorted(p.name for p in envs.iterdir()) == ["env"]
    site.ok(site.bob, "install", y, envs / "env-bob", store=store)
