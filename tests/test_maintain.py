"""gc, rm, stats, doctor, and a full disk, through the real `hutch` command (spec/inspect.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Hutch, objects, tree
from test_inspect import make_tar, set_times

COMMON = b"common to every artifact\n" * 8  # 200 bytes


def _archive(tmp_path: Path, name: str, unique: int) -> Path:
    """An archive with one shared 200-byte file and one file of ``unique`` bytes of its own."""
    return make_tar(
        tmp_path / f"{name}.tar.gz",
        {f"{name}/common.txt": COMMON, f"{name}/own.bin": name.encode()[:1] * unique},
    )


def _ls(hutch: Hutch) -> dict[str, dict[str, object]]:
    return {item["id"]: item for item in json.loads(hutch.ok("ls", "--json"))}


def _gnu_tar(archive: Path, into: Path) -> Path:
    into.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(into)], check=True)
    return into


# -- rm ----------------------------------------------------------------------------
def test_rm_forgets_the_artifact_and_gc_frees_only_its_own_objects(
    hutch: Hutch, tmp_path: Path
) -> None:
    """inspect.md §7, store.md §12: one txn, `rm` logged, manifest file gone, objects left to gc."""
    a = hutch.ok("add", _archive(tmp_path, "a", 1000), "--name", "a").strip()
    b = hutch.ok("add", _archive(tmp_path, "b", 3000)).strip()
    manifest_a = hutch.store / "manifests" / f"{_ls(hutch)[a]['manifest']}.json"
    before = objects(hutch.store)
    assert len(before) == 3
    result = hutch("rm", "a")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{a}\n"
    assert "1 object(s), 1000 B, are now unreferenced: `hutch gc` frees them" in result.stderr
    assert set(_ls(hutch)) == {b}
    assert hutch("show", "a").returncode == 2  # the name went with it
    assert hutch("show", a).returncode == 2
    assert not manifest_a.exists()
    assert objects(hutch.store) == before  # rm deletes no object
    log = json.loads(hutch.ok("log", "--json"))
    assert (log[-1]["op"], log[-1]["outcome"], log[-1]["artifact"]) == ("rm", "committed", a)
    freed = json.loads(hutch.ok("gc", "--json"))
    assert (freed["objects"], freed["object_bytes"], freed["artifacts"]) == (1, 1000, [])
    assert len(objects(hutch.store)) == 2
    hutch.ok("verify", "--full", b)


def test_rm_json_and_unknown_artifact_removes_nothing(hutch: Hutch, tmp_path: Path) -> None:
    """inspect.md §7: every ARTIFACT is resolved first; one unknown is exit 2 and no change."""
    a = hutch.ok("add", _archive(tmp_path, "a", 10)).strip()
    b = hutch.ok("add", _archive(tmp_path, "b", 20)).strip()
    bad = hutch("rm", a, "nosuch")
    assert bad.returncode == 2
    assert "no artifact 'nosuch'" in bad.stderr
    assert set(_ls(hutch)) == {a, b}
    assert hutch("rm").returncode == 2
    out = json.loads(hutch.ok("rm", a, b[:12], a, "--json"))
    assert out == {
        "removed": [{"id": a, "names": []}, {"id": b, "names": []}],
        "manifests": 2,
        "unreferenced_objects": 3,
        "unreferenced_bytes": 230,
    }
    assert _ls(hutch) == {}
    assert list((hutch.store / "manifests").iterdir()) == []


# -- gc ----------------------------------------------------------------------------
def test_gc_expires_by_age_then_by_size_least_recently_used_first(
    hutch: Hutch, tmp_path: Path
) -> None:
    """inspect.md §6 step 1: --max-age by last use; --max-size drops LRU until the rest fit."""
    now = time.time()
    ids = {}
    for name, unique, age_days in (("old", 4000, 90), ("mid", 3000, 20), ("new", 2000, 1)):
        ids[name] = hutch.ok("add", _archive(tmp_path, name, unique), "--name", name).strip()
        set_times(hutch.store, ids[name], last_used=now - age_days * 86400)
    dry = json.loads(hutch.ok("gc", "--dry-run", "--max-age", "30d", "--json"))
    assert [e["id"] for e in dry["artifacts"]] == [ids["old"]]
    assert dry["dry_run"] is True
    assert (dry["objects"], dry["object_bytes"], dry["manifests"]) == (1, 4000, 1)
    assert set(_ls(hutch)) == set(ids.values())  # a dry run changes nothing
    assert not any(r["op"] == "gc" for r in json.loads(hutch.ok("log", "--json")))

    result = hutch("gc", "--max-age", "30d")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"removed {ids['old'][:12]} (old): unused since ")
    assert "freed 1 artifact(s), 1 object(s), 3.9 KiB; 1 orphan manifest file(s)" in result.stderr
    assert set(_ls(hutch)) == {ids["mid"], ids["new"]}

    # mid + new reference 200 + 3000 + 2000 bytes; 5000 leaves room for new only.
    sized = json.loads(hutch.ok("gc", "--max-size", "5000", "--json"))
    assert [e["id"] for e in sized["artifacts"]] == [ids["mid"]]
    assert "least recently used" in sized["artifacts"][0]["reason"]
    assert sized["object_bytes"] == 3000
    assert set(_ls(hutch)) == {ids["new"]}
    log = json.loads(hutch.ok("log", "--json", "--op", "gc"))
    assert [(r["artifact"], r["outcome"]) for r in log] == [
        (ids["old"], "committed"),
        (None, "committed"),
        (ids["mid"], "committed"),
        (None, "committed"),
    ]
    assert "freed" in log[-1]["detail"]
    hutch.ok("verify", "--full")
    assert hutch("gc", "--max-age", "soon").returncode == 2
    assert hutch("gc", "--max-size", "big").returncode == 2


def test_gc_removes_unreferenced_objects_orphan_manifests_and_crash_debris(
    hutch: Hutch, tmp_path: Path
) -> None:
    """inspect.md §6 steps 2-3: garbage goes, everything a committed artifact needs stays."""
    aid = hutch.ok("add", _archive(tmp_path, "keep", 500)).strip()
    kept = objects(hutch.store)
    stray = hutch.store / "objects" / "ab" / ("cd" * 31)
    stray.write_bytes(b"x" * 300)
    stray_x = hutch.store / "objects" / "ab" / ("ef" * 31 + ".x")
    stray_x.write_bytes(b"y" * 30)
    not_an_object = hutch.store / "objects" / "ab" / "README"
    not_an_object.write_text("not hutch's")
    orphan = hutch.store / "manifests" / ("0" * 64 + ".json")
    orphan.write_text("{}")
    crashed_tmp = hutch.store / "manifests" / (f".{'1' * 64}.json.tmp-123-abcd")
    crashed_tmp.write_text("{")
    stats = json.loads(hutch.ok("stats", "--json"))
    assert (stats["unreferenced_objects"], stats["unreferenced_bytes"]) == (2, 330)
    out = json.loads(hutch.ok("gc", "--json"))
    assert out == {
        "dry_run": False,
        "artifacts": [],
        "objects": 2,
        "object_bytes": 330,
        "manifests": 2,
        "staging": 0,
    }
    assert objects(hutch.store) == sorted([*kept, not_an_object])
    assert not orphan.exists()
    assert not crashed_tmp.exists()
    assert set(_ls(hutch)) == {aid}
    hutch.ok("verify", "--full")
    again = json.loads(hutch.ok("gc", "--json"))
    assert (again["objects"], again["manifests"]) == (0, 0)


def _wait_stopped(proc: subprocess.Popen[str]) -> None:
    """Wait until ``proc`` stopped itself at its HUTCH_STOP_AT point (state T)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the add never reached its stop point")


def test_gc_never_deletes_what_an_add_in_flight_published(hutch: Hutch, tmp_path: Path) -> None:
    """store.md §8, inspect.md §6: an add stopped after publishing objects and writing its
    manifest file, before its journal commit, holds gc off; nothing of it is deleted."""
    archive = _archive(tmp_path, "inflight", 700)
    hutch.ok("add", _archive(tmp_path, "base", 10))
    add = subprocess.Popen(
        [sys.executable, "-m", "hutch", "--store", str(hutch.store), "add", str(archive)],
        env={**hutch.env, "HUTCH_STOP_AT": "add.synced"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_stopped(add)
        published = objects(hutch.store)
        manifests = sorted((hutch.store / "manifests").iterdir())
        assert len(published) == 3
        assert len(manifests) == 2
        blocked = hutch("gc", env={"HUTCH_LOCK_TIMEOUT": "1"})
        assert blocked.returncode == 6
        assert "gc.lock" in blocked.stderr
        assert objects(hutch.store) == published
        assert sorted((hutch.store / "manifests").iterdir()) == manifests
        waiting = subprocess.Popen(
            [sys.executable, "-m", "hutch", "--store", str(hutch.store), "gc", "--json"],
            env=hutch.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        assert waiting.poll() is None  # waits for the add's commit
    finally:
        add.send_signal(signal.SIGCONT)
        out, err = add.communicate(timeout=60)
    assert add.returncode == 0, err
    gc_out, gc_err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, gc_err
    assert json.loads(gc_out)["objects"] == 0
    assert objects(hutch.store) == published
    log = json.loads(hutch.ok("log", "--json", "--op", "gc"))
    assert [r["outcome"] for r in log] == ["failed", "committed"]
    assert "timed out" in log[0]["detail"]
    hutch.ok("verify", "--full")
    hutch.ok("install", out.strip(), tmp_path / "dest")
    assert tree(tmp_path / "dest") == tree(_gnu_tar(archive, tmp_path / "gnu"))


def test_gc_waits_for_a_journal_rebuild(hutch: Hutch, tmp_path: Path) -> None:
    """inspect.md §6: a journal being rebuilt is incomplete, so gc waits for rebuild.lock."""
    from hutch.store.lock import FileLock

    hutch.ok("add", _archive(tmp_path, "a", 10))
    garbage = hutch.store / "objects" / "77" / ("88" * 31)
    garbage.write_bytes(b"not yet indexed, as far as gc can tell")
    rebuilding = FileLock(hutch.store / "locks" / "rebuild.lock").acquire()  # as rebuild holds it
    try:
        blocked = hutch("gc", env={"HUTCH_LOCK_TIMEOUT": "1"})
    finally:
        rebuilding.release()
    assert blocked.returncode == 6
    assert "rebuild.lock" in blocked.stderr
    assert garbage.exists()
    hutch.ok("gc")
    assert not garbage.exists()


def test_gc_running_in_a_loop_during_a_real_add_loses_nothing(
    hutch: Hutch, sdist: Path, tmp_path: Path
) -> None:
    """inspect.md §6 safety: gc over and over while an add publishes and commits an sdist."""
    # Garbage from an add that crashed after publishing, so every gc has work to do.
    assert hutch("add", sdist, env={"HUTCH_CRASH_AT": "add.published"}).returncode == -9
    assert len(objects(hutch.store)) > 1000
    add = subprocess.Popen(
        [sys.executable, "-m", "hutch", "--store", str(hutch.store), "add", str(sdist)],
        env=hutch.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = 0
    while add.poll() is None or runs < 2:
        result = hutch("gc")
        assert result.returncode == 0, result.stderr
        runs += 1
    out, err = add.communicate()
    assert add.returncode == 0, err
    aid = out.strip()
    hutch.ok("gc")
    hutch.ok("verify", "--full")
    hutch.ok("install", aid, tmp_path / "dest")
    assert tree(tmp_path / "dest") == tree(_gnu_tar(sdist, tmp_path / "gnu"))


def test_gc_refuses_when_the_journal_was_emptied(hutch: Hutch, tmp_path: Path) -> None:
    """inspect.md §6, §9: an empty journal beside manifest files means loss, not garbage."""
    aid = hutch.ok("add", _archive(tmp_path, "precious", 100), "--name", "p").strip()
    before = objects(hutch.store)
    (hutch.store / "journal" / "data.mdb").write_bytes(b"")  # opens as a brand new journal
    (hutch.store / "journal" / "lock.mdb").unlink()
    for _ in range(2):  # refusing leaves no trace that would let a second gc through
        refused = hutch("gc")
        assert refused.returncode == 6
        assert "doctor --rebuild" in refused.stderr
    assert objects(hutch.store) == before
    sick = hutch("doctor", "--json")
    assert sick.returncode == 6
    journal = next(c for c in json.loads(sick.stdout)["checks"] if c["name"] == "journal")
    assert journal["status"] == "error"
    assert "never committed anything" in journal["summary"]
    hutch.ok("doctor", "--rebuild")
    assert set(_ls(hutch)) == {aid}
    hutch.ok("gc")
    hutch.ok("verify", "--full")


# -- stats -------------------------------------------------------------------------
def test_stats_logical_physical_and_dedup(hutch: Hutch, tmp_path: Path) -> None:
    """inspect.md §8: logical = artifacts' bytes; physical = object files; ratio over referenced."""
    hutch.ok("add", _archive(tmp_path, "a", 100))
    hutch.ok("add", _archive(tmp_path, "b", 300))
    (hutch.store / "objects" / "ff" / ("ee" * 31)).write_bytes(b"g" * 50)
    s = json.loads(hutch.ok("stats", "--json"))
    assert set(s) == {
        "store",
        "journal",
        "artifacts",
        "logical_bytes",
        "objects",
        "physical_bytes",
        "unreferenced_objects",
        "unreferenced_bytes",
        "missing_objects",
        "manifests",
        "journal_bytes",
        "dedup_ratio",
        "saved_bytes",
    }
    assert s["artifacts"] == 2
    assert s["manifests"] == 2
    assert s["logical_bytes"] == 200 + 100 + 200 + 300
    assert (s["objects"], s["physical_bytes"]) == (4, 200 + 100 + 300 + 50)
    assert (s["unreferenced_objects"], s["unreferenced_bytes"]) == (1, 50)
    assert s["dedup_ratio"] == round(800 / 600, 3)
    assert s["saved_bytes"] == 200
    assert s["missing_objects"] == 0
    assert s["journal_bytes"] > 0
    text = hutch.ok("stats")
    assert "dedup       1.33x" in text
    assert "garbage     1 unreferenced object(s), 50 B: `hutch gc` frees them" in text


# -- doctor ------------------------------------------------------------------------
CHECKS = [
    "filesystem",
    "permissions",
    "free space",
    "journal",
    "records",
    "interrupted operations",
    "objects",
]


def test_doctor_on_a_healthy_store(hutch: Hutch, tmp_path: Path) -> None:
    """inspect.md §9: every check ok, exit 0, the JSON shape."""
    hutch.ok("add", _archive(tmp_path, "a", 10))
    report = json.loads(hutch.ok("doctor", "--json"))
    assert set(report) == {"store", "journal", "ok", "exit_code", "checks"}
    assert (report["ok"], report["exit_code"]) == (True, 0)
    assert [c["name"] for c in report["checks"]] == CHECKS
    for check in report["checks"]:
        assert set(check) == {"name", "status", "summary", "details", "advice"}
        assert check["status"] in ("ok", "info"), check
    fs = report["checks"][0]
    assert any(str(hutch.store) in line for line in fs["details"])
    missing = Hutch(tmp_path / "nowhere", hutch.env)("doctor")
    assert missing.returncode == 6
    assert "there is no hutch store" in missing.stdout


def test_doctor_finds_a_stale_reader_and_clears_it(hutch: Hutch, tmp_path: Path) -> None:
    """inspect.md §9 journal: a reader killed mid-read is reported and its slot freed.

    LMDB resets its reader table when the first process opens the journal, so
    stale slots outlive their process only while another keeps it open: a
    long-running holder here, like a build server.
    """
    hutch.ok("add", _archive(tmp_path, "a", 10))
    journal = str(hutch.store / "journal")
    opener = (
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from hutch.store.journal import Journal\n"
        "journal = Journal.open(Path(sys.argv[1]))\n"
        "with journal.read() as txn:\n"
        "    print(os.getpid(), flush=True)\n"
        "    if sys.argv[2] == 'die':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", opener, journal, "hold"],
        stdout=subprocess.PIPE,
        text=True,
        env=hutch.env,
    )
    try:
        assert holder.stdout is not None
        holder_pid = holder.stdout.readline().strip()
        dead = subprocess.run(
            [sys.executable, "-c", opener, journal, "die"],
            capture_output=True,
            text=True,
            env=hutch.env,
            check=False,
        )
        assert dead.returncode == -signal.SIGKILL
        report = json.loads(hutch.ok("doctor", "--json"))
        check = next(c for c in report["checks"] if c["name"] == "journal")
        assert check["status"] == "info"
        stale = f"stale reader pid {dead.stdout.strip()}: reading txn "
        assert any(
            line.startswith(stale) and line.endswith("(0 behind) (process gone)")
            for line in check["details"]
        ), check
        assert f"reader pid {holder_pid}: idle" in check["details"]
        assert "cleared 1 stale reader slot(s)" in check["details"]
        again = json.loads(hutch.ok("doctor", "--json"))
        assert next(c for c in again["checks"] if c["name"] == "journal")["status"] == "ok"
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def test_doctor_network_filesystem_detection() -> None:
    """inspect.md §9 filesystem: which types are network filesystems (no LMDB there)."""
    from hutch.store.doctor import Filesystem, filesystem

    def fs(kind: str) -> Filesystem:
        return Filesystem("/x", kind, "/", None)

    for kind in ("nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "fuse", "lustre", "gpfs", "ceph"):
        assert fs(kind).network, kind
    for kind in ("ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs"):
        assert not fs(kind).network, kind
    assert filesystem(Path("/proc/self")).type == "proc"
    assert filesystem(Path("/no/such/dir/below/root")).mount_point == "/"


# -- root only: real mounts ----------------------------------------------------------
@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount a tmpfs (or a read-only bind) for one test; always unmounted afterwards."""
    mounted: list[Path] = []

    def do(*args: str, at: str, source: str = "tmpfs") -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting needs root")
        where = tmp_path / at
        where.mkdir(exist_ok=True)
        result = subprocess.run(
            ["mount", *args, source, str(where)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount here: {result.stderr.strip()}")
        mounted.append(where)
        return where

    yield do
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def _random_archive(tmp_path: Path, name: str, size: int) -> Path:
    """An archive that does not compress: ``size`` random bytes in one file."""
    return make_tar(tmp_path / f"{name}.tar.gz", {f"{name}/data.bin": os.urandom(size)})


def _fill(path: Path, *, leave: int = 0) -> Path:
    """Fill the filesystem holding ``path`` until only ``leave`` bytes are free."""
    st = os.statvfs(path.parent)
    todo = st.f_bavail * st.f_frsize - leave
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * (1 << 20)
        while todo > 0:
            todo -= os.write(fd, chunk[: min(len(chunk), todo)])
    except OSError:
        if leave:  # only a fill to the brim may run out
            raise
    finally:
        os.close(fd)
    return path


def _many_files(tmp_path: Path) -> Path:
    """2000 empty files (a ~320 KB manifest) and one file of 64 KiB random bytes (~80 KB
    compressed): the manifest is far bigger than the archive."""
    files = {f"m/empty-file-with-a-long-name-{i:05d}.txt": b"" for i in range(2000)}
    files["m/data.bin"] = os.urandom(64 << 10)
    return make_tar(tmp_path / "m.tar.gz", files)


def _assert_disk_full_error(result: subprocess.CompletedProcess[str], path: Path) -> None:
    assert result.returncode == 6, result.stderr
    assert "No space left on device" in result.stderr
    assert str(path) in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.root
@pytest.mark.parametrize(
    ("archive_size", "step"), [(10 << 20, "cannot write"), (5 << 20, "cannot write blob")]
)
def test_full_store_disk_exits_6_and_the_store_stays_consistent(
    hutch: Hutch, tmp_path: Path, mount: Callable[..., Path], archive_size: int, step: str
) -> None:
    """inspect.md §10: ENOSPC while fetching or extracting into an 8 MiB tmpfs store."""
    disk = mount("-t", "tmpfs", "-o", "size=8m", at="disk")
    h = Hutch(disk / "store", hutch.env)
    h.ok("add", _archive(tmp_path, "small", 100))
    result = h("add", _random_archive(tmp_path, "big", archive_size))
    _assert_disk_full_error(result, disk / "store" / "staging")
    assert step in result.stderr
    assert list((disk / "store" / "staging").iterdir()) == []
    assert len(_ls(h)) == 1
    h.ok("verify", "--full")
    failed = json.loads(h.ok("log", "--json"))[-1]
    assert (failed["op"], failed["outcome"]) == ("add", "failed")
    assert "No space left on device" in failed["detail"]
    doctor = json.loads(h("doctor", "--json").stdout)
    space = next(c for c in doctor["checks"] if c["name"] == "free space")
    assert space["status"] == "error"  # 8 MiB is below what an add needs
    # With room, the same add works and verifies.
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    h.ok("add", _random_archive(tmp_path, "big2", archive_size))
    h.ok("verify", "--full")


@pytest.mark.root
def test_full_disk_writing_the_manifest_exits_6(
    hutch: Hutch, tmp_path: Path, mount: Callable[..., Path]
) -> None:
    """inspect.md §10: ENOSPC at the manifest write (step 7) commits nothing; gc cleans up."""
    archive = _many_files(tmp_path)
    disk = mount("-t", "tmpfs", "-o", "size=16m", at="disk")
    env = {"HUTCH_JOURNAL": str(tmp_path / "journal")}  # keep the journal off this disk
    h = Hutch(disk / "store", hutch.env)
    h.ok("stats", env=env)
    # Room for the staged archive and the blob (add deletes the archive once
    # extracted), not for the manifest.
    room = archive.stat().st_size + (64 << 10) + (96 << 10)
    filler = _fill(disk / "filler", leave=room)
    result = h("add", archive, env=env)
    _assert_disk_full_error(result, disk / "store" / "manifests")
    assert "cannot write the manifest" in result.stderr
    assert _ls_env(h, env) == {}
    h.ok("verify", "--full", env=env)
    filler.unlink()
    freed = json.loads(h.ok("gc", "--json", env=env))
    # Published before the manifest write failed: the data and the empty file's object.
    assert (freed["objects"], freed["object_bytes"]) == (2, 64 << 10)
    aid = h.ok("add", archive, env=env).strip()
    h.ok("verify", "--full", env=env)
    assert set(_ls_env(h, env)) == {aid}


def _ls_env(h: Hutch, env: dict[str, str]) -> dict[str, object]:
    return {item["id"]: item for item in json.loads(h.ok("ls", "--json", env=env))}


@pytest.mark.root
def test_full_journal_disk_at_commit_exits_6(
    hutch: Hutch, tmp_path: Path, mount: Callable[..., Path]
) -> None:
    """inspect.md §10: ENOSPC (or LMDB's EIO for a short write) in the journal commit."""
    archive = _many_files(tmp_path)
    disk = mount("-t", "tmpfs", "-o", "size=128k", at="journal")
    env = {"HUTCH_JOURNAL": str(disk / "j")}
    result = hutch("add", archive, env=env)
    _assert_disk_full_error(result, disk / "j")
    assert "cannot write the journal" in result.stderr
    assert "HUTCH_JOURNAL" in result.stderr
    assert _ls_env(hutch, env) == {}
    hutch.ok("verify", "--full", env=env)
    assert list((hutch.store / "staging").iterdir()) == []
    doctor = hutch("doctor", "--json", env=env)
    assert doctor.returncode == 6
    space = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "free space")
    assert space["status"] == "error"
    assert "HUTCH_JOURNAL" in space["advice"]
    subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
    aid = hutch.ok("add", archive, env=env).strip()
    hutch.ok("verify", "--full", env=env)
    hutch.ok("install", aid, tmp_path / "dest", env=env)
    assert tree(tmp_path / "dest") == tree(_gnu_tar(archive, tmp_path / "gnu"))


@pytest.mark.root
def test_completely_full_disk_exits_6(
    hutch: Hutch, tmp_path: Path, mount: Callable[..., Path]
) -> None:
    """inspect.md §10: not one free byte: the very first write of an add fails cleanly."""
    disk = mount("-t", "tmpfs", "-o", "size=1m", at="disk")
    env = {"HUTCH_JOURNAL": str(tmp_path / "journal")}
    h = Hutch(disk / "store", hutch.env)
    h.ok("stats", env=env)
    _fill(disk / "filler")
    result = h("add", _archive(tmp_path, "x", 10), env=env)
    _assert_disk_full_error(result, disk / "store")


@pytest.mark.root
def test_doctor_names_the_path_and_permission_on_a_read_only_store(
    hutch: Hutch, tmp_path: Path, mount: Callable[..., Path]
) -> None:
    """inspect.md §9 permissions: each path, the missing permission, and why (read-only fs)."""
    hutch.ok("add", _archive(tmp_path, "a", 10))
    ro = mount("--bind", "-o", "ro", at="ro", source=str(hutch.store))
    h = Hutch(ro, hutch.env)
    result = h("doctor", "--json")
    assert result.returncode == 6
    report = json.loads(result.stdout)
    perms = next(c for c in report["checks"] if c["name"] == "permissions")
    assert perms["status"] == "error"
    assert perms["details"] == [f"{ro}: the filesystem holding the store is mounted read-only"]
    assert report["exit_code"] == 6
    assert "problem(s) with the store" in result.stderr
    h.ok("ls")  # reading still works
    # Only objects/ read-only (a bind mount over it): that path, that permission.
    store_objects = str(hutch.store / "objects")
    mount("--bind", "-o", "ro", at=store_objects, source=store_objects)
    partial = json.loads(hutch("doctor", "--json").stdout)
    perms = next(c for c in partial["checks"] if c["name"] == "permissions")
    assert perms["details"][0] == (
        f"{hutch.store / 'objects'}: no write permission (owner root:root, mode drwxr-xr-x); "
        "its filesystem is mounted read-only"
    )
    assert perms["details"][-1] == "... and 253 more fan-out directories under objects/"
    add = hutch("add", _archive(tmp_path, "b", 10))
    assert add.returncode == 6
    assert "read-only" in add.stderr


def test_lost_journal_and_doctor_rebuild(hutch: Hutch, wheels: list[Path], tmp_path: Path) -> None:
    """store.md §9, inspect.md §9: a damaged journal is moved aside and rebuilt from manifests."""
    aid = hutch.ok("add", wheels[0], "--name", "pip").strip()
    data = hutch.store / "journal" / "data.mdb"
    data.write_bytes(os.urandom(64 << 10))
    broken = hutch("ls")
    assert broken.returncode == 6
    assert "doctor --rebuild" in broken.stderr
    sick = hutch("doctor")
    assert sick.returncode == 6
    assert "--rebuild" in sick.stdout
    healed = hutch("doctor", "--rebuild", "--json")
    assert healed.returncode == 0, healed.stderr
    assert [c["name"] for c in json.loads(healed.stdout)["checks"]][3:5] == ["rebuild", "journal"]
    assert list((hutch.store / "journal").glob("data.mdb.broken-*"))
    assert set(_ls(hutch)) == {aid}
    assert hutch("show", "pip").returncode == 2  # names live only in the journal
    hutch.ok("verify", "--full")
    # A journal deleted outright is rebuilt too, and doctor says so.
    shutil.rmtree(hutch.store / "journal")
    report = json.loads(hutch.ok("doctor", "--rebuild", "--json"))
    journal = next(c for c in report["checks"] if c["name"] == "journal")
    assert journal["status"] == "warning"
    assert "rebuilt" in journal["summary"]
    assert any("1 artifact(s) from manifest files" in line for line in journal["details"])
    hutch.ok("install", aid, tmp_path / "dest")
    unzipped = tmp_path / "unzip"
    subprocess.run(["unzip", "-qq", str(wheels[0]), "-d", str(unzipped)], check=True)
    assert tree(tmp_path / "dest") == tree(unzipped)
