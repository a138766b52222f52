"""local: file:// urls, read in chunks through the same copy and digest checks as http.

A missing or unreadable file raises the OSError itself, with its path, so the
FetchError built from it chains the errno for the CLI to print.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

from hutch.fetch.retry import Unsupported


def path_of(url: str) -> str:
    """The local path a file:// url names (RFC 8089: an empty host or localhost only)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise Unsupported(f"file url with a remote host {parts.netloc!r}")
    return unquote(parts.path)


@contextmanager
def read(path: str, size: int) -> Iterator[tuple[int, Iterator[bytes]]]:
    """The file's length and its bytes, ``size`` at a time."""
    with open(path, "rb", buffering=0) as f:
        yield os.fstat(f.fileno()).st_size, _chunks(f, path, size)


def _chunks(f: io.FileIO, path: str, size: int) -> Iterator[bytes]:
    try:
        while chunk := f.read(size):
            yield chunk
    except OSError as exc:
        # read(2) errors carry no file name, and the user needs to know which file.
        raise OSError(exc.errno, exc.strerror, path) from exc
