"""The store core end to end, through the real `hutch` command (spec/store.md, spec/cli.md)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
from conftest import Hutch, objects, tree


def _gnu_tar(archive: Path, into: Path) -> Path:
    into.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(into)], check=True)
    return into


def _unzip(archive: Path, into: Path) -> Path:
    subprocess.run(["unzip", "-qq", str(archive), "-d", str(into)], check=True)
    return into


def test_add_install_sdist_matches_gnu_tar(hutch: Hutch, sdist: Path, tmp_path: Path) -> None:
    """store.md §7, §11: an sdist of thousands of files installs exactly as GNU tar extracts."""
    aid = hutch.ok("add", sdist).strip()
    assert len(aid) == 64
    assert aid == _blake3(sdist)
    hutch.ok("install", aid, tmp_path / "dest")
    expected = tree(_gnu_tar(sdist, tmp_path / "gnu"))
    got = tree(tmp_path / "dest")
    assert len(expected) > 2000
    assert got.keys() == expected.keys()
    assert got == expected


@pytest.mark.parametrize("link", ["hardlink", "copy", "auto"])
def test_add_install_wheels_match_unzip(
    hutch: Hutch, wheels: list[Path], tmp_path: Path, link: str
) -> None:
    """Real wheels install exactly as unzip extracts them, content and exec bit."""
    for wheel in wheels:
        aid = hutch.ok("add", wheel).strip()
        dest = tmp_path / f"{wheel.stem}-{link}"
        hutch.ok("install", aid, dest, "--link", link)
        expected = tree(_unzip(wheel, tmp_path / f"unzip-{wheel.stem}-{link}"))
        assert tree(dest) == expected


def test_exec_bit_is_part_of_object_identity(hutch: Hutch, tmp_path: Path) -> None:
    """store.md §3: the same bytes as exe and non-exe are two objects."""
    src = tmp_path / "src" / "pkg"
    src.mkdir(parents=True)
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "copy.txt").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "copy.txt").chmod(0o644)
    archive = tmp_path / "a.tar.gz"
    subprocess.run(["tar", "-C", str(tmp_path / "src"), "-czf", str(archive), "pkg"], check=True)
    aid = hutch.ok("add", archive).strip()
    found = objects(hutch.store)
    assert len(found) == 2
    assert sorted(p.stat().st_mode & 0o777 for p in found) == [0o444, 0o555]
    hutch.ok("install", aid, tmp_path / "d", "--link", "hardlink")
    assert os.access(tmp_path / "d/pkg/run.sh", os.X_OK)
    assert not os.access(tmp_path / "d/pkg/copy.txt", os.X_OK)


def test_add_is_idempotent(hutch: Hutch, sdist: Path) -> None:
    """cli.md add: adding an artifact already present fetches nothing and prints the same id."""
    first = hutch.ok("add", sdist).strip()
    before = {p: p.stat().st_ino for p in objects(hutch.store)}
    second = hutch("add", sdist)
    assert second.returncode == 0
    assert second.stdout.strip() == first
    assert second.stdout.count("\n") == 1
    assert {p: p.stat().st_ino for p in objects(hutch.store)} == before
    log = json.loads(hutch.ok("log", "--json"))
    assert [r["op"] for r in log] == ["add"]  # the second add committed nothing


def test_add_without_digest_warns_and_records(hutch: Hutch, sdist: Path) -> None:
    result = hutch("add", sdist)
    assert result.returncode == 0
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert f"sha256:{sha}" in result.stderr
    assert "warning" in result.stderr
    shown = json.loads(hutch.ok("show", result.stdout.strip(), "--json"))
    assert shown["artifact"]["digests"]["sha256"] == sha


def test_digest_formats_and_resolution(hutch: Hutch, wheels: list[Path], tmp_path: Path) -> None:
    """cli.md: sha256/sha512/blake3 hex and SRI pins; install by id, prefix, digest, name."""
    import base64

    wheel = wheels[0]
    data = wheel.read_bytes()
    sri = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    aid = hutch.ok("add", wheel, "--digest", sri, "--name", "pip-wheel").strip()
    for pin in (
        f"sha256:{hashlib.sha256(data).hexdigest()}",
        f"sha512:{hashlib.sha512(data).hexdigest()}",
        f"blake3:{aid}",
        "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode(),
    ):
        assert hutch.ok("add", wheel, "--digest", pin).strip() == aid
    for i, ref in enumerate(
        [aid, aid[:8], "pip-wheel", f"sha256:{hashlib.sha256(data).hexdigest()}"]
    ):
        hutch.ok("install", ref, tmp_path / f"d{i}")
    bad = hutch("install", "nosuchname", tmp_path / "x")
    assert bad.returncode == 2
    assert "no artifact" in bad.stderr


def test_wrong_digest_exits_3_and_nothing_is_listed(hutch: Hutch, sdist: Path) -> None:
    """cli.md exit 3: a digest mismatch commits nothing and leaves staging empty."""
    result = hutch("add", sdist, "--digest", "sha256:" + "0" * 64)
    assert result.returncode == 3, result.stderr
    assert "expected sha256:" + "0" * 64 in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(hutch.ok("ls", "--json")) == []
    assert objects(hutch.store) == []
    assert list((hutch.store / "staging").iterdir()) == []


def test_invalid_digest_is_a_usage_error(hutch: Hutch, sdist: Path) -> None:
    result = hutch("add", sdist, "--digest", "md5:abc")
    assert result.returncode == 2
    assert "hint:" in result.stderr


def test_missing_source_names_the_os_error(hutch: Hutch, tmp_path: Path) -> None:
    """cli.md errors: what failed, where, the errno text, and a hint; no traceback."""
    result = hutch("add", tmp_path / "nope.tar.gz")
    assert result.returncode == 4
    assert result.stderr.startswith("error: ")
    assert "No such file or directory (ENOENT)" in result.stderr
    assert str(tmp_path / "nope.tar.gz") in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr


def test_cleaner_deleting_and_truncating_objects_heals_on_install(
    hutch: Hutch, sdist: Path, tmp_path: Path
) -> None:
    """store.md §10: a tmpwatch-like cleaner never makes an install wrong or fail."""
    aid = hutch.ok("add", sdist).strip()
    found = objects(hutch.store)
    rng = random.Random(7)
    victims = rng.sample(found, 40)
    for p in victims[:20]:
        p.unlink()
    for p in victims[20:]:
        size = p.stat().st_size
        p.chmod(0o644)
        with p.open("r+b") as f:
            f.truncate(size // 2)
    # A cleaner that also removes empty fan-out directories.
    for d in (hutch.store / "objects").iterdir():
        if not any(d.iterdir()):
            d.rmdir()
    verify = hutch("verify")
    assert verify.returncode == 3
    assert "missing" in verify.stdout
    result = hutch("install", aid, tmp_path / "dest")
    assert result.returncode == 0, result.stderr
    assert "repaired" in result.stderr
    assert tree(tmp_path / "dest") == tree(_gnu_tar(sdist, tmp_path / "gnu"))
    hutch.ok("verify", "--full")
    log = json.loads(hutch.ok("log", "--json"))
    assert any(r["op"] == "repair" and r["outcome"] == "committed" for r in log)


def test_verify_repair_heals_and_full_detects_corruption(hutch: Hutch, wheels: list[Path]) -> None:
    """store.md §10: verify exits 3 on damage; --repair heals it and exits 0."""
    aid = hutch.ok("add", wheels[0]).strip()
    victim = max(objects(hutch.store), key=lambda p: p.stat().st_size)
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    victim.chmod(0o444)  # size and mode as they were: only the bytes differ
    assert hutch("verify", aid).returncode == 0  # same size: stat cannot see it
    full = hutch("verify", "--full", "--json")
    assert full.returncode == 3
    (entry,) = json.loads(full.stdout)
    assert entry["status"] == "damaged"
    assert entry["damage"][0]["problem"].startswith("corrupt")
    hutch.ok("verify", "--full", "--repair")
    hutch.ok("verify", "--full")


def test_a_chmod_object_is_damage_and_healed_before_it_is_linked(
    hutch: Hutch, wheels: list[Path], tmp_path: Path
) -> None:
    """store.md §10: stat verify checks the exact object mode; a hard link shares the inode."""
    aid = hutch.ok("add", wheels[0]).strip()
    plain = next(p for p in objects(hutch.store) if not p.name.endswith(".x"))
    plain.chmod(0o644)  # writable: every hardlinked tree could write the store's copy
    result = hutch("verify", "--json")
    assert result.returncode == 3
    (entry,) = json.loads(result.stdout)
    assert {d["problem"] for d in entry["damage"]} == {"wrong mode (0644, expected 0444)"}
    hutch.ok("install", aid, tmp_path / "dest", "--link", "hardlink")
    assert plain.stat().st_mode & 0o7777 == 0o444
    installed = [p for p in (tmp_path / "dest").rglob("*") if p.is_file()]
    assert all(p.stat().st_mode & 0o222 == 0 for p in installed)
    hutch.ok("verify")


def test_damage_under_a_subdir_is_healed(hutch: Hutch, sdist: Path, tmp_path: Path) -> None:
    """store.md §10: healing works by object, also when --subdir re-roots the paths."""
    aid = hutch.ok("add", sdist).strip()
    shown = json.loads(hutch.ok("show", aid, "--json"))
    top = shown["entries"][0]["path"].split("/")[0]
    inside = [e for e in shown["entries"] if e["path"].startswith(f"{top}/json/")]
    victims = [e for e in inside if e["type"] == "file"][:3]
    for e in victims:
        Path(e["object"]).unlink()
    result = hutch("install", aid, tmp_path / "json", "--subdir", f"{top}/json")
    assert result.returncode == 0, result.stderr
    assert "repaired 3 damaged file(s)" in result.stderr
    expected = tree(_gnu_tar(sdist, tmp_path / "gnu") / top / "json")
    assert tree(tmp_path / "json") == expected
    repairs = [r["detail"] for r in json.loads(hutch.ok("log", "--json", "--op", "repair"))]
    assert repairs == ["restored 3 object(s)"]  # one re-fetch, the right objects at once
    hutch.ok("verify")


def test_unreachable_source_fails_heal_and_installs_nothing(
    hutch: Hutch, sdist: Path, tmp_path: Path
) -> None:
    """store.md §10: if healing fails, nothing is installed and the error lists the damage."""
    src = tmp_path / "moved.tar.gz"
    shutil.copy(sdist, src)
    aid = hutch.ok("add", src).strip()
    src.unlink()
    victim = objects(hutch.store)[0]
    victim.unlink()
    result = hutch("install", aid, tmp_path / "dest")
    assert result.returncode == 3
    assert "missing" in result.stderr
    assert "re-fetching" in result.stderr
    assert not (tmp_path / "dest").exists()
    assert [p.name for p in tmp_path.iterdir() if "hutch-tmp" in p.name] == []


def test_journal_deleted_install_still_works(hutch: Hutch, sdist: Path, tmp_path: Path) -> None:
    """store.md §9: a cleaner deleting the whole journal loses nothing committed."""
    aid = hutch.ok("add", sdist, "--name", "std").strip()
    shutil.rmtree(hutch.store / "journal")
    hutch.ok("install", aid, tmp_path / "dest")
    assert tree(tmp_path / "dest") == tree(_gnu_tar(sdist, tmp_path / "gnu"))
    listed = json.loads(hutch.ok("ls", "--json"))
    assert [a["id"] for a in listed] == [aid]
    log = json.loads(hutch.ok("log", "--json"))
    assert log[0]["op"] == "rebuild"


def test_manifest_id_is_deterministic_across_stores(sdist: Path, tmp_path: Path) -> None:
    """store.md §4: the same archive from the same URL yields the same manifest id anywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")}
    ids = []
    for name in ("a", "b"):
        h = Hutch(tmp_path / name, env)
        aid = h.ok("add", sdist).strip()
        ids.append(json.loads(h.ok("show", aid, "--json"))["artifact"]["manifest"])
        manifest = tmp_path / name / "manifests" / f"{ids[-1]}.json"
        assert manifest.stat().st_mode & 0o777 == 0o444
        raw = manifest.read_bytes()
        assert b"\n" not in raw
        data = json.loads(raw)
        assert set(data) == {"entries", "format", "source"}
        keys = set().union(*(e.keys() for e in data["entries"]))
        assert keys <= {"path", "type", "size", "exec", "digest", "target"}  # no time, no host
    assert ids[0] == ids[1]


def test_install_refuses_existing_dest_and_force_replaces(
    hutch: Hutch, wheels: list[Path], tmp_path: Path
) -> None:
    """store.md §11: DEST must not exist unless --force, which swaps atomically."""
    a = hutch.ok("add", wheels[0]).strip()
    b = hutch.ok("add", wheels[-1]).strip()
    dest = tmp_path / "dest"
    hutch.ok("install", a, dest)
    again = hutch("install", b, dest)
    assert again.returncode == 2
    assert "--force" in again.stderr
    hutch.ok("install", b, dest, "--force")
    assert tree(dest) == tree(_unzip(wheels[-1], tmp_path / "u"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "store", "u"]


def test_install_a_url_adds_it_first(hutch: Hutch, wheels: list[Path], tmp_path: Path) -> None:
    url = wheels[0].as_uri()
    digest = "sha256:" + hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    hutch.ok("install", url, tmp_path / "d", "--digest", digest)
    assert len(json.loads(hutch.ok("ls", "--json"))) == 1
    wrong = hutch("install", url, tmp_path / "e", "--digest", "sha256:" + "1" * 64)
    assert wrong.returncode == 3


def test_store_layout(hutch: Hutch, wheels: list[Path]) -> None:
    """store.md §3: CACHEDIR.TAG, fan-out objects named by blake3, read-only."""
    hutch.ok("add", wheels[0])
    tag = (hutch.store / "CACHEDIR.TAG").read_bytes()
    assert tag.startswith(b"Signature: 8a477f597d28d172789f06886806bc55")
    for p in objects(hutch.store):
        digest = p.parent.name + p.name.removesuffix(".x")
        assert len(digest) == 64
        assert _blake3(p) == digest
        assert p.stat().st_mode & 0o222 == 0


def test_journal_is_pinned_to_lmdb_09_format(hutch: Hutch, wheels: list[Path]) -> None:
    """store.md §5: new journals use LMDB data format v1 whatever LMDB_DEFAULT_LIB_VERSION says."""
    hutch.ok("add", wheels[0], env={"LMDB_DEFAULT_LIB_VERSION": "1"})
    head = (hutch.store / "journal" / "data.mdb").read_bytes()[:64]
    magic = (0xBEEFC0DE).to_bytes(4, "little")
    at = head.index(magic)
    assert int.from_bytes(head[at + 4 : at + 8], "little") == 1
    hutch.ok("ls")


@pytest.mark.parametrize(
    "point",
    ["add.fetched", "add.placing", "add.extracted", "add.published", "add.synced", "add.committed"],
)
def test_kill_9_during_add_recovers(hutch: Hutch, sdist: Path, point: str, tmp_path: Path) -> None:
    """store.md §7 crash table: a kill -9 at each step leaves a store that verifies and re-adds."""
    crashed = hutch("add", sdist, env={"HUTCH_CRASH_AT": point})
    assert crashed.returncode == -9
    listed = json.loads(hutch.ok("ls", "--json"))
    assert len(listed) == (1 if point == "add.committed" else 0)
    assert list((hutch.store / "staging").iterdir()) == []  # swept on open
    log = json.loads(hutch.ok("log", "--json"))
    assert any(r["outcome"] == "aborted" for r in log)
    hutch.ok("verify", "--full")
    aid = hutch.ok("add", sdist).strip()
    hutch.ok("verify", "--full")
    hutch.ok("install", aid, tmp_path / "d")
    assert tree(tmp_path / "d") == tree(_gnu_tar(sdist, tmp_path / "gnu"))


def test_errors_have_no_traceback_unless_verbose(hutch: Hutch, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"<html>not an archive</html>")
    quiet = hutch("add", bad)
    assert quiet.returncode == 5
    assert "Traceback" not in quiet.stderr
    loud = subprocess.run(
        [*_cmd(hutch), "-v", "add", str(bad)],
        capture_output=True,
        text=True,
        env=hutch.env,
        check=False,
    )
    assert loud.returncode == 5
    assert "Traceback" in loud.stderr


def _cmd(h: Hutch) -> list[str]:
    import sys

    return [sys.executable, "-m", "hutch", "--store", str(h.store)]


def _blake3(path: Path) -> str:
    import blake3

    return blake3.blake3(path.read_bytes()).hexdigest()


def test_zip_fixture_sanity(wheels: list[Path]) -> None:
    with zipfile.ZipFile(wheels[0]) as z:
        assert len(z.namelist()) > 100


def test_http_add_twice_downloads_once_and_heals_over_http(
    hutch: Hutch, sdist: Path, tmp_path: Path
) -> None:
    """cli.md add + store.md §10: a present artifact is not re-downloaded; healing re-fetches."""
    from faultserver import FaultServer

    data = sdist.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with FaultServer() as srv:
        url = srv.serve("/std.tar.gz", data)
        aid = hutch.ok("add", url, "--digest", f"sha256:{sha}").strip()
        assert hutch.ok("add", url, "--digest", f"sha256:{sha}").strip() == aid
        assert hutch.ok("add", url).strip() == aid
        assert len(srv.requests_for("/std.tar.gz")) == 1
        for p in objects(hutch.store)[::50]:
            p.unlink()
        hutch.ok("install", url, tmp_path / "d", "--digest", f"sha256:{sha}")
        assert len(srv.requests_for("/std.tar.gz")) == 2  # the heal
    assert tree(tmp_path / "d") == tree(_gnu_tar(sdist, tmp_path / "gnu"))


def test_concurrent_adds_of_one_artifact_download_it_once(hutch: Hutch, sdist: Path) -> None:
    """store.md §8: two adds of the same source at once: one downloads, the other reuses."""
    from faultserver import FaultServer, Stall

    data = sdist.read_bytes()
    with FaultServer() as srv:
        # The first response stalls mid-body, so both processes overlap in time.
        url = srv.serve("/std.tar.gz", data, faults=[Stall(at=len(data) // 2, seconds=1.0)])
        procs = [
            subprocess.Popen(
                [*_cmd(hutch), "add", url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=hutch.env,
            )
            for _ in range(3)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outs
        assert len({o[0] for o in outs}) == 1
        fresh = [r for r in srv.requests_for("/std.tar.gz") if r.range is None]
        assert len(fresh) == 1  # one download from byte 0; the rest is its resume
    log = json.loads(hutch.ok("log", "--json"))
    assert [r["op"] for r in log if r["outcome"] == "committed"] == ["add"]


def _object_path(store: Path, data: bytes) -> Path:
    import blake3

    key = blake3.blake3(data).hexdigest()
    return store / "objects" / key[:2] / key[2:]


def test_add_keeps_an_object_path_that_holds_the_bytes_and_replaces_any_other(
    hutch: Hutch, tmp_path: Path
) -> None:
    """store.md §7 step 5: content is written straight to its object path. A file already
    there is kept only if it holds exactly those bytes, read-only; one with other bytes of
    the same size, a short one or a writable one is replaced whole."""
    contents = {
        "good": b"already here, intact\n",
        "wrong": b"here with other bytes\n",
        "short": b"here but cut short\n",
        "writable": b"here but chmod 0644\n",
        "fresh": b"not here yet\n",
    }
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in contents.items():
            info = tarfile.TarInfo(f"pkg/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    hutch.ok("init")
    paths = {name: _object_path(hutch.store, data) for name, data in contents.items()}
    planted = {
        "good": (contents["good"], 0o444),
        "wrong": (bytes(len(contents["wrong"])), 0o444),
        "short": (contents["short"][:4], 0o444),
        "writable": (contents["writable"], 0o644),
    }
    for name, (data, mode) in planted.items():
        paths[name].write_bytes(data)
        paths[name].chmod(mode)
    inodes = {name: paths[name].stat().st_ino for name in planted}

    aid = hutch.ok("add", archive).strip()
    for name, path in paths.items():
        assert path.read_bytes() == contents[name], name
        assert path.stat().st_mode & 0o7777 == 0o444, name
    assert paths["good"].stat().st_ino == inodes["good"]  # kept: installs may share it
    assert all(paths[n].stat().st_ino != inodes[n] for n in ("wrong", "short", "writable"))
    assert list((hutch.store / "staging").iterdir()) == []
    hutch.ok("verify", "--full")
    hutch.ok("install", aid, tmp_path / "d")
    assert {p.name: p.read_bytes() for p in (tmp_path / "d" / "pkg").iterdir()} == contents


def test_an_add_killed_after_creating_an_object_leaves_an_empty_file_the_next_add_fills(
    hutch: Hutch, tmp_path: Path
) -> None:
    """store.md §7 crash table, step 5: a kill -9 between creating an object file and
    writing it leaves that file empty and unreferenced; the next add replaces it."""
    data = b"the first and only member\n"
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("pkg/only")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    crashed = hutch("add", archive, env={"HUTCH_CRASH_AT": "add.placing"})
    assert crashed.returncode == -9
    path = _object_path(hutch.store, data)
    assert objects(hutch.store) == [path]
    assert path.stat().st_size == 0
    aid = hutch.ok("add", archive).strip()
    assert path.read_bytes() == data
    hutch.ok("verify", "--full")
    hutch.ok("install", aid, tmp_path / "d")
    assert (tmp_path / "d" / "pkg" / "only").read_bytes() == data


def test_a_refused_archive_leaves_only_unreferenced_objects_and_gc_frees_them(
    hutch: Hutch, tmp_path: Path
) -> None:
    """store.md §7, inspect.md gc: members written before a refusal (a CRC error in a later
    member) are objects no manifest refers to; nothing is committed and gc frees them."""
    import archives

    good, bad = b"written before the refusal\n", b"fails its CRC\n"
    archive = tmp_path / "a.zip"
    archive.write_bytes(
        archives.raw_zip(
            [
                archives.RawEntry(b"pkg/good", good),
                archives.RawEntry(b"pkg/bad", bad, crc=zlib.crc32(bad) ^ 1),
            ]
        )
    )
    refused = hutch("add", archive)
    assert refused.returncode == 5, refused.stderr
    assert "pkg/bad" in refused.stderr
    assert "CRC" in refused.stderr
    assert json.loads(hutch.ok("ls", "--json")) == []
    assert objects(hutch.store) == [_object_path(hutch.store, good)]
    assert list((hutch.store / "staging").iterdir()) == []
    hutch.ok("gc")
    assert objects(hutch.store) == []


def test_a_symlink_at_an_object_path_is_damage_and_an_add_replaces_it(
    hutch: Hutch, tmp_path: Path
) -> None:
    """store.md §7 step 5, §10: an object path holding a symlink (to the right bytes, even)
    is not an object: add replaces it, and verify (stat and full) reports it once committed."""
    data = b"the bytes the symlink points at\n"
    outside = tmp_path / "outside"
    outside.write_bytes(data)
    outside.chmod(0o444)
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("pkg/f")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    hutch.ok("init")
    path = _object_path(hutch.store, data)
    path.symlink_to(outside)
    aid = hutch.ok("add", archive).strip()
    assert not path.is_symlink()
    assert path.read_bytes() == data
    hutch.ok("install", aid, tmp_path / "d")
    assert not (tmp_path / "d" / "pkg" / "f").is_symlink()

    path.unlink()
    path.symlink_to(outside)  # a committed object swapped for a symlink
    for level in ((), ("--full",)):
        found = hutch("verify", *level)
        assert found.returncode == 3, found.stderr
        assert "not a regular file" in found.stdout
