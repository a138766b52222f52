"""http: hutch's one seam to requests (and the urllib3 beneath it).

Every requests/urllib3 error becomes a TransferError ``from`` the original, so
retry.classify() can read the whole chain down to the errno. Nothing else in
hutch imports requests, and this module is only imported once an http(s) url
is actually fetched: ``hutch --version`` never pays for it.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import requests
import requests.adapters
import urllib3.exceptions
from hutch import __version__
from hutch.fetch.retry import TransferError

# Errors that can escape requests or a raw urllib3 read. OSError covers requests'
# own exceptions (RequestException subclasses IOError) and bare socket errors.
_ERRORS = (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException)

_lock = threading.Lock()
_session: requests.Session | None = None
_session_pid = 0


def session() -> requests.Session:
    """The process's one Session: connections are pooled and reused across fetches."""
    # One pool per process, made on first use.
    global _session, _session_pid
    with _lock:
        # A child after fork() must not share its parent's pooled sockets.
        if _session is None or _session_pid != os.getpid():
            s = requests.Session()
            # We retry ourselves, around the whole transfer; urllib3 retrying only the
            # request would double the attempts and cannot resume a body.
            adapter = requests.adapters.HTTPAdapter(max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.headers["User-Agent"] = f"hutch/{__version__}"
            # The bytes as stored, never a transparent decoding: the digest is of the
            # file, and Content-Length and Range offsets must count the same bytes.
            s.headers["Accept-Encoding"] = "identity"
            _session, _session_pid = s, os.getpid()
        return _session


def close_session() -> None:
    """Close the pooled connections (tests, and long-lived embedders)."""
    global _session  # noqa: PLW0603
    with _lock:
        if _session is not None:
            _session.close()
            _session = None


class Response:
    """The status, headers and body stream of one answer."""

    def __init__(self, resp: requests.Response, url: str, timeout: float) -> None:
        self._resp = resp
        self.url = url
        self.timeout = timeout
        self.status = resp.status_code
        self.reason = resp.reason or http.client.responses.get(resp.status_code, "")
        self.headers: Mapping[str, str] = resp.headers  # case-insensitive

    def chunks(self, size: int) -> Iterator[bytes]:
        """The body as it arrives, at most ``size`` bytes at a time.

        read1() hands over whatever has arrived: a read that waited to fill a whole
        chunk would throw the partial chunk away on a reset, and resume further back.
        """
        raw = self._resp.raw
        try:
            while chunk := raw.read1(size, decode_content=False):
                yield chunk
        except _ERRORS as exc:
            raise TransferError(self.url, stage="body", timeout=self.timeout) from exc


@contextmanager
def get(url: str, headers: Mapping[str, str], *, timeout: float) -> Iterator[Response]:
    """GET ``url``; the body is streamed, and the connection released on exit."""
    try:
        # The read timeout bounds each wait for bytes, not the whole transfer.
        resp = session().get(url, headers=dict(headers), stream=True, timeout=(timeout, timeout))
    except _ERRORS as exc:
        raise TransferError(
            url,
            stage="request",
            timeout=timeout,
            connect_timeout=isinstance(exc, requests.ConnectTimeout),
        ) from exc
    with resp:
        yield Response(resp, url, timeout)
