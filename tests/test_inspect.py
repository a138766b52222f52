"""ls, show, log, verify and the parsers they share, through the real `hutch` (spec/inspect.md)."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType

import click
import pytest
from conftest import Hutch, objects
from hutch.store.errors import UsageError

# -- helpers ---------------------------------------------------------------------


def make_tar(
    path: Path,
    files: dict[str, bytes],
    *,
    executable: tuple[str, ...] = (),
    symlinks: dict[str, str] | None = None,
) -> Path:
    """A small .tar.gz with these files (and symlinks), written with tarfile."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name in executable else 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def set_times(
    store: Path, aid: str, *, last_used: float | None = None, added: float | None = None
) -> None:
    """Move an artifact's clock (as if it were added or last installed then)."""
    from hutch.store.journal import Txn
    from hutch.store.store import Store

    opened = Store.open(store, create=False)

    def change(txn: Txn) -> None:
        record = txn.artifact(aid)
        assert record is not None
        if last_used is not None:
            record.last_used = last_used
        if added is not None:
            record.added = added
        txn.put_artifact(record)

    opened.journal.write(change)
    opened.journal.close()


COMMON = b"shared between a and b\n" * 4  # 92 bytes


@pytest.fixture
def two(hutch: Hutch, tmp_path: Path) -> tuple[str, str]:
    """Artifacts a (named alpha) and b (named beta) sharing one 92-byte file."""
    a = make_tar(tmp_path / "a-1.0.tar.gz", {"a/common.txt": COMMON, "a/only-a.txt": b"a" * 10})
    b = make_tar(tmp_path / "b-2.0.tar.gz", {"b/common.txt": COMMON, "b/only-b.txt": b"b" * 20})
    return (
        hutch.ok("add", a, "--name", "alpha").strip(),
        hutch.ok("add", b, "--name", "beta").strip(),
    )


# -- ls ----------------------------------------------------------------------------
LS_KEYS = {
    "id",
    "manifest",
    "urls",
    "digests",
    "size",
    "names",
    "files",
    "bytes",
    "unique_bytes",
    "shared_bytes",
    "added",
    "last_used",
}


def test_ls_json_shape_and_unique_vs_shared_bytes(hutch: Hutch, two: tuple[str, str]) -> None:
    """inspect.md §2: unique bytes are objects only this artifact references, the rest shared."""
    a, b = two
    listed = {item["id"]: item for item in json.loads(hutch.ok("ls", "--json"))}
    assert set(listed) == {a, b}
    for item in listed.values():
        assert set(item) == LS_KEYS
        assert isinstance(item["added"], float)
    assert (listed[a]["bytes"], listed[a]["unique_bytes"], listed[a]["shared_bytes"]) == (
        102,
        10,
        92,
    )
    assert (listed[b]["bytes"], listed[b]["unique_bytes"], listed[b]["shared_bytes"]) == (
        112,
        20,
        92,
    )
    assert listed[a]["names"] == ["alpha"]


def test_ls_counts_an_object_once_per_artifact(hutch: Hutch, tmp_path: Path) -> None:
    """inspect.md §2: the same content twice in one artifact is one object, counted once."""
    archive = make_tar(tmp_path / "dup.tar.gz", {"d/x": b"x" * 50, "d/y": b"x" * 50})
    hutch.ok("add", archive)
    (item,) = json.loads(hutch.ok("ls", "--json"))
    assert (item["bytes"], item["unique_bytes"], item["shared_bytes"]) == (100, 50, 0)


def test_ls_plain_output_is_tab_separated_with_full_ids(hutch: Hutch, two: tuple[str, str]) -> None:
    """inspect.md §2: not a terminal: one tab-separated line per artifact, full ids, no header."""
    a, b = two
    lines = hutch.ok("ls").splitlines()
    assert len(lines) == 2
    rows = [line.split("\t") for line in lines]
    assert [r[0] for r in rows] == [a, b]  # oldest first
    for row in rows:
        assert len(row) == 8
        assert all(field.isdigit() for field in row[2:6])
        assert row[6][:4].isdigit()
        assert "T" in row[6]
    assert rows[0][1:6] == ["alpha", "2", "102", "10", "92"]


def test_ls_sort_and_reverse(hutch: Hutch, two: tuple[str, str]) -> None:
    """inspect.md §2: --sort added|used|size, ascending; -r reverses."""
    a, b = two
    now = time.time()
    set_times(hutch.store, a, last_used=now)
    set_times(hutch.store, b, last_used=now - 3600)

    def order(*args: str) -> list[str]:
        return [line.split("\t")[0] for line in hutch.ok("ls", *args).splitlines()]

    assert order() == [a, b]
    assert order("-r") == [b, a]
    assert order("--sort", "used") == [b, a]
    assert order("--sort", "size") == [a, b]
    assert order("--sort", "size", "--reverse") == [b, a]
    assert hutch("ls", "--sort", "name").returncode == 2


def test_ls_filter_through_the_cli(hutch: Hutch, two: tuple[str, str]) -> None:
    """inspect.md §2: --filter terms joined by commas and repeated --filter all must hold."""
    a, b = two
    set_times(hutch.store, a, last_used=time.time() - 40 * 86400)

    def ids(*exprs: str) -> set[str]:
        args = [x for e in exprs for x in ("--filter", e)]
        return {item["id"] for item in json.loads(hutch.ok("ls", "--json", *args))}

    assert ids("unused>30d") == {a}
    assert ids("unused>30d,name=beta") == set()
    assert ids("url=*/b-2.0.tar.gz", "size>100") == {b}
    assert [
        line.split("\t")[0] for line in hutch.ok("ls", "--filter", "name=al*").splitlines()
    ] == [a]
    bad = hutch("ls", "--filter", "colour=red")
    assert bad.returncode == 2
    assert "invalid --filter term 'colour=red'" in bad.stderr
    assert "name=GLOB" in bad.stderr.split("hint:")[1]
    assert "Traceback" not in bad.stderr


def test_ls_filter_terms() -> None:
    """inspect.md §2: every filter term, on records as the journal holds them."""
    from hutch.store.journal import ArtifactRecord
    from hutch.store.stats import Usage

    now = 1_800_000_000.0
    record = ArtifactRecord(
        id="ab" * 32,
        manifest="cd" * 32,
        urls=["https://example.org/numpy-2.0.tar.gz"],
        digests={},
        size=50,
        names=["numpy", "np"],
        files=3,
        bytes=2048,
        added=now - 50 * 86400,
        last_used=now - 40 * 86400,
    )
    use = Usage(unique_bytes=1000, shared_bytes=1048)
    holds = {
        "name=numpy": True,
        "name=np*": True,
        "name=scipy": False,
        "name!=scipy": True,
        "name!=n*": False,
        "url=https://example.org/*": True,
        "url=*.zip": False,
        "id=abab": True,
        "id=ABAB": True,
        "id=cd": False,
        "size>2K": False,
        "size>2047": True,
        "size<1MiB": True,
        "unique>999": True,
        "unique<1000": False,
        "unused>30d": True,
        "unused<30d": False,
        "unused>5w": True,
        "age>7w": True,
        "age<1y": True,
        "name=numpy,unused>30d,size>1K": True,
        "name=numpy,unused>60d": False,
    }
    parse_filters = _cli().parse_filters
    for expr, expected in holds.items():
        conditions = parse_filters((expr,))
        assert all(c(record, use, now) for c in conditions) is expected, expr
    for bad, hint in [
        ("nonsense", "name=GLOB"),
        ("name>x", "name=GLOB"),
        ("size=3", "name=GLOB"),
        ("size>huge", "500MiB"),
        ("unused>10", "30d"),
    ]:
        with pytest.raises(UsageError, match=r"invalid --filter term") as raised:
            parse_filters((bad,))
        assert raised.value.hint is not None
        assert hint in raised.value.hint, bad


def _on_a_tty(hutch: Hutch, *args: str, env: dict[str, str] | None = None) -> str:
    """Run hutch with stdout on a pseudo-terminal (80 columns); what it printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hutch", "--store", str(hutch.store), *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**hutch.env, "COLUMNS": "100", "TERM": "xterm-256color", **(env or {})},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    assert proc.stderr is not None
    proc.stderr.close()
    return b"".join(chunks).decode()


def test_ls_on_a_terminal_is_a_table_and_respects_no_color(
    hutch: Hutch, two: tuple[str, str]
) -> None:
    """inspect.md §2, cli.md: a table with 12-hex ids on a TTY; NO_COLOR means no escapes."""
    a, _ = two
    colored = _on_a_tty(hutch, "ls")
    assert "\x1b[" in colored
    plain = _on_a_tty(hutch, "ls", env={"NO_COLOR": "1"})
    assert "\x1b[" not in plain
    for word in ("ID", "NAME", "UNIQUE", "SHARED", "LAST USED", "alpha", "beta", "92 B"):
        assert word in plain
    assert a[:12] in plain
    assert a not in plain
    assert "2 artifact(s)" in plain


# -- show --------------------------------------------------------------------------
def test_show_json_entries_modes_objects_and_targets(hutch: Hutch, tmp_path: Path) -> None:
    """inspect.md §3: every entry with path, type, mode; files with digest and object path."""
    archive = make_tar(
        tmp_path / "tool-1.tar.gz",
        {"tool/run.sh": b"#!/bin/sh\necho hi\n", "tool/README": b"read me\n"},
        executable=("tool/run.sh",),
        symlinks={"tool/latest": "run.sh"},
    )
    aid = hutch.ok("add", archive, "--name", "tool").strip()
    shown = json.loads(hutch.ok("show", "tool", "--json"))
    assert set(shown) == {"artifact", "manifest_path", "entries"}
    assert set(shown["artifact"]) == LS_KEYS
    assert shown["artifact"]["id"] == aid
    assert Path(shown["manifest_path"]).is_file()
    by_path = {e["path"]: e for e in shown["entries"]}
    assert by_path["tool"] == {"path": "tool", "type": "dir", "mode": "0755"}
    assert by_path["tool/latest"] == {
        "path": "tool/latest",
        "type": "symlink",
        "mode": "0777",
        "target": "run.sh",
    }
    run = by_path["tool/run.sh"]
    assert (run["type"], run["mode"], run["exec"], run["size"]) == ("file", "0555", True, 18)
    assert run["object"].endswith(run["digest"][2:] + ".x")
    assert os.stat(run["object"]).st_mode & 0o777 == 0o555
    assert by_path["tool/README"]["mode"] == "0444"
    text = hutch.ok("show", aid[:12])
    assert f"artifact   {aid}" in text
    assert "-r-xr-xr-x         18 tool/run.sh  objects/" in text
    assert "lrwxrwxrwx            tool/latest -> run.sh" in text
    assert f"manifest   {shown['artifact']['manifest']}" in text


def test_show_unknown_artifact_is_a_usage_error(hutch: Hutch) -> None:
    result = hutch("show", "nosuch")
    assert result.returncode == 2
    assert "no artifact 'nosuch'" in result.stderr
    assert "Traceback" not in result.stderr


# -- log ---------------------------------------------------------------------------
def test_log_outcomes_filters_and_json_shape(hutch: Hutch, tmp_path: Path) -> None:
    """inspect.md §4: committed, failed with its cause, aborted and recovered; --op, --since, -n."""
    first = make_tar(tmp_path / "one.tar.gz", {"one/f": b"1"})
    second = make_tar(tmp_path / "two.tar.gz", {"two/f": b"2"})
    aid = hutch.ok("add", first).strip()
    assert hutch("add", second, "--digest", "sha256:" + "0" * 64).returncode == 3
    assert hutch("add", second, env={"HUTCH_CRASH_AT": "add.extracted"}).returncode == -9
    hutch.ok("rm", aid)  # opening the store sweeps the crashed add's staging first
    records = json.loads(hutch.ok("log", "--json"))
    for r in records:
        assert set(r) == {
            "seq",
            "op",
            "artifact",
            "outcome",
            "detail",
            "time",
            "user",
            "host",
            "pid",
        }
    assert [(r["op"], r["outcome"]) for r in records] == [
        ("add", "committed"),
        ("add", "failed"),
        ("add", "aborted"),
        ("rm", "committed"),
    ]
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    assert "digest mismatch" in records[1]["detail"]
    assert "recovered after crash" in records[2]["detail"]
    assert records[0]["artifact"] == aid
    assert records[0]["pid"] > 0
    assert records[0]["user"]

    def ops(*args: str) -> list[str]:
        return [r["op"] + ":" + r["outcome"] for r in json.loads(hutch.ok("log", "--json", *args))]

    assert ops("-n", "2") == ["add:aborted", "rm:committed"]
    assert ops("--op", "rm") == ["rm:committed"]
    assert ops("--op", "rm,add", "-n", "1") == ["rm:committed"]
    assert ops("--op", "add", "-n", "0") == ["add:committed", "add:failed", "add:aborted"]
    assert len(ops("--since", "1h")) == 4
    assert ops("--since", "2999-01-01") == []
    assert len(ops("--since", time.strftime("%Y-%m-%d"))) == 4
    text = hutch.ok("log").splitlines()
    assert len(text) == 4
    assert "failed" in text[1]
    assert "digest mismatch" in text[1]
    assert "@" in text[0]
    assert f"[{records[0]['pid']}]" in text[0]
    bad = hutch("log", "--since", "yesterday-ish")
    assert bad.returncode == 2
    assert "ISO date" in bad.stderr


# -- verify ------------------------------------------------------------------------
def test_verify_reports_each_artifact_and_each_damaged_file(
    hutch: Hutch, two: tuple[str, str]
) -> None:
    """inspect.md §5: per artifact ok or the damaged files; exit 3 with damage, 0 repaired."""
    a, b = two
    only_a = next(p for p in objects(hutch.store) if p.stat().st_size == 10)
    only_a.unlink()
    result = hutch("verify")
    assert result.returncode == 3
    assert f"{a[:12]} (alpha): damaged, 1 file(s)\n  a/only-a.txt: missing" in result.stdout
    assert f"{b[:12]} (beta): ok" in result.stdout
    assert "verified 2 artifact(s) (stat): 1 ok, 0 repaired, 1 damaged" in result.stderr
    report = json.loads(hutch("verify", "--json").stdout)
    assert {r["artifact"]: r["status"] for r in report} == {a: "damaged", b: "ok"}
    (damaged,) = [r for r in report if r["artifact"] == a]
    assert damaged["damage"] == [
        {"path": "a/only-a.txt", "object": str(only_a), "problem": "missing"}
    ]
    repaired = hutch("verify", "--full", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stderr
    assert {r["artifact"]: r["status"] for r in json.loads(repaired.stdout)} == {
        a: "repaired",
        b: "ok",
    }
    assert hutch("verify", "beta", "-q").stdout == ""
    hutch.ok("verify", "--full")


# -- everywhere --------------------------------------------------------------------
def test_shell_completion_script_and_artifact_names(hutch: Hutch, two: tuple[str, str]) -> None:
    """inspect.md §1: `_HUTCH_COMPLETE=bash_source hutch` prints a script; ARTIFACTs complete."""
    a, _ = two
    script = subprocess.run(
        [sys.executable, "-m", "hutch"],
        env={**hutch.env, "_HUTCH_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "_hutch_completion" in script
    assert "complete -o nosort -F _hutch_completion hutch" in script
    words = f"hutch --store {hutch.store} show al"
    completed = subprocess.run(
        [sys.executable, "-m", "hutch"],
        env={
            **hutch.env,
            "_HUTCH_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": "4",
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert completed.split() == ["plain,alpha"]
    commands = subprocess.run(
        [sys.executable, "-m", "hutch"],
        env={
            **hutch.env,
            "_HUTCH_COMPLETE": "bash_complete",
            "COMP_WORDS": "hutch d",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "plain,doctor" in commands.split()
    assert a  # the store had something to complete


def test_cli_start_up_imports_no_rich_lmdb_or_requests() -> None:
    """Start-up: cli modules import rich, lmdb and requests only when a command needs them."""
    code = (
        "import sys, hutch.cli.app, hutch.cli.inspect, hutch.cli.maintain; "
        "print(sorted(m for m in ('rich', 'lmdb', 'requests') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_install_and_add_import_no_other_command_module() -> None:
    """Start-up: the commands of cli/admin, inspect and maintain load when named or
    listed, not for `install` or `add`; every command is still listed and runs."""
    code = (
        "import sys, hutch.cli.app as a; "
        "print(sorted(m for m in sys.modules if m.startswith('hutch.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = ["hutch.cli.app", "hutch.cli.install", "hutch.cli.options", "hutch.cli.output"]
    assert out.stdout.strip() == str(expected)
    listed = subprocess.run(
        [sys.executable, "-m", "hutch", "--help"], capture_output=True, text=True, check=True
    )
    for name in ("add", "doctor", "gc", "init", "install", "log", "ls", "rm", "show", "stats"):
        assert f"\n  {name} " in listed.stdout, listed.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "hutch", "stats", "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "Usage: hutch stats" in shown.stdout


def _cli() -> ModuleType:
    # cli/app.py loads a command module when one of its commands is named.
    import hutch.cli.app
    import hutch.cli.inspect

    app = hutch.cli.app.app
    assert app.get_command(click.Context(app), "ls") is hutch.cli.inspect.ls
    return hutch.cli.inspect


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("90m", 5400),
        ("12h", 43200),
        ("30d", 2592000),
        ("2w", 1209600),
        ("1d12h", 129600),
        ("0", 0),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """inspect.md §1 DURATION."""
    assert _cli().parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "d", "3 days", "-1d", "1x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        _cli().parse_duration(text)


def test_parse_when_and_size() -> None:
    """inspect.md §1 WHEN (duration ago or ISO date) and SIZE (extract's parse_size)."""
    from datetime import UTC, datetime

    parse_size, parse_when = _cli().parse_size, _cli().parse_when
    assert parse_when("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_when("2024-05-01T12:00+00:00") == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    assert parse_when("2024-05-01") == time.mktime((2024, 5, 1, 0, 0, 0, 0, 0, -1))  # local
    with pytest.raises(UsageError):
        parse_when("last tuesday")
    assert parse_size("10GiB") == 10 << 30
    assert parse_size("500M") == 500 << 20
    assert parse_size("1KB") == 1000
    assert parse_size("0") == 0
    with pytest.raises(UsageError):
        parse_size("lots")
