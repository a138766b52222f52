"""Maintenance commands: gc, rm, stats, doctor (spec/inspect.md).

Each is a thin shell over its store verb (store/gc.py, rm.py, stats.py,
doctor.py): parse the options, call it, render the typed result as text or
JSON. Results go to stdout, summaries to stderr (silenced by -q).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import click
from hutch.cli import output
from hutch.cli.app import pass_ctx
from hutch.cli.inspect import (
    complete_artifact,
    human_size,
    label,
    parse_duration,
    parse_size,
)
from hutch.cli.options import Context

if TYPE_CHECKING:
    from hutch.store.doctor import Check, DoctorReport
    from hutch.store.gc import GcResult


def register(app: click.Group) -> None:
    for command in (gc, rm, stats, doctor):
        app.add_command(command)


# -- gc ------------------------------------------------------------------------
@click.command()
@click.option("--dry-run", is_flag=True, help="Report what would be freed; change nothing.")
@click.option(
    "--max-age",
    metavar="DURATION",
    help="Also remove artifacts unused (not installed) for longer than DURATION, e.g. 30d.",
)
@click.option(
    "--max-size",
    metavar="SIZE",
    help="Also remove the least recently used artifacts until the rest fit in SIZE, e.g. 10GiB.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def gc(
    ctx: Context, dry_run: bool, max_age: str | None, max_size: str | None, as_json: bool
) -> None:
    """Free what nothing needs: expired artifacts, unreferenced objects, orphan manifests.

    Never removes an object a committed artifact or an add in flight needs.
    """
    from hutch.store.gc import GcOptions
    from hutch.store.gc import gc as do_gc

    options = GcOptions(
        dry_run=dry_run,
        max_age=parse_duration(max_age, what="--max-age") if max_age is not None else None,
        max_size=parse_size(max_size, what="--max-size") if max_size is not None else None,
    )
    result = do_gc(ctx.store(), options)
    if as_json:
        output.emit_json(_gc_json(result))
        return
    verb = "would remove" if dry_run else "removed"
    for e in result.artifacts:
        output.out(f"{verb} {label(e.record)}: {e.reason}")
    output.info(
        f"{'would free' if dry_run else 'freed'} {len(result.artifacts)} artifact(s), "
        f"{result.objects} object(s), {human_size(result.object_bytes)}; "
        f"{result.manifests} orphan manifest file(s), {result.staging} staging dir(s)",
        quiet=ctx.quiet,
    )


def _gc_json(result: GcResult) -> dict[str, Any]:
    return {
        "dry_run": result.dry_run,
        "artifacts": [
            {
                "id": e.record.id,
                "names": e.record.names,
                "bytes": e.record.bytes,
                "last_used": e.record.last_used,
                "reason": e.reason,
            }
            for e in result.artifacts
        ],
        "objects": result.objects,
        "object_bytes": result.object_bytes,
        "manifests": result.manifests,
        "staging": result.staging,
    }


# -- rm ------------------------------------------------------------------------
@click.command()
@click.argument("artifacts", nargs=-1, required=True, shell_complete=complete_artifact)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def rm(ctx: Context, artifacts: tuple[str, ...], as_json: bool) -> None:
    """Remove ARTIFACTs from the journal; the next `hutch gc` frees their objects."""
    from hutch.store.rm import rm as do_rm

    result = do_rm(ctx.store(), artifacts)
    if as_json:
        output.emit_json(
            {
                "removed": [{"id": r.id, "names": r.names} for r in result.removed],
                "manifests": result.manifests,
                "unreferenced_objects": result.unreferenced_objects,
                "unreferenced_bytes": result.unreferenced_bytes,
            }
        )
        return
    for r in result.removed:
        output.out(r.id)
    output.info(
        f"removed {len(result.removed)} artifact(s); {result.unreferenced_objects} object(s), "
        f"{human_size(result.unreferenced_bytes)}, are now unreferenced: `hutch gc` frees them",
        quiet=ctx.quiet,
    )


# -- stats ---------------------------------------------------------------------
@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def stats(ctx: Context, as_json: bool) -> None:
    """How much the store holds, and how much deduplication saves."""
    from hutch.store.stats import stats as do_stats

    s = do_stats(ctx.store())
    if as_json:
        output.emit_json(
            {**dataclasses.asdict(s), "dedup_ratio": s.dedup_ratio, "saved_bytes": s.saved_bytes}
        )
        return
    lines = [
        f"store       {s.store}",
        f"journal     {s.journal} ({human_size(s.journal_bytes)})",
        f"artifacts   {s.artifacts} ({s.manifests} manifest file(s))",
        f"logical     {human_size(s.logical_bytes)}  (the artifacts' files, added up)",
        f"physical    {human_size(s.physical_bytes)}  ({s.objects} object file(s))",
        f"dedup       {s.dedup_ratio:.2f}x  (saves {human_size(s.saved_bytes)})",
    ]
    if s.unreferenced_objects:
        lines.append(
            f"garbage     {s.unreferenced_objects} unreferenced object(s), "
            f"{human_size(s.unreferenced_bytes)}: `hutch gc` frees them"
        )
    if s.missing_objects:
        lines.append(
            f"missing     {s.missing_objects} object(s): `hutch verify --repair` restores them"
        )
    output.out("\n".join(lines))


# -- doctor --------------------------------------------------------------------
_STATUS_COLORS = {"ok": "green", "info": "blue", "warning": "yellow", "error": "red"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--rebuild",
    is_flag=True,
    help="Rebuild the journal from the manifest files (a damaged one is moved aside first).",
)
@pass_ctx
def doctor(ctx: Context, as_json: bool, rebuild: bool) -> None:
    """Check the store's filesystems, permissions, space, journal and leftovers.

    Exits 0 when nothing is wrong, 6 for a store problem, 1 otherwise; every
    problem comes with advice.
    """
    from hutch.store.doctor import DoctorOptions
    from hutch.store.doctor import doctor as do_doctor
    from hutch.store.errors import HutchError, StoreError
    from hutch.store.store import default_root

    root = default_root(ctx.store_option)
    report = do_doctor(root, DoctorOptions(rebuild=rebuild))
    if as_json:
        output.emit_json(_doctor_json(report))
    else:
        _print_doctor(report, quiet=ctx.quiet, verbose=ctx.verbose)
    problems = report.errors
    if problems:
        cls = StoreError if report.exit_code == 6 else HutchError
        raise cls(
            f"{len(problems)} problem(s) with the store at {root}: "
            + "; ".join(c.name for c in problems),
            hint="follow the advice above, then run `hutch doctor` again",
        )


def _doctor_json(report: DoctorReport) -> dict[str, Any]:
    return {
        "store": report.store,
        "journal": report.journal,
        "ok": not report.errors,
        "exit_code": report.exit_code,
        "checks": [
            {
                "name": c.name,
                "status": c.status,
                "summary": c.summary,
                "details": c.details,
                "advice": c.advice,
            }
            for c in report.checks
        ],
    }


def _print_doctor(report: DoctorReport, *, quiet: bool, verbose: bool) -> None:
    color = output.use_color()
    for check in report.checks:
        if quiet and check.status in ("ok", "info"):
            continue
        output.out(f"{_status(check, color=color)} {check.name}: {check.summary}")
        if verbose or check.status != "ok":
            for line in check.details:
                output.out(f"          {line}")
        if check.advice:
            output.out(f"          advice: {check.advice}")


def _status(check: Check, *, color: bool) -> str:
    text = f"{check.status:<8}"
    return click.style(text, fg=_STATUS_COLORS[check.status], bold=True) if color else text
