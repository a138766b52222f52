"""How the command ends (cli.leave): without Python's teardown, but nothing an exit owes is lost.

Each test runs a real process: the first ones call ``leave`` after setting up
what it must handle, the last ones run the `hutch` command itself.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import lmdb
import pytest
from conftest import Hutch, _clean_env
from hutch.store.store import Store


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_clean_env(),  # stdout buffered, as a command's is when it is not a terminal
    )


def test_leave_runs_atexit_handlers_flushes_and_exits_with_the_code() -> None:
    done = _run("""
        import atexit, sys
        from hutch.cli import leave
        atexit.register(lambda: print("handler ran", file=sys.stderr))
        sys.stdout.write("buffered, no newline")
        leave(3)
    """)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, no newline"
    assert done.stderr == "handler ran\n"


# The text is still in stdout's buffer when leave() runs; then fd 1 becomes a full disk.
_FILLED = """
    import os, sys
    from hutch.cli import leave
    sys.stdout.write("x" * 100)
    os.dup2(os.open("/dev/full", os.O_WRONLY), 1)
    leave({code})
"""


# Not the bare errno, which would read as the store's disk being full.
_CANNOT_WRITE = (
    "error: cannot write the output to stdout\n"
    "caused by: No space left on device (ENOSPC)\n"
    "hint: the disk stdout goes to is full; free space there, or send the output elsewhere\n"
)


def test_leave_says_when_the_output_cannot_be_written() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    done = _run(_FILLED.format(code=0))
    assert done.returncode == 1
    assert done.stderr == _CANNOT_WRITE


def test_leave_keeps_the_failure_code_when_the_output_also_fails() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    done = _run(_FILLED.format(code=4))
    assert done.returncode == 4
    assert done.stderr == ""  # the command said why it failed; this is not news


def _tar(path: Path, name: str, data: bytes) -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def _to(stdout: int, hutch: Hutch, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hutch", "--store", str(hutch.store), *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=hutch.env,
        timeout=60,
        check=False,
    )


def test_a_full_disk_behind_stdout_is_said_once(hutch: Hutch) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        done = _to(full.fileno(), hutch, "--version")
    assert done.returncode == 1
    assert done.stderr == _CANNOT_WRITE


def test_a_command_whose_output_meets_a_full_disk_says_so(hutch: Hutch, tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    hutch.ok("add", _tar(tmp_path / "a.tar", "a.txt", b"").as_uri())
    for args in (["ls"], ["ls", "--json"], ["log"]):
        with open("/dev/full", "w") as full:
            done = _to(full.fileno(), hutch, *args)
        assert (done.returncode, done.stderr) == (1, _CANNOT_WRITE), args


def test_an_add_whose_output_fails_still_says_every_failure(hutch: Hutch, tmp_path: Path) -> None:
    """The first id's write fails; the source that failed after it is still said, with its
    exit code, and so is what was committed."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    sources = [
        str(_tar(tmp_path / "a1.tar", "a.txt", b"a")),
        str(tmp_path / "missing.tar"),
        str(_tar(tmp_path / "a2.tar", "b.txt", b"b")),
    ]
    with open("/dev/full", "w") as full:
        done = _to(full.fileno(), hutch, "add", *sources)
    assert done.returncode == 4, done.stderr  # the fetch's, not the write's 1
    assert "error: could not fetch " in done.stderr
    assert _CANNOT_WRITE in done.stderr
    assert "2 artifact(s) committed all the same: `hutch ls` lists them\n" in done.stderr
    assert done.stderr.endswith("1 of 3 sources failed\n")
    assert len(hutch.ok("ls").splitlines()) == 2

    # A reader that left: no write error to say, the failure still said and its code kept.
    read, write = os.pipe()
    os.close(read)
    try:
        gone = _to(write, hutch, "add", *sources)
    finally:
        os.close(write)
    assert gone.returncode == 4, gone.stderr
    assert "error: could not fetch " in gone.stderr
    assert "cannot write" not in gone.stderr


def test_a_verify_whose_output_fails_keeps_its_damage_exit_code(
    hutch: Hutch, tmp_path: Path
) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    hutch.ok("add", str(_tar(tmp_path / "a1.tar", "a.txt", b"a")))
    hutch.ok("add", str(_tar(tmp_path / "a2.tar", "b.txt", b"b")))
    victim = next(p for p in (hutch.store / "objects").rglob("*") if p.is_file())
    victim.chmod(0o644)
    victim.write_bytes(b"")
    for args in (["verify"], ["verify", "--json"]):
        with open("/dev/full", "w") as full:
            done = _to(full.fileno(), hutch, *args)
        assert done.returncode == 3, (args, done.stderr)
        assert _CANNOT_WRITE in done.stderr
        assert "error: 1 of 2 artifact(s) damaged" in done.stderr
        if args == ["verify"]:  # --json leaves the summary out
            assert "verified 2 artifact(s) (stat): 1 ok, 0 repaired, 1 damaged" in done.stderr


def test_leave_waits_for_a_running_thread_like_a_normal_exit() -> None:
    done = _run("""
        import threading, time
        from hutch.cli import leave
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread done"))).start()
        leave(5)
    """)
    assert done.returncode == 5
    assert done.stdout == "thread done\n"


def test_leave_closes_the_journal_and_frees_a_reader_slot_left_open(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root).journal.close()
    # LMDB's own reader table, held open by this process throughout: the last
    # process to leave an environment takes the table with it, and Store.open
    # would clear the slots of dead processes first (mdb_reader_check).
    env = lmdb.open(str(root / "journal"), readonly=True, max_dbs=16)
    try:
        done = _run(f"""
            import os
            from pathlib import Path
            from hutch.cli import leave
            from hutch.store.store import Store
            journal = Store.open(Path({str(root)!r})).journal
            reading = journal.read()
            reading.__enter__()  # a read transaction, still open at the exit
            print(os.getpid(), flush=True)
            leave(0)
        """)
        assert done.returncode == 0, done.stderr
        table = env.readers()
    finally:
        env.close()
    assert done.stdout.strip() not in table.split(), table


def test_a_reader_that_leaves_early_gets_all_it_read_and_no_error(
    hutch: Hutch, sdist: Path
) -> None:
    hutch.ok("add", sdist.as_uri())
    artifact = hutch.ok("ls").split()[0]
    full = hutch.ok("show", artifact)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hutch", "--store", str(hutch.store), "show", artifact],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=hutch.env,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    with proc.stdout, proc.stderr:
        first = proc.stdout.readline().decode()
        proc.stdout.close()  # `| head -1`
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert first == full.splitlines(keepends=True)[0]
    assert err == ""


def _stderr_gone(hutch: Hutch, *args: str) -> subprocess.CompletedProcess[str]:
    """`hutch ARGS 2>&1 | head -0`: stderr is a pipe whose reader has left."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "hutch", "--store", str(hutch.store), *args],
            stdout=subprocess.PIPE,
            stderr=write,
            text=True,
            env=hutch.env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)


def test_a_stderr_nobody_reads_changes_no_exit_code(hutch: Hutch, tmp_path: Path) -> None:
    """The messages go nowhere; the command still runs to its end and exits as it went:
    a plain install (read without click) and an add (through click) alike."""
    artifact = hutch.ok("add", str(_tar(tmp_path / "a.tar", "a.txt", b"a"))).strip()
    ok_dest = tmp_path / "d1"
    ok = _stderr_gone(hutch, "install", artifact, str(ok_dest))
    assert ok.returncode == 0
    assert (ok_dest / "a.txt").read_bytes() == b"a"
    # The first pair's summary line meets the broken pipe; the second pair (its DEST
    # exists) still fails, and says so by its exit code.
    failed = _stderr_gone(hutch, "install", artifact, str(tmp_path / "d2"), artifact, str(ok_dest))
    assert failed.returncode == 2
    assert (tmp_path / "d2" / "a.txt").exists()
    added = _stderr_gone(hutch, "add", str(_tar(tmp_path / "b.tar", "b.txt", b"b")), "missing.tar")
    assert added.returncode == 4
    assert len(added.stdout.split()) == 1  # the id of what was committed, on stdout as usual
    # -v's tracebacks, and click's usage errors, meet the broken pipe too.
    for args, code in [
        (["-v", "install", "no-such-artifact", str(tmp_path / "d4")], 2),
        (["-v", "add", "missing.tar"], 4),
        (["install"], 2),
        (["--bogus"], 2),
    ]:
        assert _stderr_gone(hutch, *args).returncode == code, args


def test_text_the_output_s_encoding_cannot_hold_is_escaped(hutch: Hutch, tmp_path: Path) -> None:
    """An ASCII stdout (PYTHONIOENCODING=ascii) and a non-ASCII name: written escaped,
    not an internal error."""
    hutch.ok("add", "--name", "café", str(_tar(tmp_path / "a.tar", "a.txt", b"a")))
    done = hutch("ls", env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    assert "caf\\xe9" in done.stdout
    # JSON stays JSON: its own escapes.
    done = hutch("ls", "--json", env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["names"] == ["café"]
