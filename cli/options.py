"""Option values turned into the store's: the global options, fetch settings, limits, pins.

Free of click, like cli/install.py: a plain `hutch install` runs without
importing it (cli/quick.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from hutch.extract import Limits
    from hutch.fetch import FetchOptions
    from hutch.store.digest import Pin
    from hutch.store.store import Store


class Context(NamedTuple):
    """The global options (`hutch [--store PATH] [-v] [-q] COMMAND`), as every command gets them."""

    store_option: str | None
    verbose: bool
    quiet: bool

    def store(self) -> Store:
        from hutch.store.store import Store, default_root

        return Store.open(default_root(self.store_option))


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


def one_source_only(sources: Sequence[str], **options: object) -> None:
    from hutch.store.errors import UsageError

    given = [f"--{k}" for k, v in options.items() if v]
    if len(sources) > 1 and given:
        raise UsageError(
            f"{' and '.join(given)} apply to one SOURCE, and {len(sources)} were given",
            hint="pin each source as SOURCE#sha256=HEX, or add them one at a time",
        )


def source_pin(given: str, digest: str | None) -> tuple[str, Pin | None]:
    """The source without a `#sha256=HEX` fragment, and the pin from it or --digest."""
    from hutch.store.digest import Pin
    from hutch.store.errors import UsageError
    from hutch.store.store import split_pin

    source, pin = split_pin(given)
    option = Pin.parse(digest) if digest else None
    if pin is not None and option is not None and pin != option:
        raise UsageError(
            f"{given} pins {pin} but --digest says {option}", hint="give one digest, not two"
        )
    return source, pin or option
