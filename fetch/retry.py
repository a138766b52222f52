"""retry: which failures deserve another attempt, and how long to wait before it.

``classify()`` is the one place that decides transient vs permanent (spec/fetch.md
§Retry). It looks through every wrapped cause, because the error that matters is
usually three wrappers deep: requests' ConnectionError holds urllib3's
ProtocolError, which holds the ConnectionResetError with the errno. uv shipped
installs that died on a mid-stream reset because its check stopped at the first
wrapper (astral-sh/uv#14171); walking the whole chain is the fix.

This module imports neither requests nor urllib3: the HTTP seam (fetch/http.py)
wraps their errors in TransferError, and everything below it is recognised by
the standard library types it ends in.
"""

from __future__ import annotations

import errno as _errno
import http.client
import math
import os
import random
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from hutch.store.errors import DigestMismatch, UsageError, describe_oserror

# -- What one failed attempt can be --------------------------------------------------------


class AttemptFailed(Exception):
    """One attempt at one url failed. Internal to fetch: never reaches the user unwrapped."""


class TransferError(AttemptFailed):
    """A requests/urllib3 error, translated at the HTTP seam and chained ``from`` it.

    ``stage`` is "request" (connecting, sending, waiting for the status line) or
    "body" (streaming); ``connect_timeout`` says a timeout happened while connecting.
    """

    def __init__(
        self, url: str, *, stage: str, timeout: float, connect_timeout: bool = False
    ) -> None:
        during = " while reading the body" if stage == "body" else ""
        super().__init__(f"GET {url} failed{during}")
        self.url = url
        self.stage = stage
        self.timeout = timeout
        self.connect_timeout = connect_timeout


class HttpStatus(AttemptFailed):
    """The server answered with a status that carries no usable body."""

    def __init__(self, status: int, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status} {reason}".rstrip())
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class ShortBody(AttemptFailed):
    """The body ended before the length its headers announced."""

    def __init__(self, got: int, expected: int) -> None:
        super().__init__(f"the body ended after {got} of {expected} bytes")
        self.got = got
        self.expected = expected


class BadRange(AttemptFailed):
    """A range answer that cannot be appended to what we hold (spec/fetch.md §Resume)."""


class Unsupported(AttemptFailed):
    """A url this fetcher cannot use at all (scheme, host)."""


_E = TypeVar("_E", bound=BaseException)

# -- Classification ------------------------------------------------------------------------

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# Errnos of a network that failed this time but may work the next: the peer or a
# middlebox dropped us, or a route flapped.
TRANSIENT_ERRNOS = frozenset(
    {
        _errno.ECONNRESET,
        _errno.ECONNREFUSED,
        _errno.ECONNABORTED,
        _errno.EPIPE,
        _errno.ETIMEDOUT,
        _errno.EHOSTUNREACH,
        _errno.ENETUNREACH,
        _errno.ENETDOWN,
        _errno.EHOSTDOWN,
        _errno.ENETRESET,
    }
)


@dataclass(frozen=True)
class Verdict:
    transient: bool
    reason: str  # the cause in human terms: "connection reset by peer (ECONNRESET)"
    retry_after: float | None = None  # seconds the server asked us to wait


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps, outermost first, each once.

    Follows ``__cause__``, ``__context__``, exceptions among ``args`` (urllib3's
    ProtocolError and requests' ConnectionError keep the inner error there) and
    ``reason`` (urllib3's MaxRetryError).
    """
    seen: set[int] = set()
    queue: list[BaseException] = [exc]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        inner.extend(current.args)
        queue.extend(e for e in inner if isinstance(e, BaseException))


def classify(exc: BaseException) -> Verdict:
    """Decide whether the failure ``exc`` is worth another attempt at the same url."""
    chain = list(causes(exc))

    def first(kind: type[_E]) -> _E | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    # Order matters: the most specific diagnosis wins wherever it sits in the chain.
    if (mismatch := first(DigestMismatch)) is not None:
        return Verdict(False, f"digest mismatch ({mismatch.algo}:{mismatch.got[:16]}...)")
    if (cert := first(ssl.SSLCertVerificationError)) is not None:
        why = getattr(cert, "verify_message", None) or _ssl_reason(cert)
        return Verdict(False, f"TLS certificate verification failed: {why}")
    if (cut := first(ssl.SSLEOFError) or first(ssl.SSLSyscallError)) is not None:
        # The TLS stream was cut (an overloaded server, a middlebox): the network's doing.
        return Verdict(True, f"TLS connection closed unexpectedly ({_ssl_reason(cut)})")
    if (tls := first(ssl.SSLError)) is not None:
        # A protocol or version mismatch (https to a plain-http port): a retry will not fix it.
        return Verdict(False, f"TLS error: {_ssl_reason(tls)}")
    if (status := first(HttpStatus)) is not None:
        return Verdict(status.status in RETRY_STATUSES, str(status), status.retry_after)
    if (unsupported := first(Unsupported)) is not None:
        return Verdict(False, str(unsupported))
    if (dns := first(socket.gaierror)) is not None:
        name = _EAI_NAMES.get(dns.errno or 0, str(dns.errno))
        if dns.errno == socket.EAI_AGAIN:
            return Verdict(True, f"temporary DNS failure ({name})")
        return Verdict(False, f"host name lookup failed: {dns.strerror} ({name})")

    transfer = first(TransferError)
    if first(TimeoutError) is not None and transfer is not None:
        if transfer.connect_timeout:
            return Verdict(True, f"connect timed out after {transfer.timeout:g} s")
        return Verdict(True, f"read timed out after {transfer.timeout:g} s")
    for e in chain:
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return Verdict(True, _errno_text(e))
    if (gone := first(http.client.RemoteDisconnected)) is not None:
        return Verdict(True, f"the server closed the connection without answering ({gone})")
    if (short := first(ShortBody)) is not None:
        return Verdict(True, str(short))
    if first(http.client.IncompleteRead) is not None:
        return Verdict(True, "the server closed the connection before the end of the body")
    if (bad := first(BadRange)) is not None:
        return Verdict(True, str(bad))
    if first(TimeoutError) is not None:
        return Verdict(True, "timed out")
    if first(ConnectionError) is not None:
        return Verdict(True, f"connection failed: {chain[-1]}")

    local = next((e for e in chain if isinstance(e, OSError) and e.errno is not None), None)
    if local is not None and transfer is None:
        # A file:// source: missing or unreadable stays so however often we ask.
        return Verdict(False, describe_oserror(local))
    if transfer is not None and transfer.stage == "body":
        # Whatever broke a body mid-stream (a bad chunk header, a protocol error) is
        # the network's doing, not the file's: the next attempt resumes.
        return Verdict(True, f"connection broken: {chain[-1]}")
    return Verdict(False, str(chain[-1]) or type(chain[-1]).__name__)


def _ssl_reason(exc: ssl.SSLError) -> str:
    # ``reason`` is set only on errors the ssl module raised itself.
    return str(getattr(exc, "reason", None) or exc)


def _errno_text(exc: OSError) -> str:
    code = exc.errno or 0
    text = os.strerror(code)
    return f"{text[:1].lower()}{text[1:]} ({_errno.errorcode.get(code, code)})"


_EAI_NAMES = {
    getattr(socket, name): name
    for name in ("EAI_AGAIN", "EAI_NONAME", "EAI_FAIL", "EAI_NODATA", "EAI_SERVICE")
    if hasattr(socket, name)
}


# -- Waiting -------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT by definition
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int  # per url: the first try plus the retries
    backoff: float  # seconds before the first retry; doubles each time
    retry_after_max: float  # a server's Retry-After is honoured up to this
    backoff_max: float = 60.0

    @classmethod
    def from_env(cls, retries: int) -> RetryPolicy:
        return cls(
            attempts=retries + 1,
            backoff=env_float("HUTCH_HTTP_BACKOFF", 0.5),
            retry_after_max=env_float("HUTCH_HTTP_RETRY_AFTER_MAX", 60.0),
        )

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        # Exponential with jitter, so clients that failed together do not retry in
        # lockstep against a server that is just coming back.
        ceiling = min(self.backoff * 2.0 ** (attempt - 1), self.backoff_max)
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(
            f"invalid {name}={raw!r}: expected a number of seconds >= 0",
            hint=f"unset {name} or give it a number such as 0.5",
        )
    return value
