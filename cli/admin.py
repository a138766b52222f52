"""Store administration: init (spec/permissions.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from hutch.cli.options import Context


def register(app: click.Group) -> None:
    app.add_command(init)


@click.command()
@click.option(
    "--shared",
    "group",
    metavar="GROUP",
    help="Make a store every member of GROUP can add to, install from, repair and gc.",
)
@click.pass_obj
def init(ctx: Context, group: str | None) -> None:
    """Create the store (--store, $HUTCH_STORE, or the user cache dir).

    Without --shared the store is private to this user (other users can still
    install from it if they can read it). With --shared GROUP its directories
    are setgid GROUP and group-writable (2775), and its journal and lock files
    group-writable (0664), whatever any member's umask is.
    """
    import grp
    import os

    from hutch.cli import output
    from hutch.store.errors import PermissionDenied, UsageError
    from hutch.store.layout import Layout, Modes
    from hutch.store.layout import init as make_skeleton
    from hutch.store.store import Store, default_root

    root = default_root(ctx.store_option)
    layout = Layout.at(root)
    modes = Modes.shared(group) if group else Modes.private()
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise UsageError(
                f"no group {group!r} on this host",
                hint="create it first (groupadd GROUP), and add the store's users to it",
            ) from None
        if os.geteuid() != 0 and gid not in os.getgroups():
            raise PermissionDenied(
                f"this user is not a member of group {group!r}, so it cannot make a store "
                f"owned by that group",
                op="init",
                hint=f"ask an administrator to add you to {group} (then log in again), or run "
                "`hutch init --shared` as root",
            )
    current = Modes.load(layout) if layout.config.exists() else None
    if current is not None and current.shared_group != modes.shared_group:
        was = f"shared with group {current.shared_group}" if current.shared_group else "private"
        raise UsageError(
            f"the store at {root} exists already and is {was}",
            hint="hutch does not convert stores in place: init a new one with --store and "
            "`hutch add` the artifacts again (spec/permissions.md §4)",
        )
    make_skeleton(layout, modes)
    # Opening creates the journal with the store's modes, so the first add by
    # any member finds everything it must write already group-writable.
    Store.open(root).journal.close()
    kind = f"shared with group {group} (directories 2775, journal and locks 0664)"
    output.info(f"initialised store at {root}: {kind if group else 'private'}", quiet=ctx.quiet)
