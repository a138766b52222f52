"""Inspection commands: verify, ls, show, log (spec/inspect.md).

Also the parsers every inspection and maintenance command shares: durations
(``30d``), points in time (``2h`` ago or an ISO date), sizes (extract's
parse_size), ``ls --filter`` expressions, and shell completion of artifacts.
Data goes to stdout, summaries to stderr (spec/cli.md).
"""

from __future__ import annotations

import fnmatch
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import click
from hutch.cli import output
from hutch.cli.app import fetch_options, pass_ctx
from hutch.cli.options import Context, fetch_settings, limit_settings

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem
    from hutch.store.journal import ArtifactRecord, LogRecord
    from hutch.store.stats import Usage


def register(app: click.Group) -> None:
    for command in (verify, ls, show, log):
        app.add_command(command)


# -- shared parsers ----------------------------------------------------------
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdwy])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdwy])")


def parse_duration(text: str, *, what: str = "duration") -> float:
    """``30d``, ``12h``, ``90m``, ``1w``, ``1d12h`` -> seconds. ``0`` is zero."""
    from hutch.store.errors import UsageError

    cleaned = text.strip().lower()
    if cleaned == "0":
        return 0.0
    if not _DURATION.fullmatch(cleaned):
        raise UsageError(
            f"invalid {what} {text!r}",
            hint="give a number and a unit: 30s, 90m, 12h, 30d, 2w, 1y (or combined: 1d12h)",
        )
    return float(sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(cleaned)))


def parse_when(text: str, *, now: float | None = None) -> float:
    """A point in time: a duration ago (``2h``, ``3d``) or an ISO date (``2024-05-01[T12:00]``)."""
    from hutch.store.errors import UsageError

    now = time.time() if now is None else now
    if _DURATION.fullmatch(text.strip().lower()):
        return now - parse_duration(text)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"invalid time {text!r}",
            hint="give a duration ago (2h, 3d, 1w) or an ISO date (2024-05-01, "
            "2024-05-01T12:00, 2024-05-01T12:00+02:00)",
        ) from None
    return when.timestamp()  # a naive time is local time, as the user typed it


def parse_size(text: str, *, what: str = "size") -> int:
    """Sizes like ``10GiB``, ``500M`` (binary), ``10GB`` (decimal); ``0`` is zero."""
    from hutch.extract import parse_size as parse

    return 0 if text.strip() == "0" else parse(text, what=what)


def human_size(n: float) -> str:
    from hutch.store.stats import human_size as fmt

    return fmt(n)


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def ago(t: float, now: float | None = None) -> str:
    """``3d ago``, ``5h ago``, ``just now``: how long ago, in its largest unit."""
    delta = (time.time() if now is None else now) - t
    if delta < 60:
        return "just now"
    for unit, seconds in (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600)):
        if delta >= seconds:
            return f"{int(delta // seconds)}{unit} ago"
    return f"{int(delta // 60)}m ago"


def label(record: ArtifactRecord) -> str:
    return record.id[:12] + (f" ({', '.join(record.names)})" if record.names else "")


def complete_artifact(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of ARTIFACT arguments: names and 12-hex id prefixes in the store."""
    del param
    from click.shell_completion import CompletionItem

    try:
        from hutch.store.store import Store, default_root

        root = default_root(ctx.find_root().params.get("store_option"))
        if not (root / "hutch-store.json").exists():
            return []
        store = Store.open(root, create=False)
        with store.journal.read() as txn:
            records = list(txn.artifacts())
    except Exception:  # completion must never print a traceback into the shell
        return []
    items = []
    for r in records:
        about = ", ".join(r.names) or (r.urls[0] if r.urls else "")
        items.append(CompletionItem(r.id[:12], help=about))
        items += [CompletionItem(name, help=r.id[:12]) for name in r.names]
    return [i for i in items if str(i.value).startswith(incomplete)]


# -- ls --filter ---------------------------------------------------------------
class Condition(NamedTuple):
    """One ``ls --filter`` term, e.g. ``name=numpy*`` or ``unused>30d``."""

    text: str
    test: Callable[[ArtifactRecord, Usage, float], bool]

    def __call__(self, record: ArtifactRecord, use: Usage, now: float) -> bool:
        return self.test(record, use, now)


_TERM = re.compile(r"\s*([a-z]+)\s*(!=|=|>|<)\s*(.*?)\s*")
FILTER_HELP = (
    "Only artifacts matching EXPR: comma-separated terms, all of which must hold: "
    "name=GLOB, url=GLOB, id=PREFIX (also !=), size>SIZE, size<SIZE (unpacked bytes), "
    "unique>SIZE, unused>DURATION (since last use), age>DURATION (since added), e.g. "
    "'name=numpy*,unused>30d'. Repeatable."
)


def parse_filters(exprs: tuple[str, ...]) -> list[Condition]:
    """Every term of every --filter; all problems are usage errors before the store opens."""
    return [_term(t) for expr in exprs for t in expr.split(",") if t.strip()]


def _term(text: str) -> Condition:
    from hutch.store.errors import UsageError

    m = _TERM.fullmatch(text)
    if m is None:
        raise UsageError(f"invalid --filter term {text!r}", hint=FILTER_HELP)
    key, op, value = m.groups()
    if key in ("name", "url", "id") and op in ("=", "!="):
        return _glob(text, key, value, negate=op == "!=")
    if key in ("size", "unique") and op in (">", "<"):
        limit = parse_size(value, what=f"--filter term {text!r}: size")

        def sized(r: ArtifactRecord, u: Usage, now: float) -> bool:
            del now
            n = r.bytes if key == "size" else u.unique_bytes
            return n > limit if op == ">" else n < limit

        return Condition(text, sized)
    if key in ("unused", "age") and op in (">", "<"):
        span = parse_duration(value, what=f"--filter term {text!r}: duration")

        def aged(r: ArtifactRecord, u: Usage, now: float) -> bool:
            del u
            elapsed = now - (r.last_used if key == "unused" else r.added)
            return elapsed > span if op == ">" else elapsed < span

        return Condition(text, aged)
    raise UsageError(f"invalid --filter term {text!r}", hint=FILTER_HELP)


def _glob(text: str, key: str, pattern: str, *, negate: bool) -> Condition:
    def values(r: ArtifactRecord) -> list[str]:
        return {"name": r.names, "url": r.urls, "id": [r.id]}[key]

    if key == "id":
        pattern = pattern.lower()
        pattern += "" if any(c in pattern for c in "*?[") else "*"  # an id prefix

    def matches(r: ArtifactRecord, u: Usage, now: float) -> bool:
        del u, now
        hit = any(fnmatch.fnmatchcase(v, pattern) for v in values(r))
        return hit != negate

    return Condition(text, matches)


# -- verify --------------------------------------------------------------------
@click.command()
@click.argument("artifacts", nargs=-1, shell_complete=complete_artifact)
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
    from hutch.store.verify import verify_all

    store = ctx.store()
    with store.journal.read() as txn:
        records = [store.get(txn, a) for a in artifacts] if artifacts else list(txn.artifacts())
        manifests = [store.manifest(txn, r) for r in records]
    report: list[dict[str, Any]] = []
    lines = output.Lines()  # a full disk behind stdout does not cut the repairs short
    found = verify_all(store.layout, [m.files for m in manifests], "full" if full else "stat")
    for record, manifest, damage in zip(records, manifests, found, strict=True):
        entry: dict[str, Any] = {
            "artifact": record.id,
            "name": record.names[0] if record.names else None,
            "status": "ok",
            "damage": [{"path": d.path, "object": d.object, "problem": d.problem} for d in damage],
        }
        if damage and repair:
            from hutch.store.repair import repair as do_repair  # fetch and extract: only now

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
        report.append(entry)
        if not as_json:
            _print_verify(lines, entry, quiet=ctx.quiet)
    if as_json:
        output.emit_json(report, lines)  # its damage still exits 3
    lines.report()
    counts = {s: sum(e["status"] == s for e in report) for s in ("ok", "damaged", "repaired")}
    output.info(
        f"verified {len(report)} artifact(s) ({'blake3' if full else 'stat'}): "
        f"{counts['ok']} ok, {counts['repaired']} repaired, {counts['damaged']} damaged",
        quiet=ctx.quiet or as_json,
    )
    if counts["damaged"]:
        raise IntegrityError(
            f"{counts['damaged']} of {len(records)} artifact(s) damaged",
            hint=None if repair else "run `hutch verify --repair` to heal from the sources",
        )
    if lines.failure is not None:
        raise click.exceptions.Exit(lines.failure.exit_code)


def _print_verify(lines: output.Lines, entry: dict[str, Any], *, quiet: bool) -> None:
    name = entry["artifact"][:12] + (f" ({entry['name']})" if entry["name"] else "")
    if entry["status"] == "ok":
        if not quiet:
            lines.out(f"{name}: ok")
        return
    lines.out(f"{name}: {entry['status']}, {len(entry['damage'])} file(s)")
    for d in entry["damage"][:50]:
        lines.out(f"  {d['path']}: {d['problem']}")
    if len(entry["damage"]) > 50:
        lines.out(f"  ... and {len(entry['damage']) - 50} more (--json lists all)")


# -- ls ------------------------------------------------------------------------
@click.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--sort",
    type=click.Choice(["added", "used", "size"]),
    default="added",
    show_default=True,
    help="Order by time added, time last used, or unpacked size; oldest or smallest first.",
)
@click.option("-r", "--reverse", is_flag=True, help="Newest or largest first.")
@click.option("--filter", "filters", multiple=True, metavar="EXPR", help=FILTER_HELP)
@pass_ctx
def ls(ctx: Context, as_json: bool, sort: str, reverse: bool, filters: tuple[str, ...]) -> None:
    """List the artifacts: id, names, files, bytes (unique and shared), added, last used."""
    from hutch.store.stats import usage

    conditions = parse_filters(filters)
    store = ctx.store()
    with store.journal.read() as txn:
        records = list(txn.artifacts())
        use = usage(store, txn, records)
    now = time.time()
    rows = [r for r in records if all(c(r, use[r.id], now) for c in conditions)]
    order: dict[str, Callable[[ArtifactRecord], float]] = {
        "added": lambda r: r.added,
        "used": lambda r: r.last_used,
        "size": lambda r: r.bytes,
    }
    rows.sort(key=lambda r: (order[sort](r), r.id), reverse=reverse)
    if as_json:
        output.emit_json([_ls_json(r, use[r.id]) for r in rows])
    elif sys.stdout.isatty():
        _ls_table(rows, use, now)
    else:
        for r in rows:
            u = use[r.id]
            output.out(
                "\t".join(
                    [
                        r.id,
                        ",".join(r.names) or "-",
                        str(r.files),
                        str(r.bytes),
                        str(u.unique_bytes),
                        str(u.shared_bytes),
                        iso(r.added),
                        iso(r.last_used),
                    ]
                )
            )


def _ls_json(record: ArtifactRecord, use: Usage) -> dict[str, Any]:
    return {
        **record.to_dict(),
        "unique_bytes": use.unique_bytes,
        "shared_bytes": use.shared_bytes,
    }


def _ls_table(rows: list[ArtifactRecord], use: dict[str, Usage], now: float) -> None:
    from rich.console import Console
    from rich.table import Table

    # NO_COLOR: no escapes at all (rich alone would still print bold and dim).
    console = Console(color_system="auto" if output.use_color() else None, highlight=False)
    # No box and one space between columns: the table fits 80 columns, and only
    # NAME gives way (with an ellipsis) on a narrow terminal.
    table = Table(box=None, padding=(0, 1, 0, 0), header_style="bold")
    table.add_column("ID", style="cyan", no_wrap=True)
    table.add_column("NAME", overflow="ellipsis", no_wrap=True, min_width=4)
    for title in ("FILES", "SIZE", "UNIQUE", "SHARED"):
        table.add_column(title, justify="right", no_wrap=True)
    table.add_column("ADDED", no_wrap=True)
    table.add_column("LAST USED", justify="right", no_wrap=True)
    for r in rows:
        u = use[r.id]
        table.add_row(
            r.id[:12],
            ", ".join(r.names) or "-",
            str(r.files),
            human_size(r.bytes),
            human_size(u.unique_bytes),
            human_size(u.shared_bytes),
            time.strftime("%Y-%m-%d", time.localtime(r.added)),
            ago(r.last_used, now),
        )
    total = sum(r.bytes for r in rows)
    table.caption = (
        f"{len(rows)} artifact(s), {human_size(total)} unpacked, "
        f"{human_size(sum(use[r.id].unique_bytes for r in rows))} unique"
    )
    with output.writing():
        console.print(table)


# -- show ----------------------------------------------------------------------
_MODES = {"dir": 0o755, "symlink": 0o777}


@click.command()
@click.argument("artifact", shell_complete=complete_artifact)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def show(ctx: Context, artifact: str, as_json: bool) -> None:
    """Show an artifact: its sources, digests, manifest and every entry."""
    import stat

    from hutch.store.stats import usage

    store = ctx.store()
    with store.journal.read() as txn:
        record = store.get(txn, artifact)
        manifest = store.manifest(txn, record)
        use = usage(store, txn, [record])[record.id]
    root = store.layout.root
    entries: list[dict[str, Any]] = []
    for e in manifest.entries:
        # Objects are stored 0444, or 0555 when executable; hardlinked installs share them.
        mode = (0o555 if e.exec else 0o444) if e.type == "file" else _MODES[e.type]
        entry = {**e.to_dict(), "mode": f"{mode:04o}"}
        if e.type == "file":
            entry["object"] = str(store.layout.object_path(e.object_key))
        entries.append(entry)
    if as_json:
        output.emit_json(
            {
                "artifact": _ls_json(record, use),
                "manifest_path": str(store.layout.manifest_path(record.manifest)),
                "entries": entries,
            }
        )
        return
    kind = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}
    lines = [
        f"artifact   {record.id}",
        f"names      {', '.join(record.names) or '-'}",
        *(f"url        {url}" for url in record.urls),
        *(f"{algo:<10} {hexdigest}" for algo, hexdigest in sorted(record.digests.items())),
        f"archive    {human_size(record.size)} ({record.size} bytes)",
        (
            f"files      {record.files}, {human_size(record.bytes)} "
            f"({human_size(use.unique_bytes)} unique, {human_size(use.shared_bytes)} shared)"
        ),
        f"manifest   {record.manifest}",
        f"           {store.layout.manifest_path(record.manifest)}",
        f"added      {when(record.added)}",
        f"last used  {when(record.last_used)} ({ago(record.last_used)})",
        "",
    ]
    for item in entries:
        perms = stat.filemode(kind[item["type"]] | int(item["mode"], 8))
        where = ""
        if item["type"] == "symlink":
            where = f" -> {item['target']}"
        elif item["type"] == "file":
            where = f"  {_relative(item['object'], str(root))}"
        lines.append(f"{perms} {item.get('size', ''):>10} {item['path']}{where}")
    output.out("\n".join(lines))


def _relative(path: str, root: str) -> str:
    return path[len(root) + 1 :] if path.startswith(root + "/") else path


# -- log -----------------------------------------------------------------------
_OUTCOME_COLORS = {"committed": "green", "failed": "red", "aborted": "yellow"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "-n",
    "limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Show the newest N matching records (0: all).",
)
@click.option(
    "--op",
    "ops",
    multiple=True,
    metavar="OP",
    help="Only these operations: add, repair, rebuild, rm, gc, ... (repeatable, or a,b).",
)
@click.option(
    "--since", metavar="WHEN", help="Only records from WHEN on: a duration ago (2h, 3d) or a date."
)
@pass_ctx
def log(ctx: Context, as_json: bool, limit: int, ops: tuple[str, ...], since: str | None) -> None:
    """The operation log: who did what, when, and how it ended.

    Outcomes: committed; failed (the detail is the cause); aborted (the process
    died, a later command recovered its staging directory).
    """
    wanted = {op.strip() for text in ops for op in text.split(",") if op.strip()}
    start = parse_when(since) if since else None
    store = ctx.store()
    records: list[LogRecord] = []
    with store.journal.read() as txn:
        for r in txn.log_newest_first():
            if start is not None and r.time < start:
                break  # the log is in commit order
            if wanted and r.op not in wanted:
                continue
            records.append(r)
            if limit and len(records) >= limit:
                break
    records.reverse()
    if as_json:
        output.emit_json([r.to_dict() for r in records])
        return
    color = output.use_color()
    for r in records:
        what = r.artifact[:12] if r.artifact else "-"
        outcome = f"{r.outcome:<9}"
        if color:
            outcome = click.style(outcome, fg=_OUTCOME_COLORS.get(r.outcome))
        detail = f"  {r.detail}" if r.detail else ""
        output.out(
            f"{r.seq:>6} {when(r.time)} {r.op:<8} {outcome} {what:<12} "
            f"{r.user}@{r.host}[{r.pid}]{detail}"
        )
