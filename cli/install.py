"""`hutch install`'s body, free of click: the click command (cli/app.py) and a plain
command line read without click (cli/quick.py) both run it with an InstallArgs.

A build system runs `hutch install ID DEST` once per artifact, many times a
build; click's import is a fifth of such a run (spec/cli.md, "Start-up").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from hutch.cli import output
from hutch.cli.options import Context, fetch_settings, limit_settings, one_source_only, source_pin

if TYPE_CHECKING:
    from hutch.extract import Limits
    from hutch.fetch import FetchOptions
    from hutch.store.digest import Pin
    from hutch.store.journal import ArtifactRecord
    from hutch.store.link import LinkMode
    from hutch.store.store import Store
    from hutch.store.verify import Level


# The values of --link and --verify, for click (cli/app.py) and cli/quick.py
# alike; the store's own (store/link.py MODES, store/verify.py Level) without
# importing those at start-up. tests/test_quick.py holds them to each other.
LINK_MODES: tuple[LinkMode, ...] = ("auto", "reflink", "hardlink", "copy", "symlink")
VERIFY_LEVELS: tuple[Level, ...] = ("stat", "full", "none")


class InstallArgs(NamedTuple):
    """`hutch install`'s arguments and options, as parsed (by click or cli/quick.py)."""

    pairs: tuple[str, ...]
    digest: str | None = None
    link: LinkMode = "auto"
    verify_level: Level = "stat"
    force: bool = False
    strip_components: int = 0
    subdir: str | None = None
    timeout: float | None = None
    retries: int | None = None
    max_unpacked: str | None = None
    max_entries: int | None = None


def run_install(ctx: Context, args: InstallArgs) -> int:
    """Install each ARTIFACT into its DEST; the exit code (the first failure's, else 0)."""
    from hutch.store.errors import HutchError, UsageError
    from hutch.store.install import InstallOptions, install_all

    pairs = args.pairs
    if len(pairs) % 2:
        raise UsageError(
            f"install takes ARTIFACT DEST pairs; {len(pairs)} argument(s) leave "
            f"{pairs[-1]!r} without a DEST",
            hint="hutch install ARTIFACT DEST [ARTIFACT DEST]...",
        )
    refs, dests = pairs[0::2], [Path(d).absolute() for d in pairs[1::2]]
    one_source_only(refs, digest=args.digest)
    twice = sorted({str(d) for d in dests if dests.count(d) > 1})
    if twice:
        raise UsageError(f"DEST {twice[0]} is given twice", hint="give each DEST once")
    fetch = fetch_settings(ctx, args.timeout, args.retries)
    limits = limit_settings(args.max_unpacked, args.max_entries)
    store = ctx.store()
    records = _resolve_or_add(store, [source_pin(r, args.digest) for r in refs], fetch, limits)
    options = InstallOptions(
        args.link, args.verify_level, args.force, args.strip_components, args.subdir, fetch, limits
    )
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
    return output.failures(results, "installs")


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
