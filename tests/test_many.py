"""Several artifacts in one command: `hutch add SOURCE...`, `hutch install A D [A D]...`,
and pins carried by the source (`URL#sha256=HEX`). spec/cli.md §add, §install."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Hutch, tamper, tree
from faultserver import FOREVER, FaultServer, Stall, Status


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_add_many_prints_one_id_per_source_in_order(
    hutch: Hutch, wheels: list[Path], sdist: Path
) -> None:
    """cli.md add: one id per SOURCE, in the order given, each pinned by its fragment."""
    sources = [sdist, *wheels]
    with FaultServer() as srv:
        # The first response stalls, so the later sources finish first: order is
        # the order given, not the order of completion.
        urls = [
            srv.serve(
                f"/{p.name}", p.read_bytes(), faults=[Stall(at=100, seconds=0.5)] if i == 0 else []
            )
            for i, p in enumerate(sources)
        ]
        out = hutch.ok(
            "add", *[f"{u}#sha256={_sha(p)}" for u, p in zip(urls, sources, strict=True)]
        )
    ids = out.split()
    assert len(ids) == len(sources)
    listed = {r["id"]: r for r in json.loads(hutch.ok("ls", "--json"))}
    for aid, url, path in zip(ids, urls, sources, strict=True):
        assert listed[aid]["urls"] == [url]  # the fragment is the pin, never part of the URL
        assert listed[aid]["digests"]["sha256"] == _sha(path)
    committed = [r for r in json.loads(hutch.ok("log", "--json")) if r["op"] == "add"]
    assert sorted(r["artifact"] for r in committed) == sorted(ids)


def test_add_many_commits_the_others_when_one_fails(
    hutch: Hutch, wheels: list[Path], sdist: Path
) -> None:
    """cli.md add: a failing source holds back no other; exit code is the first failure's."""
    good = [sdist, *wheels]
    with FaultServer() as srv:
        bad = srv.serve("/gone.tar.gz", b"x", faults=[Status(404, times=FOREVER)])
        urls = [srv.serve(f"/{p.name}", p.read_bytes()) for p in good]
        wrong = f"{urls[0]}#sha256={'0' * 64}"
        result = hutch("add", urls[1], bad, wrong, *urls[2:])
    assert result.returncode == 4, result.stderr  # the 404 comes first in SOURCE order
    assert "gone.tar.gz" in result.stderr
    assert "digest mismatch" in result.stderr
    assert "2 of 4 sources failed" in result.stderr
    ids = result.stdout.split()
    assert len(ids) == 2
    assert {r["id"] for r in json.loads(hutch.ok("ls", "--json"))} == set(ids)


def test_fragment_pin_is_checked(hutch: Hutch, sdist: Path) -> None:
    """cli.md add: a wrong `#sha256=` is exit 3; a fragment and --digest that disagree, exit 2."""
    sha = _sha(sdist)
    result = hutch("add", f"{sdist}#sha256={'1' * 64}")
    assert result.returncode == 3, result.stderr
    result = hutch("add", f"{sdist}#sha256={sha}", "--digest", f"sha256:{'2' * 64}")
    assert result.returncode == 2, result.stderr
    assert "give one digest" in result.stderr
    aid = hutch.ok("add", f"{sdist}#sha256={sha}", "--digest", f"sha256:{sha}").strip()
    assert hutch.ok("add", f"{sdist}#SHA256={sha.upper()}").strip() == aid


@pytest.mark.parametrize("option", [["--digest", "sha256:" + "0" * 64], ["--name", "x"]])
def test_one_artifact_options_refuse_several_sources(
    hutch: Hutch, wheels: list[Path], option: list[str]
) -> None:
    """cli.md add: --digest/--name/--mirror describe one artifact: exit 2 with several."""
    result = hutch("add", *wheels[:2], *option)
    assert result.returncode == 2, result.stderr
    assert "SOURCE#sha256=HEX" in result.stderr
    assert not (hutch.store / "journal").exists() or hutch.ok("ls") == ""


def test_install_pairs(hutch: Hutch, wheels: list[Path], sdist: Path, tmp_path: Path) -> None:
    """cli.md install: several ARTIFACT DEST pairs in one command, each tree whole."""
    ids = hutch.ok("add", sdist, *wheels).split()
    pairs = [x for i, aid in enumerate(ids) for x in (aid, tmp_path / f"d{i}")]
    result = hutch("install", *pairs, "--link", "hardlink")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("installed ") == len(ids)
    for i, aid in enumerate(ids):
        single = tmp_path / f"single{i}"
        hutch.ok("install", aid, single, "--link", "copy")
        assert tree(tmp_path / f"d{i}") == tree(single)


@pytest.mark.parametrize("spelling", ["plain", "symlink", "dotdot"])
def test_install_pairs_one_inside_another_in_the_order_given(
    hutch: Hutch, wheels: list[Path], sdist: Path, tmp_path: Path, spelling: str
) -> None:
    """cli.md install: pairs are installed side by side, except where one DEST lies
    inside another, however each is spelled: then in the order given, the inner tree
    into the outer one."""
    outer_id, inner_id = hutch.ok("add", sdist, wheels[0]).split()
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    outer = real / "d"
    inner = outer / "vendor" / "inner"
    given = {
        "plain": outer,
        "symlink": tmp_path / "alias" / "d",
        "dotdot": real / ".." / "real" / "d",
    }[spelling]
    hutch.ok("install", outer_id, given, inner_id, inner, "--link", "hardlink")
    hutch.ok("install", outer_id, tmp_path / "outer", inner_id, tmp_path / "inner")
    assert tree(inner) == tree(tmp_path / "inner")
    outside = {p: v for p, v in tree(outer).items() if not p.startswith("vendor")}
    assert outside == tree(tmp_path / "outer")


def _children(parent: int) -> list[int]:
    return [
        int(p.parent.name)
        for p in Path("/proc").glob("[0-9]*/stat")
        if _stat_fields(p)[1:2] == [str(parent)]
    ]


def _stat_fields(path: Path) -> list[str]:
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def test_install_pairs_a_killed_worker_fails_its_pair_alone(
    hutch: Hutch, wheels: list[Path], sdist: Path, tmp_path: Path
) -> None:
    """cli.md install: a worker killed (here each, at install.built) is its own pair's
    failure, named by its DEST; every pair is reported; nothing half-built is left."""
    ids = hutch.ok("add", sdist, wheels[0]).split()
    dests = [tmp_path / "out" / "d0", tmp_path / "out" / "d1"]
    pairs = [x for aid, d in zip(ids, dests, strict=True) for x in (aid, d)]
    env = {**hutch.env, "HUTCH_THREADS": "2", "HUTCH_CRASH_AT": "install.built"}
    result = hutch("install", *pairs, env=env)
    assert result.returncode == 1, result.stderr
    for d in dests:
        assert f"the worker for DEST {d} ended without a result (killed by signal 9)" in (
            result.stderr
        ), result.stderr
    assert "2 of 2 installs failed" in result.stderr
    assert not any(d.exists() for d in dests)
    hutch.ok("install", *pairs)  # and the dead workers' temporary trees go
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d0", "d1"]


def test_install_pairs_workers_die_with_the_command(
    hutch: Hutch, wheels: list[Path], sdist: Path, tmp_path: Path
) -> None:
    """install.md §5: a command killed by its caller (a build tool's timeout) takes its
    workers with it: no tree is published after the command ended."""
    ids = hutch.ok("add", sdist, wheels[0]).split()
    dests = [tmp_path / "d0", tmp_path / "d1"]
    pairs = [str(x) for aid, d in zip(ids, dests, strict=True) for x in (aid, d)]
    env = {**hutch.env, "HUTCH_THREADS": "2", "HUTCH_STOP_AT": "install.built"}
    cmd = [sys.executable, "-m", "hutch", "--store", str(hutch.store), "install", *pairs]
    with subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL) as proc:
        try:
            deadline = time.monotonic() + 60
            stopped: list[int] = []
            while len(stopped) < 2 and time.monotonic() < deadline:
                stopped = [c for c in _children(proc.pid) if _stat_fields(
                    Path(f"/proc/{c}/stat"))[:1] in (["T"], ["t"])]  # fmt: skip
                time.sleep(0.02)
            assert len(stopped) == 2, "the workers did not reach install.built"
        finally:
            proc.kill()
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    time.sleep(0.5)
    assert not any(d.exists() for d in dests)
    assert all(_stat_fields(Path(f"/proc/{pid}/stat"))[:1] in ([], ["Z"]) for pid in stopped)


def test_install_pairs_add_missing_urls_concurrently(
    hutch: Hutch, wheels: list[Path], tmp_path: Path
) -> None:
    """cli.md install: absent URLs are added first (pinned by fragment), then installed."""
    with FaultServer() as srv:
        urls = [srv.serve(f"/{w.name}", w.read_bytes()) for w in wheels]
        pairs = [
            x
            for i, (u, w) in enumerate(zip(urls, wheels, strict=True))
            for x in (f"{u}#sha256={_sha(w)}", tmp_path / f"d{i}")
        ]
        hutch.ok("install", *pairs)
        assert all(len(srv.requests_for(f"/{w.name}")) == 1 for w in wheels)
    assert len(json.loads(hutch.ok("ls", "--json"))) == len(wheels)
    assert all((tmp_path / f"d{i}").is_dir() for i in range(len(wheels)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "d1", "b"], "without a DEST"),
        (["a", "d1", "b", "d1"], "given twice"),
        (["a", "d1", "b", "d2", "--digest", "sha256:" + "0" * 64], "apply to one SOURCE"),
    ],
)
def test_install_pairs_usage(hutch: Hutch, tmp_path: Path, args: list[str], message: str) -> None:
    """cli.md install: malformed pairs are exit 2, before anything is touched."""
    args = [str(tmp_path / a) if a.startswith("d") else a for a in args]
    result = hutch("install", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "d1").exists()


def test_install_pairs_fail_alone(hutch: Hutch, wheels: list[Path], tmp_path: Path) -> None:
    """cli.md install: each pair succeeds or fails alone; the exit code is the first failure's."""
    aid = hutch.ok("add", wheels[0]).strip()
    (tmp_path / "taken").mkdir()
    result = hutch(
        "install", aid, tmp_path / "first", aid, tmp_path / "taken", aid, tmp_path / "third"
    )
    assert result.returncode == 2, result.stderr
    assert "already exists" in result.stderr
    assert "1 of 3 installs failed" in result.stderr
    assert tree(tmp_path / "first") == tree(tmp_path / "third")
    assert len(tree(tmp_path / "first")) > 10
    assert list((tmp_path / "taken").iterdir()) == []


def test_install_rewrites_last_used_at_most_hourly(
    hutch: Hutch, sdist: Path, tmp_path: Path
) -> None:
    """store.md §11: last_used moves on an install only when it is over an hour old."""
    aid = hutch.ok("add", sdist).strip()

    def record() -> dict[str, float]:
        return next(r for r in json.loads(hutch.ok("ls", "--json")) if r["id"] == aid)

    added = record()["last_used"]
    hutch.ok("install", aid, tmp_path / "a")
    assert record()["last_used"] == added  # fresh: not rewritten
    tamper(hutch.store, "artifacts", aid, lambda r: r.update(last_used=time.time() - 7200))
    before = time.time()
    hutch.ok("install", aid, tmp_path / "b")
    assert record()["last_used"] >= before
