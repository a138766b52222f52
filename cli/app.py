"""The click application: one function per command, each a thin shell over a store verb."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="hutch")
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
@click.argument("source")
@click.option(
    "--digest",
    metavar="ALGO:HEX",
    help="Pinned digest: sha256:HEX, sha512:HEX, blake3:HEX or SRI sha256-BASE64.",
)
@click.option("--name", metavar="NAME", help="A name to find the artifact by.")
@click.option(
    "--mirror",
    "mirrors",
    metavar="URL",
    multiple=True,
    help="Another URL serving the same bytes (repeatable).",
)
@fetch_options
@pass_ctx
def add(
    ctx: Context,
    source: str,
    digest: str | None,
    name: str | None,
    mirrors: tuple[str, ...],
    timeout: float | None,
    retries: int | None,
    max_unpacked: str | None,
    max_entries: int | None,
) -> None:
    """Fetch SOURCE (URL or path), extract it and commit it. Prints the artifact id."""
    from hutch.store.add import AddRequest
    from hutch.store.add import add as do_add

    pin = _pin(digest)
    request = AddRequest(
        source,
        pin,
        name,
        mirrors,
        fetch_settings(ctx, timeout, retries),
        limit_settings(max_unpacked, max_entries),
    )
    result = do_add(ctx.store(), request)
    if pin is None:
        output.warn(
            f"no --digest given; recorded sha256:{result.digests['sha256']} "
            f"(pin it with --digest for reproducible builds)"
        )
    click.echo(result.artifact)


# -- install ---------------------------------------------------------------
@app.command()
@click.argument("artifact")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--digest", metavar="ALGO:HEX", help="Require this digest (and use it to add a URL).")
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
    artifact: str,
    dest: Path,
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
    """Install ARTIFACT (id, id prefix, digest, name or URL) into DEST, verified."""
    from hutch.store.install import InstallOptions
    from hutch.store.install import install as do_install

    pin = _pin(digest)
    fetch = fetch_settings(ctx, timeout, retries)
    limits = limit_settings(max_unpacked, max_entries)
    store = ctx.store()
    record = _resolve_or_add(store, artifact, pin, fetch, limits)
    options = InstallOptions(link, verify_level, force, strip_components, subdir, fetch, limits)
    start = time.perf_counter()
    result = do_install(store, record, dest.absolute(), options)
    healed = f", repaired {result.repaired} damaged file(s) first" if result.repaired else ""
    # One line, each link mode and each fallback cause said once (spec/install.md §3):
    # `... 2373 files (2370 hardlink, 3 copy; hardlink refused: EPERM x3 — ...) in 0.41 s`
    output.info(
        f"installed {record.id[:12]} into {dest}: {result.files} files "
        f"({result.summary}){healed} in {time.perf_counter() - start:.2f} s",
        quiet=ctx.quiet,
    )
    for warning in result.warnings:
        output.warn(warning)


def _resolve_or_add(
    store: Store, ref: str, pin: Pin | None, fetch: FetchOptions, limits: Limits
) -> ArtifactRecord:
    import re

    from hutch.store.add import AddRequest, add
    from hutch.store.errors import DigestMismatch

    with store.journal.read() as txn:
        record = store.resolve(txn, str(pin)) if pin else None
        record = record or store.resolve(txn, ref)
    if record is None and re.match(r"^(https?|file)://", ref, re.IGNORECASE):
        aid = add(store, AddRequest(ref, pin, fetch=fetch, limits=limits)).artifact
        with store.journal.read() as txn:
            record = txn.artifact(aid)
    if record is None:
        with store.journal.read() as txn:
            return store.get(txn, ref)
    if pin and record.digests.get(pin.algo, pin.hex) != pin.hex:
        raise DigestMismatch(
            f"artifact {record.id[:16]}",
            algo=pin.algo,
            expected=pin.hex,
            got=record.digests[pin.algo],
        )
    return record


def _register() -> None:
    # Imported here, not at the top, so each command module can use `app`'s helpers.
    from hutch.cli import admin, inspect, maintain

    admin.register(app)
    inspect.register(app)
    maintain.register(app)


_register()
