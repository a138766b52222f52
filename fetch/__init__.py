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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hutch.store.digest import Pin


@dataclass(frozen=True)
class FetchOptions:
    timeout: float = 30.0  # connect timeout and read timeout between bytes
    retries: int = 5  # per url
    progress: bool = False  # a progress bar on stderr (the CLI sets this on a TTY)


@dataclass(frozen=True)
class Fetched:
    url: str  # the url that served the bytes
    size: int
    digests: dict[str, str]  # algo -> hex; always blake3 and sha256


def fetch(
    urls: Sequence[str], dest: Path, *, pin: Pin | None = None, options: FetchOptions | None = None
) -> Fetched:
    from hutch.fetch.download import download

    return download(urls, dest, pin=pin, options=options or FetchOptions())
