"""Maintenance commands: gc, rm, stats, doctor (spec/inspect.md)."""

from __future__ import annotations

import click


def register(app: click.Group) -> None:
    del app
