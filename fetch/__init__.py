"""Fetch: urls in, one verified archive file in staging out.

Interface (the store depends on exactly this):

    fetch(urls, dest, *, pin=None, options=FetchOptions()) -> Fetched

- ``urls``: http(s):// or file:// URLs serving the same bytes (the first is the
  primary, the rest mirrors), tried in turn.
- ``dest``: the file to write, inside a private staging directory; created or
  truncated. Streamed while hashing (blake3 + sha256, plus ``pin.algo``); memory
  stays flat whatever the size.
- Returns where the bytes came from, their size and their digests. If ``pin``
  is given it has been checked: a mismatch raises DigestMismatch (exit 3).
- Every other failure raises FetchError (exit 4) naming the urls, the attempts
  and the last underlying cause, chained with ``from``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from hutch.store.digest import Pin
from hutch.store.errors import UsageError

_N = TypeVar("_N", int, float)


class FetchOptions(NamedTuple):
    timeout: float = 30.0  # connect timeout and read timeout between bytes
    retries: int = 5  # per url
    progress: bool = False  # a progress bar on stderr (the CLI sets this on a TTY)

    @classmethod
    def from_env(cls, timeout: float | None, retries: int | None, progress: bool) -> FetchOptions:
        """The CLI's --timeout/--retries, else HUTCH_HTTP_TIMEOUT/_RETRIES, else the defaults."""
        default = cls()
        if timeout is None:
            timeout = _from_env("HUTCH_HTTP_TIMEOUT", float, default.timeout)
        if retries is None:
            retries = _from_env("HUTCH_HTTP_RETRIES", int, default.retries)
        if not math.isfinite(timeout) or timeout <= 0:
            raise UsageError(f"invalid timeout {timeout!r}: expected seconds > 0")
        if retries < 0:
            raise UsageError(f"invalid retries {retries!r}: expected a count >= 0")
        return cls(timeout=timeout, retries=retries, progress=progress)


def _from_env(name: str, kind: type[_N], default: _N) -> _N:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number of seconds"
        raise UsageError(
            f"invalid {name}={raw!r}: expected {what}", hint=f"unset {name} or fix its value"
        ) from None


class Fetched(NamedTuple):
    url: str  # the url that served the bytes
    size: int
    digests: dict[str, str]  # algo -> hex; always blake3 and sha256


def fetch(
    urls: Sequence[str], dest: Path, *, pin: Pin | None = None, options: FetchOptions | None = None
) -> Fetched:
    from hutch.fetch.download import download

    return download(urls, dest, pin=pin, options=options or FetchOptions())
