"""A plain `hutch install` command line, read without importing click (start-up).

Importing click takes ~20 ms, a fifth of a warm `hutch install` of the
benchmark wheels, spent on one core before any work starts; a build system
pays it once per artifact (spec/cli.md, "Start-up"). So `main` first offers
the command line to ``parse``, which reads only what it can read exactly as
click does:

    hutch [--store PATH] [-q|--quiet] [-v|--verbose] install [options] ARTIFACT DEST...

with install's own options (spelt `--opt VALUE` or `--opt=VALUE`, each at most
once) and `--` before operands that start with `-`. Anything else, or any
value click would refuse or convert otherwise, parses to None, and click reads
the command line as usual, with its errors and its help: `--help`, `-V`,
another command, an unknown or repeated option, `-qv`, a missing value,
`--link=bogus`, `--strip-components -1`. tests/test_quick.py checks every
command line this reads against click's reading of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from hutch.cli import output
from hutch.cli.install import LINK_MODES, VERIFY_LEVELS, InstallArgs, run_install
from hutch.cli.options import Context

# An option: the field it sets and how its value is read (None: a flag).
# A read that raises ValueError leaves the whole command line to click.
_Option = tuple[str, Callable[[str], Any] | None]


def _choice(*choices: str) -> Callable[[str], str]:
    def read(value: str) -> str:
        if value not in choices:
            raise ValueError(value)
        return value

    return read


def _count(value: str) -> int:
    """A count, written in ASCII digits: what click's int reads as the same number."""
    if not (value.isascii() and value.isdigit()):
        raise ValueError(value)
    return int(value)


def _seconds(value: str) -> float:
    """Seconds as digits with at most one dot: what click's float reads as the same number."""
    if not (value.isascii() and value.replace(".", "", 1).isdigit()):
        raise ValueError(value)
    return float(value)


_GLOBAL: dict[str, _Option] = {
    "--store": ("store_option", str),
    "-q": ("quiet", None),
    "--quiet": ("quiet", None),
    "-v": ("verbose", None),
    "--verbose": ("verbose", None),
}
# cli/app.py's `install`; tests/test_quick.py holds the two lists to each other.
_INSTALL: dict[str, _Option] = {
    "--digest": ("digest", str),
    "--link": ("link", _choice(*LINK_MODES)),
    "--verify": ("verify_level", _choice(*VERIFY_LEVELS)),
    "--force": ("force", None),
    "--strip-components": ("strip_components", _count),
    "--subdir": ("subdir", str),
    "--timeout": ("timeout", _seconds),
    "--retries": ("retries", _count),
    "--max-unpacked": ("max_unpacked", str),
    "--max-entries": ("max_entries", _count),
}


def parse(argv: Sequence[str]) -> tuple[Context, InstallArgs] | None:
    """``argv`` (without the program) as a plain install, or None: click reads it."""
    if "_HUTCH_COMPLETE" in os.environ:  # click's shell completion asks, not a user
        return None
    given: dict[str, Any] = {}
    i = 0
    while i < len(argv) and argv[i] != "install":
        i = _take(argv, i, _GLOBAL, given)
        if i < 0:
            return None
    if i == len(argv):
        return None
    options: dict[str, Any] = {}
    pairs: list[str] = []
    i += 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            pairs += argv[i + 1 :]
            break
        if arg.startswith("-") and arg != "-":  # click's test for an option
            i = _take(argv, i, _INSTALL, options)
            if i < 0:
                return None
        else:
            pairs.append(arg)
            i += 1
    if not pairs:
        return None  # click says what is missing
    store = given.get("store_option")
    ctx = Context(store if isinstance(store, str) else None, "verbose" in given, "quiet" in given)
    return ctx, InstallArgs(tuple(pairs))._replace(**options)


def _take(argv: Sequence[str], i: int, known: dict[str, _Option], into: dict[str, Any]) -> int:
    """The option at ``argv[i]`` read into ``into``: the index after it, or -1 if this
    one is not read here (unknown, repeated, a flag with a value, a bad value)."""
    name, eq, inline = argv[i].partition("=")
    option = known.get(name)
    if option is None or option[0] in into:
        return -1
    field, read = option
    if read is None:
        if eq:
            return -1
        into[field] = True
        return i + 1
    if eq:
        value, after = inline, i + 1
    elif i + 1 < len(argv):
        value, after = argv[i + 1], i + 2
    else:
        return -1
    try:
        into[field] = read(value)
    except ValueError:
        return -1
    return after


def run(ctx: Context, args: InstallArgs) -> int:
    """The install, as the click command would run it: its exit code."""
    output.VERBOSE = ctx.verbose
    return run_install(ctx, args)
