"""Store administration: init (spec/permissions.md)."""

from __future__ import annotations

import click


def register(app: click.Group) -> None:
    del app
