"""The click application: one function per command, each a thin shell over a store verb."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click
from hutch import __version__
from hutch.cli import output

if TYPE_CHECKING:
    from hutch.extract import Limits
    from hutch.fetch import FetchOptions
    from hutch.store.digest import Pin
    from hutch.store.journal import ArtifactRecord
    from hutch.store.store import Store

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    store_option: str | None
    verbose: bool
    quiet: bool

    def store(self) -> Store:
        from hutch.store.store import Store, default_root

        return Store.open(default_root(self.store_option))


pass_ctx = click.make_pass_decorator(Context)


class _Commands(click.Group):
    """The command group; the commands of cli/admin, cli/inspect and cli/maintain are
    imported only when one of them is named, or the commands are listed (--help):
    an `install` or `add` does not pay for them (issue 7: `hutch.cli.app` imports in
    83 ms instead of 93 here)."""

    _ELSEWHERE: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("init",), "admin"),
        **dict.fromkeys(("verify", "ls", "show", "log"), "inspect"),
        **dict.fromkeys(("gc", "rm", "stats", "doctor"), "maintain"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._ELSEWHERE})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = self._ELSEWHERE.get(cmd_name)
        if where is not None and cmd_name not in self.commands:
            # Imported here, not at the top, so each command module can use `app`'s helpers.
            importlib.import_module(f"hutch.cli.{where}").register(self)
        return super().get_command(ctx, cmd_name)


def _version(ctx: click.Context) -> None:
    # click's version_option, but written through output.out: `hutch -V > /dev/full`
    # says that the output could not be written.
    if not ctx.resilient_parsing:
        output.out(f"hutch, version {__version__}")
        ctx.exit()


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _version(ctx) if value else None,
    help="Show the version and exit.",
)
@click.option(
    "--store",
    "store_option",
    metavar="PATH",
    help="Store directory (default: $HUTCH_STORE, else the user cache dir + hutch).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and more detail.")
@click.option("-q", "--quiet", is_flag=True, help="Only print results and errors.")
@click.pass_context
def app(ctx: click.Context, store_option: str | None, verbose: bool, quiet: bool) -> None:
    """hutch: a transactional, content-addressed store for downloaded artifacts."""
    output.VERBOSE = verbose
    ctx.obj = Context(store_option, verbose, quiet)


# -- shared options --------------------------------------------------------
def fetch_options(fn: F) -> F:
    fn = click.option(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="Connect timeout and read timeout between bytes [env HUTCH_HTTP_TIMEOUT; 30].",
    )(fn)
    fn = click.option(
        "--retries",
        type=int,
        metavar="N",
        help="Retries per URL for transient failures [env HUTCH_HTTP_RETRIES; 5].",
    )(fn)
    fn = click.option(
        "--max-unpacked",
        metavar="SIZE",
        help="Refuse archives that unpack to more than SIZE, e.g. 20GiB [env HUTCH_MAX_UNPACKED].",
    )(fn)
    return click.option(
        "--max-entries",
        type=int,
        metavar="N",
        help="Refuse archives with more than N members [env HUTCH_MAX_ENTRIES].",
    )(fn)


def fetch_settings(ctx: Context, timeout: float | None, retries: int | None) -> FetchOptions:
    import sys

    from hutch.fetch import FetchOptions

    return FetchOptions.from_env(timeout, retries, not ctx.quiet and sys.stderr.isatty())


def limit_settings(max_unpacked: str | None, max_entries: int | None) -> Limits:
    from hutch.extract import Limits, parse_size
    from hutch.store.errors import UsageError

    try:
        size = parse_size(max_unpacked) if max_unpacked else None
    except ValueError as exc:
        raise UsageError(f"invalid --max-unpacked {max_unpacked!r}: {exc}") from exc
    return Limits.from_env(size, max_entries)


def _pin(digest: str | None) -> Pin | None:
    from hutch.store.digest import Pin

    return Pin.parse(digest) if digest else None


# -- add -------------------------------------------------------------------
@app.command()
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option(
    "--digest",
    metavar="ALGO:HEX",
    help="Pinned digest: sha256:HEX, sha512:HEX, blake3:HEX or SRI sha256-BASE64. "
    "With several SOURCEs, pin each as SOURCE#sha256=HEX instead.",
)
@click.option("--name", metavar="NAME", help="A name to find the artifact by (one SOURCE).")
@click.option(
    "--mirror",
    "mirrors",
    metavar="URL",
    multiple=True,
    help="Another URL serving the same bytes (repeatable; one SOURCE).",
)
@fetch_options
@pass_ctx
def add(
    ctx: Context,
    sources: tuple[str, ...],
    digest: str | None,
    name: str | None,
    mirrors: tuple[str, ...],
    timeout: float | None,
    retries: int | None,
    max_unpacked: str | None,
    max_entries: int | None,
) -> None:
    """Fetch each SOURCE (URL or path), extract it and commit it; several run in parallel.

    Prints one artifact id per SOURCE, in order. A SOURCE may carry its pin as
    URL#sha256=HEX (also sha512, blake3).
    """
    from hutch.store.add import AddRequest, add_all
    from hutch.store.errors import HutchError

    _one_source_only(sources, digest=digest, name=name, mirrors=mirrors)
    fetch = fetch_settings(ctx, timeout, retries)
    limits = limit_settings(max_unpacked, max_entries)
    requests = []
    for given in sources:
        source, pin = _source_pin(given, digest)
        requests.append(AddRequest(source, pin, name, mirrors, fetch, limits))
    results = add_all(ctx.store(), requests)
    lines = output.Lines()
    for request, result in zip(requests, results, strict=True):
        if isinstance(result, HutchError):
            output.report(result)
            continue
        if request.pin is None:
            output.warn(
                f"no digest pinned for {request.source}; recorded sha256:"
                f"{result.digests['sha256']} (pin it with --digest or SOURCE#sha256=HEX "
                "for reproducible builds)"
            )
        lines.out(result.artifact)
    if lines.failure is not None:
        lines.report()
        added = sum(not isinstance(r, HutchError) for r in results)
        output.info(
            f"{added} artifact(s) committed all the same: `hutch ls` lists them", quiet=False
        )
    _exit_on_failures(results, "sources")
    if lines.failure is not None:
        raise click.exceptions.Exit(lines.failure.exit_code)


def _one_source_only(sources: Sequence[str], **options: object) -> None:
    from hutch.store.errors import UsageError

    given = [f"--{k}" for k, v in options.items() if v]
    if len(sources) > 1 and given:
        raise UsageError(
            f"{' and '.join(given)} apply to one SOURCE, and {len(sources)} were given",
            hint="pin each source as SOURCE#sha256=HEX, or add them one at a time",
        )


def _source_pin(given: str, digest: str | None) -> tuple[str, Pin | None]:
    """The source without a `#sha256=HEX` fragment, and the pin from it or --digest."""
    from hutch.store.errors import UsageError
    from hutch.store.store import split_pin

    source, pin = split_pin(given)
    option = _pin(digest)
    if pin is not None and option is not None and pin != option:
        raise UsageError(
            f"{given} pins {pin} but --digest says {option}", hint="give one digest, not two"
        )
    return source, pin or option


# -- install ---------------------------------------------------------------
@app.command()
@click.argument("pairs", metavar="ARTIFACT DEST [ARTIFACT DEST]...", nargs=-1, required=True)
@click.option(
    "--digest",
    metavar="ALGO:HEX",
    help="Require this digest (and use it to add a URL); one ARTIFACT only.",
)
@click.option(
    "--link",
    type=click.Choice(["auto", "reflink", "hardlink", "copy", "symlink"]),
    default="auto",
    show_default=True,
    help="How files are placed in DEST.",
)
@click.option(
    "--verify",
    "verify_level",
    type=click.Choice(["stat", "full", "none"]),
    default="stat",
    show_default=True,
    help="Check objects before linking.",
)
@click.option("--force", is_flag=True, help="Replace an existing DEST atomically.")
@click.option(
    "--strip-components",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Drop N leading path components.",
)
@click.option("--subdir", metavar="PATH", help="Install only this directory of the artifact.")
@fetch_options
@pass_ctx
def install(
    ctx: Context,
    pairs: tuple[str, ...],
    digest: str | None,
    link: Any,
    verify_level: Any,
    force: bool,
    strip_components: int,
    subdir: str | None,
    timeout: float | None,
    retries: int | None,
    max_unpacked: str | None,
    max_entries: int | None,
) -> None:
    """Install each ARTIFACT (id, id prefix, digest, name or URL) into its DEST, verified.

    A URL not in the store yet is added first (pin it with --digest or
    URL#sha256=HEX); several are added in parallel.
    """
    from hutch.store.errors import HutchError, UsageError
    from hutch.store.install import InstallOptions, install_all

    if len(pairs) % 2:
        raise UsageError(
            f"install takes ARTIFACT DEST pairs; {len(pairs)} argument(s) leave "
            f"{pairs[-1]!r} without a DEST",
            hint="hutch install ARTIFACT DEST [ARTIFACT DEST]...",
        )
    refs, dests = pairs[0::2], [Path(d).absolute() for d in pairs[1::2]]
    _one_source_only(refs, digest=digest)
    twice = sorted({str(d) for d in dests if dests.count(d) > 1})
    if twice:
        raise UsageError(f"DEST {twice[0]} is given twice", hint="give each DEST once")
    fetch = fetch_settings(ctx, timeout, retries)
    limits = limit_settings(max_unpacked, max_entries)
    store = ctx.store()
    records = _resolve_or_add(store, [_source_pin(r, digest) for r in refs], fetch, limits)
    options = InstallOptions(link, verify_level, force, strip_components, subdir, fetch, limits)
    todo = list(zip(records, dests, strict=True))
    results = install_all(store, todo, options)
    for (record, dest), result in zip(todo, results, strict=True):
        if isinstance(result, HutchError):
            output.report(result)
            continue
        healed = f", repaired {result.repaired} damaged file(s) first" if result.repaired else ""
        # One line, each link mode and each fallback cause said once (spec/install.md §3):
        # `... 2373 files (2370 hardlink, 3 copy; hardlink refused: EPERM x3 — ...) in 0.41 s`
        output.info(
            f"installed {record.id[:12]} into {dest}: {result.files} files "
            f"({result.summary}){healed} in {result.seconds:.2f} s",
            quiet=ctx.quiet,
        )
        for warning in result.warnings:
            output.warn(warning)
    _exit_on_failures(results, "installs")


def _exit_on_failures(results: Sequence[object], what: str) -> None:
    """After several independent results were reported: exit with the first failure's code."""
    from hutch.store.errors import HutchError

    failed = [r for r in results if isinstance(r, HutchError)]
    if failed:
        if len(results) > 1:
            output.info(f"{len(failed)} of {len(results)} {what} failed", quiet=False)
        raise click.exceptions.Exit(failed[0].exit_code)


def _resolve_or_add(
    store: Store, refs: Sequence[tuple[str, Pin | None]], fetch: FetchOptions, limits: Limits
) -> list[ArtifactRecord]:
    """Each ref as a record: found by pin or ref, else (a URL) added, all missing at once."""
    import re

    from hutch.store.errors import DigestMismatch, HutchError

    found: list[ArtifactRecord | None] = []
    with store.journal.read() as txn:
        for ref, pin in refs:
            record = store.resolve(txn, str(pin)) if pin else None
            found.append(record or store.resolve(txn, ref))
    missing = [
        i
        for i, (ref, _) in enumerate(refs)
        if found[i] is None and re.match(r"^(https?|file)://", ref, re.IGNORECASE)
    ]
    if missing:
        from hutch.store.add import AddRequest, add_all

        requests = [AddRequest(refs[i][0], refs[i][1], fetch=fetch, limits=limits) for i in missing]
        for i, result in zip(missing, add_all(store, requests), strict=True):
            if isinstance(result, HutchError):
                raise result
            with store.journal.read() as txn:
                found[i] = txn.artifact(result.artifact)
    records = []
    for (ref, pin), hit in zip(refs, found, strict=True):
        record = hit
        if record is None:
            with store.journal.read() as txn:
                record = store.get(txn, ref)
        if pin and record.digests.get(pin.algo, pin.hex) != pin.hex:
            raise DigestMismatch(
                f"artifact {record.id[:16]}",
                algo=pin.algo,
                expected=pin.hex,
                got=record.digests[pin.algo],
            )
        records.append(record)
    return records
