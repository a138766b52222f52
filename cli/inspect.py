"""Inspection commands: verify, ls, show, log (spec/cli.md)."""

from __future__ import annotations

import time
from typing import Any

import click
from hutch.cli import output
from hutch.cli.app import Context, fetch_options, fetch_settings, limit_settings, pass_ctx


def register(app: click.Group) -> None:
    for command in (verify, ls, show, log):
        app.add_command(command)


# -- verify ----------------------------------------------------------------
@click.command()
@click.argument("artifacts", nargs=-1)
@click.option("--full", is_flag=True, help="Re-hash every object with blake3 (parallel).")
@click.option("--repair", is_flag=True, help="Heal damage from the artifacts' sources.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@fetch_options
@pass_ctx
def verify(
    ctx: Context,
    artifacts: tuple[str, ...],
    full: bool,
    repair: bool,
    as_json: bool,
    timeout: float | None,
    retries: int | None,
    max_unpacked: str | None,
    max_entries: int | None,
) -> None:
    """Check artifacts' objects (all by default). Exit 3 if damage remains."""
    from hutch.store.errors import DamageError, IntegrityError
    from hutch.store.repair import repair as do_repair
    from hutch.store.verify import verify as do_verify

    store = ctx.store()
    with store.journal.read() as txn:
        records = [store.get(txn, a) for a in artifacts] if artifacts else list(txn.artifacts())
        manifests = [store.manifest(txn, r) for r in records]
    report: list[dict[str, Any]] = []
    damaged = 0
    for record, manifest in zip(records, manifests, strict=True):
        damage = do_verify(store.layout, manifest, "full" if full else "stat")
        entry: dict[str, Any] = {
            "artifact": record.id,
            "name": record.names[0] if record.names else None,
            "status": "ok",
            "damage": [{"path": d.path, "object": d.object, "problem": d.problem} for d in damage],
        }
        if damage and repair:
            try:
                do_repair(
                    store,
                    record,
                    manifest,
                    damage,
                    options=fetch_settings(ctx, timeout, retries),
                    limits=limit_settings(max_unpacked, max_entries),
                )
                entry["status"] = "repaired"
            except DamageError as exc:
                entry["status"] = "damaged"
                entry["error"] = str(exc).splitlines()[0]
                if not as_json:
                    output.report(exc)
        elif damage:
            entry["status"] = "damaged"
        damaged += entry["status"] == "damaged"
        report.append(entry)
        if not as_json:
            _print_verify(entry, quiet=ctx.quiet)
    if as_json:
        output.emit_json(report)
    if damaged:
        raise IntegrityError(
            f"{damaged} of {len(records)} artifact(s) damaged",
            hint=None if repair else "run `hutch verify --repair` to heal from the sources",
        )


def _print_verify(entry: dict[str, Any], *, quiet: bool) -> None:
    label = entry["artifact"][:12] + (f" ({entry['name']})" if entry["name"] else "")
    if entry["status"] == "ok":
        if not quiet:
            click.echo(f"{label}: ok")
        return
    click.echo(f"{label}: {entry['status']}, {len(entry['damage'])} file(s)")
    for d in entry["damage"][:50]:
        click.echo(f"  {d['path']}: {d['problem']}")


# -- ls / show / log -------------------------------------------------------
@click.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def ls(ctx: Context, as_json: bool) -> None:
    """List the artifacts in the store."""
    store = ctx.store()
    with store.journal.read() as txn:
        records = sorted(txn.artifacts(), key=lambda r: r.added)
    if as_json:
        output.emit_json([r.model_dump() for r in records])
        return
    for r in records:
        name = ",".join(r.names) or "-"
        click.echo(f"{r.id}\t{name}\t{r.files} files\t{r.bytes} bytes\t{_when(r.added)}")


@click.command()
@click.argument("artifact")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def show(ctx: Context, artifact: str, as_json: bool) -> None:
    """Show an artifact: its source, digests, manifest and entries."""
    store = ctx.store()
    with store.journal.read() as txn:
        record = store.get(txn, artifact)
        manifest = store.manifest(txn, record)
    entries = [
        {
            **e.model_dump(by_alias=True, exclude_none=True),
            **({"object": str(store.layout.object_path(e.object_key))} if e.type == "file" else {}),
        }
        for e in manifest.entries
    ]
    if as_json:
        output.emit_json({"artifact": record.model_dump(), "entries": entries})
        return
    click.echo(f"artifact  {record.id}")
    click.echo(f"manifest  {record.manifest}")
    click.echo(f"names     {', '.join(record.names) or '-'}")
    for url in record.urls:
        click.echo(f"url       {url}")
    for algo, hexdigest in sorted(record.digests.items()):
        click.echo(f"{algo:<9} {hexdigest}")
    click.echo(f"size      {record.size}")
    click.echo(f"files     {record.files} ({record.bytes} bytes)")
    for e in entries:
        mode = "x" if e.get("exec") else "-"
        detail = f"-> {e['target']}" if e["type"] == "symlink" else e.get("digest", "")
        click.echo(f"  {e['type']:<7} {mode} {e.get('size', ''):>10} {e['path']} {detail}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "-n",
    "limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show the newest N records.",
)
@pass_ctx
def log(ctx: Context, as_json: bool, limit: int) -> None:
    """The journal's operation log: who did what, when, and how it ended."""
    store = ctx.store()
    with store.journal.read() as txn:
        records = txn.log(limit)
    if as_json:
        output.emit_json([r.model_dump() for r in records])
        return
    for r in records:
        what = r.artifact[:12] if r.artifact else "-"
        detail = f"  {r.detail}" if r.detail else ""
        click.echo(
            f"{r.seq:>6} {_when(r.time)} {r.op:<8} {r.outcome:<9} {what:<12} "
            f"{r.user}@{r.host}[{r.pid}]{detail}"
        )


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
