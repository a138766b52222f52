"""How the CLI speaks: errors with their causes and a hint, JSON, and the exit code.

    error: cannot publish object /s/objects/ab/cd: No space left on device
    caused by: No space left on device (ENOSPC): /s/objects/ab/cd
    hint: free space on that filesystem, or point HUTCH_STORE at one with room

No traceback unless -v. No click here either: a plain `hutch install` runs
without importing it (cli/quick.py), and what it says goes through here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import click
    from hutch.store.errors import HutchError

VERBOSE = False


def run(app: click.Command) -> int:
    """Run the click app and turn every outcome into an exit code (spec/cli.md §Exit codes)."""
    import click

    stdout = sys.stdout

    def command() -> int:
        try:
            # Without standalone mode click returns a raised Exit's code instead
            # (a command that reported several failures itself ends that way).
            code = app.main(standalone_mode=False, prog_name="hutch")
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.Abort:  # click's KeyboardInterrupt (hutch asks no questions)
            _echo("interrupted", err=True)  # after the newline click wrote past the ^C
            return 130
        except click.ClickException as exc:
            try:
                exc.show()  # click's usage text, written by click
            except BrokenPipeError:
                _drop_broken(sys.stderr)
            return exc.exit_code
        except SystemExit as exc:
            # click meets EPIPE itself (`hutch ls | head`: a write after the reader
            # left): it swaps in a stdout and stderr that ignore EPIPE when flushed,
            # and exits 1 even without standalone mode (click.core, BaseCommand.main).
            # The reader leaving is no failure.
            if sys.stdout is not stdout:
                return 0
            return exc.code if isinstance(exc.code, int) else 1
        return code if isinstance(code, int) else 0

    return guarded(command)


def guarded(command: Callable[[], int]) -> int:
    """``command``'s exit code; what it raises, said and turned into one (spec/cli.md)."""
    try:
        return command()
    except KeyboardInterrupt:
        _echo("\ninterrupted", err=True)  # past the ^C the terminal shows
        return 130
    except BrokenPipeError as exc:
        # The reader of stdout left (`hutch ls | head`): no failure. (Inside a
        # click command click's main meets it first.) Any other pipe is one.
        if _drop_broken(sys.stdout):
            return 0
        return _failed(exc)
    except Exception as exc:
        return _failed(exc)


def _failed(exc: Exception) -> int:
    # Imported only now: `hutch --version` and `--help` never need the error tree.
    from hutch.store.errors import HutchError

    if isinstance(exc, HutchError):
        report(exc)
        return exc.exit_code
    if isinstance(exc, OSError):
        # An OS error no seam translated is still shown with its errno and path.
        report(exc)
        return 1
    report(exc, internal=True)
    return 1


def report(exc: BaseException, *, internal: bool = False) -> None:
    from hutch.store.errors import HutchError, cause_of, describe_oserror

    lines = []
    if isinstance(exc, OSError):
        lines.append(f"error: {describe_oserror(exc)}")
    elif internal:
        lines.append(f"error: internal error: {type(exc).__name__}: {exc}")
    else:
        lines.append(f"error: {exc}")
    seen = {id(exc)}
    cause = cause_of(exc)
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = describe_oserror(cause) if isinstance(cause, OSError) else _plain(cause)
        if text:
            lines.append(f"caused by: {text}")
        cause = cause_of(cause)
    hint = exc.hint if isinstance(exc, HutchError) else None
    if internal:
        hint = "this is a bug in hutch; run with -v for the traceback and report it"
    if hint:
        lines.append(f"hint: {hint}")
    if VERBOSE:
        import traceback

        _echo("".join(traceback.format_exception(exc)).rstrip("\n"), err=True)
    _echo("\n".join(lines), err=True)


def _plain(exc: BaseException) -> str:
    from hutch.store.errors import ForeignCause, HutchError

    if isinstance(exc, HutchError | ForeignCause):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def out(text: str) -> None:
    """The command's result, to stdout: every command writes its output through here."""
    with writing():
        _echo(text)


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """Writes to stdout inside: a failure to write is said as one (cannot_write).

    Without this, a full disk behind a redirect (`hutch ls > f`) would be
    reported as a bare `No space left on device (ENOSPC)`, which reads as the
    store's disk. A reader that left (EPIPE) is not a failure: click's main
    and guarded() handle it.
    """
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise cannot_write(exc) from exc


def cannot_write(exc: OSError) -> HutchError:
    """The error for ``exc``, met writing stdout: its cause chained, for `caused by:`."""
    import errno

    from hutch.store.errors import HutchError

    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "the disk stdout goes to is full; free space there, or send the output elsewhere"
    else:
        hint = "the file or device stdout goes to refused the write; send the output elsewhere"
    failure = HutchError("cannot write the output to stdout", hint=hint)
    failure.__cause__ = exc
    return failure


class Lines:
    """The result lines of a command that goes on after them (add, verify): one
    failure to write stdout stops the lines, not the command.

    Every later failure is still said on stderr and keeps its exit code;
    ``failure`` is the write's error, for the command to report at its end
    (None when the reader only left: `hutch add ... | head -1`).
    """

    def __init__(self) -> None:
        self.stopped = False
        self.failure: HutchError | None = None

    def out(self, text: str) -> None:
        if self.stopped:
            return
        try:
            _echo(text)
        except BrokenPipeError:
            self.stopped = True
        except OSError as exc:
            self.stopped = True
            self.failure = cannot_write(exc)

    def report(self) -> None:
        """Say the write's failure, if there was one."""
        if self.failure is not None:
            report(self.failure)


def emit_json(data: Any, lines: Lines | None = None) -> None:
    """``data`` as JSON to stdout, through ``lines`` for a command that goes on after it."""
    import json

    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
    if not _holds(sys.stdout, text):
        # JSON's own escapes (\u00e9), not _echo's backslashes: still JSON.
        text = json.dumps(data, indent=2, sort_keys=True)
    (lines.out if lines is not None else out)(text)


def failures(results: Sequence[object], what: str) -> int:
    """After several independent results were reported: the first failure's exit code, or 0."""
    from hutch.store.errors import HutchError

    failed = [r for r in results if isinstance(r, HutchError)]
    if not failed:
        return 0
    if len(results) > 1:
        info(f"{len(failed)} of {len(results)} {what} failed", quiet=False)
    return failed[0].exit_code


def info(message: str, *, quiet: bool) -> None:
    if not quiet:
        _echo(message, err=True)


def warn(message: str) -> None:
    _echo(f"warning: {message}", err=True)


def _echo(text: str, *, err: bool = False) -> None:
    """One line to stdout or stderr, flushed, without importing click.

    Text the stream's encoding cannot hold (PYTHONIOENCODING=ascii, a name in
    another script) is written backslash-escaped (`caf\\xe9`), not refused
    as an internal error. A stderr whose reader left (`2>&1 | head -1`)
    takes no more messages, and the command goes on: its exit code still
    says how it went.
    """
    stream = sys.stderr if err else sys.stdout
    if stream is None:  # started without that descriptor (`2>&-`)
        return
    line = text + "\n"
    try:
        try:
            stream.write(line)
        except UnicodeEncodeError:
            encoding = stream.encoding or "utf-8"
            stream.write(line.encode(encoding, "backslashreplace").decode(encoding))
        stream.flush()
    except BrokenPipeError:
        if not err:
            raise
        _drop_broken(stream)


def _holds(stream: TextIO | None, text: str) -> bool:
    """Whether ``stream``'s encoding can write ``text`` as it is."""
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _drop_broken(stream: TextIO | None) -> bool:
    """Whether ``stream``'s pipe has no reader; if so, it now goes to /dev/null:
    what it still holds (a failed write stays buffered), and all it is given
    later, goes nowhere instead of failing again when the command exits."""
    if stream is None:
        return False
    try:
        stream.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, stream.fileno())
            finally:
                os.close(null)
        return True
    except (OSError, ValueError):
        pass  # another failure, or a closed stream: said elsewhere
    return False


def use_color() -> bool:
    return "NO_COLOR" not in os.environ and sys.stdout.isatty()
