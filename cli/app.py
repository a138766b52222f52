"""The click application: one function per command, each a thin shell over a store verb."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import click
from hutch import __version__
from hutch.cli import output
from hutch.cli.install import LINK_MODES, VERIFY_LEVELS, InstallArgs, run_install
from hutch.cli.options import (
    Context,
    fetch_settings,
    limit_settings,
    one_source_only,
    source_pin,
)

F = TypeVar("F", bound=Callable[..., Any])

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

    one_source_only(sources, digest=digest, name=name, mirrors=mirrors)
    fetch = fetch_settings(ctx, timeout, retries)
    limits = limit_settings(max_unpacked, max_entries)
    requests = []
    for given in sources:
        source, pin = source_pin(given, digest)
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
    code = output.failures(results, "sources")
    if not code and lines.failure is not None:
        code = lines.failure.exit_code
    if code:
        raise click.exceptions.Exit(code)


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
    type=click.Choice(LINK_MODES),
    default="auto",
    show_default=True,
    help="How files are placed in DEST.",
)
@click.option(
    "--verify",
    "verify_level",
    type=click.Choice(VERIFY_LEVELS),
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
    args = InstallArgs(
        pairs,
        digest,
        link,
        verify_level,
        force,
        strip_components,
        subdir,
        timeout,
        retries,
        max_unpacked,
        max_entries,
    )
    code = run_install(ctx, args)
    if code:
        raise click.exceptions.Exit(code)
