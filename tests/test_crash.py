"""Crashes and power loss (spec/store.md §6, §7, §9-§11; spec/durability.md).

kill -9 at every named crash point and at random moments of add, install,
repair, gc and rm; then every on-disk state a power loss can leave in the
middle of a commit, built by hand. After each, the next command must recover:
the store verifies, staging is swept with one `aborted` record per dead
operation, nothing committed is lost, and a DEST is absent, the old tree or the
complete new one. Last, strace shows the syscalls of a commit in the order
durability.md says makes each step durable.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
from test_concurrency import (
    Archive,
    Runner,
    Tree,
    build_corpus,
    describe_difference,
    hutch_env,
    install_temps,
    snapshot,
    staging_dirs,
    wait_stopped,
)

Outcome = Callable[[bool], None]  # told whether the command was killed


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Archive]:
    """Six archives of 120 files: big enough that a kill lands mid-work, not at start-up."""
    work = tmp_path_factory.mktemp("crash-corpus")
    return build_corpus(work, [f"p{i}" for i in range(6)], seed=20, files=120)


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path / "store", hutch_env())


def _log(runner: Runner) -> list[dict[str, object]]:
    records: list[dict[str, object]] = json.loads(runner.ok("log", "--json", "-n", "100000"))
    return records


def _listed(runner: Runner) -> set[str]:
    return {r["id"] for r in json.loads(runner.ok("ls", "--json"))}


def _objects(store: Path) -> list[Path]:
    return sorted(p for p in (store / "objects").rglob("*") if p.is_file())


def _objects_of(runner: Runner, aid: str) -> list[Path]:
    shown = json.loads(runner.ok("show", aid, "--json"))
    return sorted({Path(e["object"]) for e in shown["entries"] if e["type"] == "file"})


def _assert_installs_exactly(runner: Runner, a: Archive, dest: Path) -> None:
    runner.ok("install", a.aid, dest, "--force")
    got = snapshot(dest)
    assert got == a.tree, describe_difference(got, a.tree)


# -- kill -9 at each named point -------------------------------------------------------

ADD_POINTS = [
    "add.fetched",
    "add.placing",
    "add.extracted",
    "add.published",
    "add.synced",
    "add.committed",
]


@pytest.mark.parametrize("point", ADD_POINTS)
def test_kill_9_at_each_add_point(
    runner: Runner, corpus: list[Archive], point: str, tmp_path: Path
) -> None:
    """store.md §7 crash table: the next command sweeps, logs `aborted`, loses nothing."""
    old, new = corpus[0], corpus[1]
    runner.ok("add", old.source, "--name", "old")
    crashed = runner.run("add", "add", new.source, env={"HUTCH_CRASH_AT": point})
    assert crashed.rc == -9
    assert len(staging_dirs(runner.store)) == 1

    listed = _listed(runner)  # the next command: a writable open sweeps
    assert staging_dirs(runner.store) == []
    assert old.aid in listed  # committed before the crash: still there
    assert (new.aid in listed) == (point == "add.committed")  # atomic commit
    aborted = [r for r in _log(runner) if r["outcome"] == "aborted"]
    assert len(aborted) == 1
    assert new.source in str(aborted[0]["detail"])
    assert f"(pid {crashed.pid})" in str(aborted[0]["detail"])
    runner.ok("verify", "--full")

    # Redone, it commits; whatever the crash published is reused or replaced.
    assert runner.ok("add", new.source).strip() == new.aid
    runner.ok("gc")  # frees only what nothing references
    runner.ok("verify", "--full")
    _assert_installs_exactly(runner, new, tmp_path / "new")
    _assert_installs_exactly(runner, old, tmp_path / "old")


@pytest.mark.parametrize("point", ["install.built", "install.swapped"])
def test_kill_9_at_each_install_point(
    runner: Runner, corpus: list[Archive], point: str, tmp_path: Path
) -> None:
    """store.md §11: --force over an old tree: DEST is the old or the new tree, never between."""
    old, new = corpus[0], corpus[1]
    runner.ok("add", old.source)
    runner.ok("add", new.source)
    dest = tmp_path / "dest"
    runner.ok("install", old.aid, dest)
    crashed = runner.run(
        "install", "install", new.aid, dest, "--force", env={"HUTCH_CRASH_AT": point}
    )
    assert crashed.rc == -9
    got = snapshot(dest)
    assert got == (old.tree if point == "install.built" else new.tree)
    assert len(install_temps(dest)) == 1  # the new tree unpublished, or the old one swapped out
    runner.ok("verify", "--full")
    # The next install to DEST removes what the dead one left.
    _assert_installs_exactly(runner, old, dest)
    assert install_temps(dest) == []


# -- kill -9 at random moments, dozens of times ---------------------------------------


class _Harness:
    """One store; each round damages or prepares, runs one command, kills it at a random time."""

    def __init__(self, runner: Runner, corpus: list[Archive], work: Path, seed: int) -> None:
        self.runner = runner
        self.corpus = corpus
        self.work = work
        self.rng = random.Random(seed)
        self.by_id = {a.aid: a for a in corpus}
        self.committed: set[str] = set()  # must be listed and whole
        self.maybe: set[str] = set()  # a killed add or rm: either way is fine
        self.dests: dict[Path, Tree | None] = {}
        self.typical: dict[str, float] = {}  # an op's last uninterrupted duration
        self.kills: dict[str, int] = {}
        self.leftovers = 0  # staging dirs the kills left, each owed one `aborted` record
        self.mid_install = 0  # installs killed with their temporary tree beside DEST

    def round(self, op: str) -> None:
        prepare, args = getattr(self, f"_{op}")()
        if args is None:
            return
        # Kill somewhere in the op's own work: after interpreter start-up, before its end.
        typical = self.typical.get(op, 1.0)
        delay = self.rng.uniform(0.25 * typical, 1.1 * typical)
        ran = self.runner.run(op, *args, kill_after=delay)
        if not ran.killed:
            assert ran.rc == 0, ran.brief()
            self.typical[op] = ran.seconds
        else:
            self.kills[op] = self.kills.get(op, 0) + 1
        prepare(ran.killed)
        self.check(damaged_on_purpose=op == "repair")

    def check(self, *, damaged_on_purpose: bool) -> None:
        """The next command recovers; committed artifacts are listed and verify clean."""
        self.leftovers += len(staging_dirs(self.runner.store))
        ran = self.runner.run("check", "verify", "--full", "--json", "--repair")
        assert staging_dirs(self.runner.store) == []
        report = {e["artifact"]: e for e in json.loads(ran.out)}
        assert ran.rc == 0, ran.brief()
        if not damaged_on_purpose:  # kills alone never damage what is committed
            assert all(e["status"] == "ok" for e in report.values()), report
        missing = self.committed - report.keys()
        assert not missing, f"committed artifacts lost: {missing}"
        unexpected = report.keys() - self.committed - self.maybe
        assert not unexpected, f"artifacts nobody committed: {unexpected}"
        # A killed add or rm is settled now: listed means committed.
        self.committed |= self.maybe & report.keys()
        self.maybe.clear()
        for dest, tree in self.dests.items():
            assert snapshot(dest) == tree

    # -- the operations: each returns (what to do with the outcome, the command) ------
    def _add(self) -> tuple[Outcome, tuple[str, ...] | None]:
        absent = [a for a in self.corpus if a.aid not in self.committed]
        if not absent:
            victim = self.rng.choice(sorted(self.committed))
            self.runner.ok("rm", victim)
            self.committed.discard(victim)
            absent = [self.by_id[victim]]
        a = self.rng.choice(absent)

        def outcome(killed: bool) -> None:
            (self.maybe if killed else self.committed).add(a.aid)

        return outcome, ("add", a.source, "--digest", a.pin)

    def _rm(self) -> tuple[Outcome, tuple[str, ...] | None]:
        if len(self.committed) < 2:
            return self._add()
        victim = self.rng.choice(sorted(self.committed))
        self.committed.discard(victim)

        def outcome(killed: bool) -> None:
            if killed:
                self.maybe.add(victim)

        return outcome, ("rm", victim)

    def _gc(self) -> tuple[Outcome, tuple[str, ...] | None]:
        if len(self.committed) > 3:  # leave gc some garbage: the objects of a removed one
            victim = self.rng.choice(sorted(self.committed))
            self.runner.ok("rm", victim)
            self.committed.discard(victim)
        return _ignore, ("gc",)

    def _install(self) -> tuple[Outcome, tuple[str, ...] | None]:
        if not self.committed:
            return self._add()
        a = self.by_id[self.rng.choice(sorted(self.committed))]
        dest = self.work / f"dest{self.rng.randrange(2)}"
        old = self.dests.get(dest)
        link = self.rng.choice(["auto", "copy", "hardlink"])

        def outcome(killed: bool) -> None:
            got = snapshot(dest)
            if killed:
                # store.md §11: absent, the old tree or the complete new tree.
                assert got in (old, a.tree), describe_difference(got, a.tree)
                self.mid_install += bool(install_temps(dest))
            else:
                assert got == a.tree, describe_difference(got, a.tree)
            self.dests[dest] = got

        return outcome, ("install", a.aid, str(dest), "--force", "--link", link)

    def _repair(self) -> tuple[Outcome, tuple[str, ...] | None]:
        if not self.committed:
            return self._add()
        aid = self.rng.choice(sorted(self.committed))
        victims = self.rng.sample(_objects_of(self.runner, aid), 8)
        for i, p in enumerate(victims):
            _damage(p, ["delete", "truncate", "corrupt"][i % 3])
        return _ignore, ("verify", "--full", "--repair")


def _ignore(killed: bool) -> None:
    del killed  # gc and repair: the checks that follow are the whole verdict


def _damage(path: Path, how: str) -> None:
    """Delete, truncate or corrupt an object by replacing it (a new inode), so trees already
    installed with hard links keep their bytes and stay comparable."""
    if how == "delete" or not path.exists():
        path.unlink(missing_ok=True)
        return
    data = path.read_bytes()
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
    fresh = path.with_name(path.name + ".damaged")
    fresh.write_bytes(data)
    fresh.chmod(path.stat().st_mode & 0o777)
    fresh.replace(path)


def _rewrite(path: Path, data: bytes) -> None:
    """Change a read-only object's bytes in place, as a disk or a power loss would: mode kept."""
    mode = path.stat().st_mode & 0o777
    path.chmod(0o644)
    path.write_bytes(data)
    path.chmod(mode)


def test_kill_9_at_random_moments_of_add_install_repair_gc_rm(
    runner: Runner, corpus: list[Archive], tmp_path: Path
) -> None:
    """store.md §6, §7, §11: 30 kill -9s at random times; the next command always recovers."""
    harness = _Harness(runner, corpus, tmp_path, seed=1234)
    for _ in range(3):
        harness.round("add")  # also calibrates: the first of each op may finish
    ops = ["add", "install", "repair", "gc", "rm", "install", "repair", "add"]
    for i in range(27):
        harness.round(ops[i % len(ops)])
    kills = sum(harness.kills.values())
    print(
        f"kill -9s: {harness.kills}; {harness.leftovers} left a staging dir, "
        f"{harness.mid_install} an install's temporary tree"
    )
    assert kills >= 15, harness.kills
    assert {"add", "install", "repair"} <= harness.kills.keys(), harness.kills
    # One `aborted` record per staging directory a kill left, no more, no fewer.
    aborted = [r for r in _log(runner) if r["outcome"] == "aborted"]
    assert len(aborted) == harness.leftovers
    # Everything committed still installs exactly what GNU tar / unzip extract.
    for aid in sorted(harness.committed):
        a = harness.by_id[aid]
        _assert_installs_exactly(runner, a, tmp_path / "final" / a.name)


# -- power loss: every on-disk state of a commit -------------------------------------


def _crash(runner: Runner, point: str, *args: str) -> None:
    assert runner.run("crash", *args, env={"HUTCH_CRASH_AT": point}).rc == -9


def _manifest_files(store: Path) -> list[Path]:
    return sorted((store / "manifests").glob("*.json"))


def test_power_loss_before_the_commit_leaves_unreferenced_files_only(
    runner: Runner, corpus: list[Archive], tmp_path: Path
) -> None:
    """durability.md: objects (+ manifest) on disk, journal not committed: nothing refers to them.

    Whether the kernel wrote them or not, the next add redoes the commit (files
    whose data the power loss took are replaced) and gc frees what stays unused.
    """
    a, b = corpus[0], corpus[1]
    _crash(runner, "add.synced", "add", a.source)
    assert _listed(runner) == set()  # not committed
    assert _manifest_files(runner.store)
    # A power loss before syncfs: renamed files whose data never reached the disk
    # come back empty (ext4 delayed allocation) or short.
    for i, p in enumerate(_objects(runner.store)):
        if i % 2:
            _rewrite(p, b"")
    assert runner.ok("add", a.source).strip() == a.aid
    runner.ok("verify", "--full")
    _assert_installs_exactly(runner, a, tmp_path / "a")

    # The same state for an artifact nobody adds again: gc frees all of it.
    _crash(runner, "add.synced", "add", b.source)
    before = set(_objects(runner.store))
    gc = json.loads(runner.ok("gc", "--json"))
    assert gc["manifests"] == 1
    assert gc["objects"] > 0
    assert set(_objects(runner.store)) < before
    assert _listed(runner) == {a.aid}
    runner.ok("verify", "--full")


def test_power_loss_emptied_manifest_is_rewritten_by_the_next_add(
    runner: Runner, corpus: list[Archive]
) -> None:
    """durability.md: a manifest file written but never synced comes back empty after a power
    loss; the next add must rewrite it, or §9's rebuild loses the artifact."""
    a = corpus[0]
    _crash(runner, "add.synced", "add", a.source)
    (manifest,) = _manifest_files(runner.store)
    _rewrite(manifest, b"")
    runner.ok("add", a.source)
    shutil.rmtree(runner.store / "journal")  # a cleaner, or a disk the journal was on
    assert _listed(runner) == {a.aid}


def test_power_loss_garbage_object_of_the_right_size_is_replaced_by_the_next_add(
    runner: Runner, corpus: list[Archive]
) -> None:
    """durability.md: an unreferenced object is untrusted (it may never have been synced);
    the next add must publish its own blob over it, not commit whatever is there."""
    a = corpus[0]
    _crash(runner, "add.published", "add", a.source)
    victim = max(_objects(runner.store), key=lambda p: p.stat().st_size)
    _rewrite(victim, bytes(victim.stat().st_size))  # zeros, the right size
    runner.ok("add", a.source)
    runner.ok("verify", "--full")


def test_power_loss_after_the_commit_with_objects_missing_is_detected_and_healed(
    runner: Runner, corpus: list[Archive], tmp_path: Path
) -> None:
    """durability.md: objects missing behind a committed journal (the disk lied about a flush,
    or a cleaner): verify detects every one, --repair heals them from the source."""
    a = corpus[1]
    runner.ok("add", a.source)
    objects = _objects_of(runner, a.aid)
    lost = objects[::3]
    for i, p in enumerate(lost):
        _damage(p, "delete" if i % 2 else "truncate")
    ran = runner.run("verify", "verify", "--json")
    assert ran.rc == 3
    (entry,) = json.loads(ran.out)
    assert {Path(d["object"]) for d in entry["damage"]} == set(lost)
    runner.ok("verify", "--repair")
    runner.ok("verify", "--full")
    _assert_installs_exactly(runner, a, tmp_path / "a")


def test_power_loss_of_the_commit_itself_reads_as_never_committed(
    runner: Runner, corpus: list[Archive], tmp_path: Path
) -> None:
    """durability.md: a journal whose last commit did not reach the disk is the journal from
    before it; objects and manifest are then unreferenced, and the next add commits again."""
    a, b = corpus[0], corpus[1]
    runner.ok("add", a.source)
    proc = runner.start("add", b.source, env={"HUTCH_STOP_AT": "add.synced"})
    wait_stopped(proc)
    before = {p.name: p.read_bytes() for p in (runner.store / "journal").iterdir()}
    proc.send_signal(signal.SIGCONT)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert _listed(runner) == {a.aid, b.aid}
    for name, data in before.items():  # the disk as it was before the commit
        (runner.store / "journal" / name).write_bytes(data)
    assert _listed(runner) == {a.aid}
    runner.ok("verify", "--full")
    assert runner.ok("add", b.source).strip() == b.aid
    runner.ok("verify", "--full")
    _assert_installs_exactly(runner, b, tmp_path / "b")


def test_journal_lost_is_rebuilt_from_the_manifest_files(
    runner: Runner, corpus: list[Archive], tmp_path: Path
) -> None:
    """store.md §9: journal deleted; the next command rebuilds it. An add that crashed after
    syncfs left a complete manifest: the rebuild takes it too (store.md §7 table, step 7)."""
    a, b = corpus[0], corpus[1]
    runner.ok("add", a.source, "--name", "a")
    _crash(runner, "add.synced", "add", b.source)
    _listed(runner)  # sweep the crash's staging first
    shutil.rmtree(runner.store / "journal")
    assert _listed(runner) == {a.aid, b.aid}
    assert _log(runner)[0]["op"] == "rebuild"
    runner.ok("verify", "--full")
    for x in (a, b):
        _assert_installs_exactly(runner, x, tmp_path / x.name)


def _fake_manifests(store: Path, count: int) -> None:
    """Valid manifest files of artifacts whose objects do not exist: they make a rebuild slow."""
    from hutch.store.manifest import Entry, Manifest, Source

    rng = random.Random(5)
    for i in range(count):
        files = tuple(
            Entry(path=f"f{j}", type="file", size=1, exec=False, digest=rng.randbytes(32).hex())
            for j in range(50)
        )
        digests = {"blake3": rng.randbytes(32).hex(), "sha256": rng.randbytes(32).hex()}
        source = Source(urls=(f"file:///gone/{i}.tar.gz",), size=1, digests=digests)
        raw = Manifest(source=source, entries=files).canonical_bytes()
        (store / "manifests" / f"{blake3.blake3(raw).hexdigest()}.json").write_bytes(raw)


def test_gc_during_a_journal_rebuild_deletes_nothing_committed(
    runner: Runner, corpus: list[Archive], tmp_path: Path
) -> None:
    """store.md §8-9: the journal is being rebuilt (a cleaner deleted it) while another
    process adds and a third collects garbage; nothing committed may be lost."""
    a, b = corpus[0], corpus[1]
    runner.ok("add", a.source)
    _fake_manifests(runner.store, 3000)  # a rebuild of seconds: the race is wide open
    shutil.rmtree(runner.store / "journal")
    rebuilding = runner.start("ls")
    # Stopped as soon as its new, empty journal exists: before or during the rebuild.
    data = runner.store / "journal" / "data.mdb"
    deadline = time.monotonic() + 30
    while not data.exists():
        assert rebuilding.poll() is None, "the rebuild ended before it could be caught"
        assert time.monotonic() < deadline
        time.sleep(0.0005)
    rebuilding.send_signal(signal.SIGSTOP)
    try:
        impatient = {"HUTCH_LOCK_TIMEOUT": "1"}  # waiting for the rebuild is fine too
        assert runner.run("add", "add", b.source, env=impatient).rc in (0, 6)
        assert runner.run("gc", "gc", env=impatient).rc in (0, 6)
    finally:
        rebuilding.send_signal(signal.SIGCONT)
        rebuilding.communicate(timeout=120)
    assert a.aid in _listed(runner)
    runner.ok("verify", "--full", a.aid)
    _assert_installs_exactly(runner, a, tmp_path / "a")


def test_staging_left_by_a_power_loss_is_swept(runner: Runner) -> None:
    """store.md §6: after a reboot pids are reused, so an unlocked .owner means dead whatever
    pid the name has; a directory without one is judged by its pid, else by its age."""
    runner.ok("ls")
    staging = runner.store / "staging"
    host = os.uname().nodename
    alive = os.getpid()  # a live pid: as if reused by an unrelated process after reboot
    dead = _dead_pid()

    def make(name: str, files: dict[str, str], *, age: float = 0) -> None:
        d = staging / name
        d.mkdir()
        for f, text in files.items():
            (d / f).write_text(text)
        if age:
            t = time.time() - age
            os.utime(d, (t, t))

    op = json.dumps({"op": "add", "detail": "file:///x.tar.gz", "pid": alive})
    make(f"{host}-{alive}-00000001", {".owner": "", "op.json": op})  # unlocked: dead
    make(f"{host}-{dead}-00000002", {})  # no owner, pid dead: died at mkdir
    make(f"{host}-{alive}-00000003", {})  # no owner, pid alive, young: maybe being made
    make(f"{host}-{alive}-00000004", {".owner.new": ""}, age=120)  # old: dead
    make(f"otherhost-{alive}-00000005", {"archive": "x"})  # another host, young: wait
    make(f"otherhost-{alive}-00000006", {"archive": "x"}, age=120)  # ... old: dead
    runner.ok("ls")
    assert staging_dirs(runner.store) == sorted(
        [f"{host}-{alive}-00000003", f"otherhost-{alive}-00000005"]
    )
    aborted = [r for r in _log(runner) if r["outcome"] == "aborted"]
    assert len(aborted) == 4
    assert any("file:///x.tar.gz" in str(r["detail"]) for r in aborted)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- the order of the syscalls of a commit -------------------------------------------


def _strace(runner: Runner, *args: str) -> list[str]:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    trace = runner.store.parent / f"trace-{len(list(runner.store.parent.glob('trace-*')))}"
    cmd = ["strace", "-f", "-qq", "-y", "-o", str(trace)]
    cmd += [
        "-e",
        (
            "trace=rename,renameat,renameat2,syncfs,fsync,fdatasync,write,pwrite64,writev,"
            "pwritev,fchmod"
        ),
    ]
    ran = subprocess.run(
        [*cmd, *runner.cmd(*args)], capture_output=True, text=True, env=runner.env, check=False
    )
    if ran.returncode != 0 and "ptrace" in ran.stderr:
        pytest.skip(f"strace cannot trace here: {ran.stderr.strip()}")
    assert ran.returncode == 0, ran.stderr
    return trace.read_text().splitlines()


_JOURNAL_WRITE = r"write\w*\(\d+<[^>]*/data\.mdb>"
# An object's bytes written (or its mode fixed) at its path, spec/store.md §7 step 5, or a
# staged blob renamed there. Not openat: tracing every open of the interpreter's start-up
# makes this test four times slower (73 s against 18 s here).
_OBJECT_WRITE = r"(write\w*|fchmod)\(\d+<[^>]*/objects/[0-9a-f]{2}/|rename.*/objects/"


def _index(lines: list[str], pattern: str, *, last: bool = False, after: int = -1) -> int:
    found = [i for i, line in enumerate(lines) if i > after and re.search(pattern, line)]
    assert found, f"no {pattern!r} in the trace"
    return found[-1] if last else found[0]


def test_commit_syscall_order_makes_content_durable_before_the_journal_refers_to_it(
    runner: Runner, corpus: list[Archive]
) -> None:
    """durability.md: objects written at their paths (or renamed there) and the manifest
    renamed, then syncfs, then LMDB's write and fdatasync of data.mdb; repair: restores,
    syncfs, then its log record."""
    a = corpus[0]
    runner.ok("ls")  # create the store and journal outside the trace
    lines = _strace(runner, "add", a.source)
    first_object = _index(lines, _OBJECT_WRITE)
    last_object = _index(lines, _OBJECT_WRITE, last=True)
    manifest = _index(lines, r"rename.*/manifests/[0-9a-f]{64}\.json\"")
    sync = _index(lines, r"syncfs\(", after=max(last_object, manifest))
    write = _index(lines, _JOURNAL_WRITE, after=sync)
    flush = _index(lines, r"fdatasync\(\d+<[^>]*/data\.mdb>", after=write)
    # LMDB writes the meta page last, through its O_DSYNC descriptor: the commit.
    meta = _index(lines, _JOURNAL_WRITE, after=flush)
    assert first_object < sync < write < flush < meta
    # Nothing reached the journal between the first publish and the syncfs.
    assert not any("data.mdb" in line for line in lines[first_object:sync])

    for p in _objects_of(runner, a.aid)[:5]:
        p.unlink()
    lines = _strace(runner, "verify", "--repair")
    restored = _index(lines, r"rename.*/objects/", last=True)
    sync = _index(lines, r"syncfs\(", after=restored)
    logged = _index(lines, _JOURNAL_WRITE, after=sync)
    assert restored < sync < logged
