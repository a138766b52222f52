"""download: urls in, one verified file out (spec/fetch.md).

    for each url, in turn:                      mirrors never share bytes
        start from an empty file
        attempt, and on a transient failure     retry.classify()
            wait (backoff, Retry-After) and     retry.RetryPolicy
            resume where we stopped             resume.plan()
        check the pin                           a mismatch: next url
    all failed: FetchError (exit 4), or DigestMismatch (exit 3) if a url served wrong bytes

The bytes are hashed as they are written, so the hashes always describe exactly
what the file holds: a resume continues them, a restart resets them with the file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self
from urllib.parse import urlsplit

from hutch.fetch import Fetched, FetchOptions
from hutch.fetch.local import path_of, read
from hutch.fetch.progress import Bar, progress_bar
from hutch.fetch.resume import Partial, plan, request_headers
from hutch.fetch.retry import (
    AttemptFailed,
    BadRange,
    HttpStatus,
    RetryPolicy,
    ShortBody,
    Unsupported,
    Verdict,
    classify,
)
from hutch.store.digest import CHUNK, MultiHasher, Pin
from hutch.store.errors import DigestMismatch, FetchError, HutchError, store_error

log = logging.getLogger("hutch.fetch")


def download(urls: Sequence[str], dest: Path, *, pin: Pin | None, options: FetchOptions) -> Fetched:
    """Fetch the first of ``urls`` that works into ``dest``; see the module docstring."""
    if not urls:
        raise FetchError("nothing to fetch: no url given", hint="give at least one url")
    policy = RetryPolicy.from_env(options.retries)
    algos = ["blake3", "sha256", *([pin.algo] if pin is not None else [])]
    failures: list[_UrlFailed] = []
    sink = _Sink(dest, algos)
    try:
        with sink, progress_bar(options.progress) as bar:
            for url in urls:
                try:
                    return _from_url(url, sink, pin=pin, options=options, policy=policy, bar=bar)
                except _UrlFailed as failed:
                    failures.append(failed)
        error, cause = _failure(urls, failures)
        raise error from cause
    except BaseException:
        # The caller removes its staging directory, but a partial file is ours: no
        # half-written archive is left for anything to mistake for a whole one.
        try:
            os.unlink(dest)
        except OSError:
            pass  # the error being raised is the one the user needs
        raise


def _from_url(
    url: str, sink: _Sink, *, pin: Pin | None, options: FetchOptions, policy: RetryPolicy, bar: Bar
) -> Fetched:
    # Every url starts from an empty file: two mirrors' bytes are never spliced.
    sink.restart()
    partial = Partial()
    bar.start(_label(url), None)
    attempt = 0
    while True:
        attempt += 1
        try:
            _attempt(url, sink, partial, timeout=options.timeout, bar=bar)
        except (AttemptFailed, OSError) as exc:
            verdict = classify(exc)
            if isinstance(exc, BadRange):
                partial.forget()
            if not verdict.transient or attempt >= policy.attempts:
                raise _UrlFailed(url, attempt, verdict, exc) from exc
            wait = policy.delay(attempt, verdict.retry_after)
            log.info("%s: %s; retrying in %.1f s", url, verdict.reason, wait)
            time.sleep(wait)
            continue

        digests = sink.hexdigests()
        if pin is None or digests[pin.algo] == pin.hex:
            return Fetched(url, sink.size, digests)
        mismatch = DigestMismatch(url, algo=pin.algo, expected=pin.hex, got=digests[pin.algo])
        if partial.resumed and attempt < policy.attempts:
            # A server that reuses one ETag for two versions honours If-Range and still
            # splices them. One whole download tells that from a source that is wrong.
            log.info("%s: digest mismatch after a resume; downloading it whole", url)
            partial.forget()
            continue
        raise _UrlFailed(url, attempt, classify(mismatch), mismatch)


def _attempt(url: str, sink: _Sink, partial: Partial, *, timeout: float, bar: Bar) -> None:
    """One request: append to or replace what ``sink`` holds; raise on any failure."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        with read(path_of(url), CHUNK) as (size, chunks):
            sink.restart()
            for chunk in chunks:
                sink.write(chunk)
                bar.update(sink.size, size)
        return
    if scheme not in ("http", "https"):
        raise Unsupported(f"unsupported url scheme {scheme!r}: use http(s):// or file://")

    from hutch.fetch import http

    with http.get(url, request_headers(partial), timeout=timeout) as resp:
        how = plan(partial, resp.status, resp.reason, resp.headers)
        if how.start == 0:
            sink.restart()
            partial.size, partial.validator, partial.total = 0, how.validator, how.total
            partial.resumed = False
        else:
            log.info("%s: resuming at byte %d", url, how.start)
            partial.resumed = True
        bar.update(sink.size, how.total)
        if how.complete:
            return
        got = 0
        for chunk in resp.chunks(CHUNK):
            sink.write(chunk)
            got += len(chunk)
            partial.size = sink.size
            bar.update(sink.size, how.total)
        if how.length is not None and got < how.length:
            raise ShortBody(got, how.length)


class _Sink:
    """The destination file and the hashes of exactly the bytes it holds."""

    def __init__(self, dest: Path, algos: Sequence[str]) -> None:
        self.dest = dest
        self._algos = list(algos)
        self._hasher = MultiHasher(self._algos)
        try:
            self._file: BinaryIO = open(dest, "wb")  # noqa: SIM115 - closed by __exit__
        except OSError as exc:
            raise store_error("create", dest, exc) from exc

    @property
    def size(self) -> int:
        return self._hasher.size

    def write(self, chunk: bytes) -> None:
        try:
            self._file.write(chunk)
        except OSError as exc:
            # Our own disk failing is not a network problem: no retry, no next mirror.
            raise store_error("write", self.dest, exc) from exc
        self._hasher.update(chunk)

    def restart(self) -> None:
        if self._hasher.size == 0:
            return
        try:
            self._file.seek(0)
            self._file.truncate()
        except OSError as exc:
            raise store_error("truncate", self.dest, exc) from exc
        self._hasher = MultiHasher(self._algos)

    def hexdigests(self) -> dict[str, str]:
        return self._hasher.hexdigests()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._file.close()
        except OSError as err:
            if exc is None:
                raise store_error("write", self.dest, err) from err


@dataclass(eq=False)  # exceptions compare (and hash) by identity
class _UrlFailed(Exception):
    """Every attempt at one url failed; ``cause`` is the last attempt's error."""

    url: str
    attempts: int
    verdict: Verdict
    cause: BaseException


def _failure(
    urls: Sequence[str], failures: Sequence[_UrlFailed]
) -> tuple[HutchError, BaseException | None]:
    """The error to raise when every url failed, and what to chain it from."""
    total = sum(f.attempts for f in failures)
    last = failures[-1]
    if len(failures) == 1:
        message = f"could not fetch {last.url} ({_times(last.attempts)}): {last.verdict.reason}"
    else:
        message = "\n".join(
            [
                f"could not fetch from any of {len(failures)} urls ({_times(total)}): "
                + last.verdict.reason,
                *(f"  {f.url} ({_times(f.attempts)}): {f.verdict.reason}" for f in failures),
            ]
        )
    summary = FetchError(message, urls=urls, attempts=total, hint=_hint(last))
    mismatch = next((f.cause for f in failures if isinstance(f.cause, DigestMismatch)), None)
    if mismatch is None:
        return summary, last.cause
    # Wrong bytes outrank a dead mirror: exit 3, with what every url did as the cause.
    if len(failures) == 1:
        return mismatch, None
    summary.__cause__ = last.cause
    return mismatch, summary


def _hint(failed: _UrlFailed) -> str | None:
    cause = failed.cause
    if failed.verdict.transient:
        return (
            "the network or the server kept failing; try again later, or allow more with "
            "--retries / --timeout (HUTCH_HTTP_RETRIES, HUTCH_HTTP_TIMEOUT)"
        )
    if isinstance(cause, HttpStatus):
        return f"the server refused the request (HTTP {cause.status}); check the url"
    if failed.verdict.reason.startswith("TLS"):
        return (
            "the server's certificate is not trusted here; fix the server, or point "
            "REQUESTS_CA_BUNDLE at the CA bundle that signs it"
        )
    if isinstance(cause, OSError):
        return "check that the file exists and that this user can read it"
    return None


def _times(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _label(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1] or url
