"""cli/quick.py: a plain `hutch install` read without click, exactly as click reads it.

Every command line quick.parse accepts is also read by the real click app,
with the install body replaced by a recorder: both readings must be equal.
Command lines quick does not read are left to click, which is not asked here
(its errors and help are tested with the commands).
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import get_args

import click
import pytest
from conftest import Hutch, tree
from hutch.cli import app as app_module
from hutch.cli import output, quick
from hutch.cli.install import LINK_MODES, VERIFY_LEVELS, InstallArgs
from hutch.cli.options import Context
from hutch.store.link import MODES
from hutch.store.verify import Level

Reading = tuple[Context, InstallArgs]
ClickReading = Callable[[Sequence[str]], Reading | click.ClickException]


@pytest.fixture
def click_reading(monkeypatch: pytest.MonkeyPatch) -> ClickReading:
    """How click reads a command line: (Context, InstallArgs), or the UsageError."""
    seen: list[Reading] = []

    def record(ctx: Context, args: InstallArgs) -> int:
        seen.append((ctx, args))
        return 0

    monkeypatch.setattr(app_module, "run_install", record)
    monkeypatch.setattr(output, "VERBOSE", False)

    def read(argv: Sequence[str]) -> Reading | click.ClickException:
        seen.clear()
        try:
            app_module.app.main(list(argv), standalone_mode=False, prog_name="hutch")
        except click.ClickException as exc:
            return exc
        assert len(seen) == 1, argv
        assert seen[0][0].verbose == output.VERBOSE
        return seen[0]

    return read


# Pieces of command lines: options with good, odd and bad values, operands
# that look like options, `--`, other commands.
_GLOBAL_PIECES = [
    ["-q"], ["--quiet"], ["-v"], ["--verbose"], ["-qv"], ["-V"], ["-h"], ["--help"],
    ["--store", "s"], ["--store=s"], ["--store="], ["--store", "install"], ["--store"],
    ["--store", "-q"], ["--bogus"], ["add"], ["-q=1"],
]  # fmt: skip
_INSTALL_PIECES = [
    ["ID"], ["DEST"], ["-"], ["./-x"], ["-x"], ["--"], ["install"], ["--help"], ["-h"],
    ["--force"], ["--force=1"], ["--link", "hardlink"], ["--link=copy"], ["--link", "bogus"],
    ["--link", "Hardlink"], ["--link="], ["--link"], ["--verify", "full"], ["--verify=none"],
    ["--verify", "stat"], ["--strip-components", "2"], ["--strip-components=0"],
    ["--strip-components", "-1"], ["--strip-components", "1_0"], ["--strip-components", " 3"],
    ["--strip-components", "007"], ["--strip-components", "\u0661"], ["--subdir", "a/b"],
    ["--subdir="], ["--subdir", "--force"], ["--subdir", "--"], ["--subdir=x=y"],
    ["--digest", "sha256:" + "ab" * 32], ["--digest=blake3:00"], ["--timeout", "1.5"],
    ["--timeout", ".5"], ["--timeout", "1."], ["--timeout", "1e3"], ["--timeout", "nan"],
    ["--timeout", "-1"], ["--timeout", "."], ["--retries", "0"], ["--retries", "3"],
    ["--retries", "x"], ["--max-entries", "10"], ["--max-unpacked", "1GiB"],
    ["--max-unpacked", "nonsense"], ["--mirror", "u"], ["-q"], ["--store", "s"],
]  # fmt: skip


def _command_lines() -> Iterator[list[str]]:
    # The forms a build system writes, by hand...
    yield ["install", "ID", "DEST"]
    yield ["--store", "s", "-q", "install", "ID", "DEST", "ID2", "DEST2", "--link", "hardlink"]
    yield ["-v", "install", "--force", "--", "-ID", "--DEST"]
    # ...then every pair of pieces, and many longer random ones.
    for g, i in itertools.product([[], *_GLOBAL_PIECES], _INSTALL_PIECES):
        yield [*g, "install", *i, "ID", "DEST"]
        yield [*g, "install", "ID", *i]
    rng = random.Random(7)
    for _ in range(3000):
        line: list[str] = []
        for piece in rng.sample(_GLOBAL_PIECES, rng.randint(0, 3)):
            line += piece
        line.append("install")
        for piece in rng.choices(_INSTALL_PIECES, k=rng.randint(0, 6)):
            line += piece
        yield line


def _typed(reading: Reading | click.ClickException) -> object:
    """A reading compared by type too: NamedTuples alone would take True for 1, 1 for 1.0."""
    if isinstance(reading, click.ClickException):
        return reading
    return [(type(part), [(type(v), v) for v in part]) for part in reading]


def test_every_command_line_quick_reads_click_reads_the_same(click_reading: ClickReading) -> None:
    taken = 0
    for argv in _command_lines():
        mine = quick.parse(argv)
        if mine is None:
            continue
        taken += 1
        assert _typed(click_reading(argv)) == _typed(mine), argv
    assert taken > 500  # the common forms, not corners only


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-V"],
        ["install"],
        ["install", "--help", "ID", "DEST"],
        ["install", "-h", "ID", "DEST"],
        ["--store", "s", "add", "URL"],
        ["-qv", "install", "ID", "DEST"],
        ["-q", "-q", "install", "ID", "DEST"],
        ["install", "ID", "DEST", "--link", "copy", "--link", "hardlink"],
        ["install", "ID", "DEST", "--link"],
        ["install", "ID", "DEST", "--link=bogus"],
        ["install", "ID", "DEST", "--strip-components", "-1"],
        ["install", "ID", "DEST", "--force=yes"],
        ["install", "ID", "-DEST"],
        ["install", "ID", "DEST", "--mirror", "u"],
        ["install", "--store", "s", "ID", "DEST"],
    ],
)
def test_what_quick_does_not_read_is_left_to_click(argv: list[str]) -> None:
    assert quick.parse(argv) is None


def test_quick_knows_install_s_options_as_click_declares_them() -> None:
    """The two tables of options agree: same names, same choices; and the choices
    are the store's own."""
    assert LINK_MODES == MODES
    assert set(VERIFY_LEVELS) == set(get_args(Level))
    declared = {
        name: param
        for param in app_module.install.params
        if isinstance(param, click.Option)
        for name in param.opts
        if name != "--help"
    }
    assert set(declared) == set(quick._INSTALL)
    for name, param in declared.items():
        field, read = quick._INSTALL[name]
        assert field == param.name, name
        assert (read is None) == param.is_flag, name
        if isinstance(param.type, click.Choice):
            assert read is not None
            for choice in param.type.choices:
                assert read(str(choice)) == choice
            with pytest.raises(ValueError):
                read("bogus")
        elif read is not None:  # the value's type too: a count is an int, seconds a float
            got, want = read("12"), param.type.convert("12", param, None)
            assert (type(got), got) == (type(want), want), name
    assert set(InstallArgs._fields) == {p.name for p in app_module.install.params} - {"help"}
    group = {name for p in app_module.app.params for name in p.opts}
    assert set(quick._GLOBAL) == group - {"-V", "--version", "-h", "--help"}


def _modules_after(
    hutch: Hutch, *args: str | Path
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `hutch ARGS` as `python -m hutch` does, and the modules it had imported at its exit."""
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stdout))\n"
        "sys.argv = ['hutch', *sys.argv[1:]]\n"
        "from hutch.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "--store", str(hutch.store), *map(str, args)],
        capture_output=True,
        text=True,
        env=hutch.env,
        check=False,
        timeout=120,
    )
    modules = set(json.loads(done.stdout.splitlines()[-1])) if done.stdout.strip() else set()
    return done, modules


def test_a_plain_install_runs_without_click(
    hutch: Hutch, wheels: list[Path], tmp_path: Path
) -> None:
    """The point of cli/quick.py, end to end: installed, said as usual, click not imported;
    an install with --help, or another command, still goes through click."""
    artifact = hutch.ok("add", wheels[0]).split()[0]
    done, modules = _modules_after(hutch, "install", artifact, tmp_path / "a", "--link", "copy")
    assert done.returncode == 0, done.stderr
    assert f"installed {artifact[:12]} into {tmp_path / 'a'}" in done.stderr
    assert "click" not in modules
    assert {"hutch.store.install", "hutch.cli.quick"} <= modules
    assert tree(tmp_path / "a")

    done, modules = _modules_after(hutch, "install", "--help")
    assert done.returncode == 0
    assert "click" in modules

    done, modules = _modules_after(hutch, "ls")
    assert done.returncode == 0
    assert "click" in modules


def test_a_plain_install_fails_as_the_click_command_does(hutch: Hutch, tmp_path: Path) -> None:
    """Errors on the quick path: the same message, hint and exit code; -v adds the traceback."""
    for extra in ([], ["-v"]):
        done = hutch(*extra, "install", "nothing-here", tmp_path / "a")
        assert done.returncode == 2
        assert "error: no artifact 'nothing-here' in the store" in done.stderr
        assert "hint: `hutch ls` lists what the store has" in done.stderr
        assert ("Traceback (most recent call last)" in done.stderr) == bool(extra)
    done = hutch("install", "nothing-here")  # one operand: the body says so, not click
    assert done.returncode == 2
    assert "install takes ARTIFACT DEST pairs; 1 argument(s) leave" in done.stderr
    done = hutch("install", "nothing-here", tmp_path / "a", "--link", "bogus")  # click's reading
    assert done.returncode == 2
    assert "Invalid value for '--link'" in done.stderr
