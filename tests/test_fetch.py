"""Fetch against a real misbehaving HTTP server on loopback (spec/fetch.md).

Every transient fault must end with the exact bytes and digests; every
permanent one with the right error, exit code and message, and an empty
staging directory.
"""

from __future__ import annotations

import email.utils
import errno
import hashlib
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from faultserver import (
    FOREVER,
    HTML_ERROR_PAGE,
    Change,
    Corrupt,
    FaultServer,
    Html,
    IgnoreIfRange,
    IgnoreRange,
    Reset,
    Stall,
    Status,
    Truncate,
)
from hutch.fetch import Fetched, FetchOptions, fetch, http
from hutch.fetch.resume import Partial, plan, validator
from hutch.fetch.retry import (
    BadRange,
    HttpStatus,
    RetryPolicy,
    ShortBody,
    TransferError,
    classify,
    parse_retry_after,
)
from hutch.store.digest import Pin, blake3_bytes
from hutch.store.errors import DigestMismatch, FetchError, StoreError, UsageError

DATA = random.Random(3).randbytes(3 << 20)  # 3 MiB: several chunks, resets land mid-body
NEW = random.Random(4).randbytes(3 << 20)  # the "new version" of DATA, same length
MIB = 1 << 20


def sha256(data: bytes) -> Pin:
    return Pin("sha256", hashlib.sha256(data).hexdigest())


@pytest.fixture(autouse=True)
def _fast_and_clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HUTCH_HTTP_BACKOFF", "0.001")
    monkeypatch.setenv("HUTCH_HTTP_RETRY_AFTER_MAX", "5")
    yield
    # Pooled connections to this test's server would outlive it (ResourceWarning).
    http.close_session()


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


def get(
    urls: str | list[str],
    staging: Path,
    *,
    pin: Pin | None = None,
    timeout: float = 2.0,
    retries: int = 5,
) -> Fetched:
    options = FetchOptions(timeout=timeout, retries=retries)
    urls = [urls] if isinstance(urls, str) else urls
    return fetch(urls, staging / "archive", pin=pin, options=options)


def assert_exact(got: Fetched, staging: Path, data: bytes) -> None:
    assert (staging / "archive").read_bytes() == data
    assert got.size == len(data)
    assert got.digests["blake3"] == blake3_bytes(data)
    assert got.digests["sha256"] == hashlib.sha256(data).hexdigest()
    assert os.listdir(staging) == ["archive"]


def ranges(srv: FaultServer, path: str) -> list[str | None]:
    return [r.range for r in srv.requests_for(path)]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- Success, and the transient faults that must still end in the exact bytes ---------------


def test_clean_download_hashes_while_streaming(server: FaultServer, staging: Path) -> None:
    """§Interface: blake3 and sha256 always, plus the pin's algorithm."""
    url = server.serve("/a.tar.gz", DATA)
    pin = Pin("sha512", hashlib.sha512(DATA).hexdigest())
    got = get(url, staging, pin=pin)
    assert_exact(got, staging, DATA)
    assert got.url == url
    assert got.digests["sha512"] == pin.hex
    assert server.requests_for("/a.tar.gz")[0].headers["accept-encoding"] == "identity"


def test_one_session_pools_connections(server: FaultServer, staging: Path) -> None:
    """§HTTP: one Session per process; a second fetch reuses the first one's connection."""
    url = server.serve("/a", DATA)
    get(url, staging)
    get(url, staging)
    first, second = server.requests_for("/a")
    assert first.client_port == second.client_port


def test_reset_mid_body_resumes_where_it_stopped(server: FaultServer, staging: Path) -> None:
    """§Resume: after a RST, Range starts at the bytes held and If-Range names the ETag."""
    url = server.serve("/a", DATA, faults=[Reset(at=1 * MIB + 7), Reset(at=2 * MIB + 3)])
    got = get(url, staging, pin=sha256(DATA))
    assert_exact(got, staging, DATA)
    sent = server.requests_for("/a")
    assert ranges(server, "/a") == [None, f"bytes={MIB + 7}-", f"bytes={2 * MIB + 3}-"]
    assert sent[0].if_range is None
    assert sent[1].if_range == sent[2].if_range
    assert sent[1].if_range is not None
    assert sent[1].if_range.startswith('"')


def test_truncated_body_resumes(server: FaultServer, staging: Path) -> None:
    """§Retry: a body shorter than its Content-Length (clean FIN) is retried and resumed."""
    url = server.serve("/a", DATA, faults=[Truncate(at=123_457)])
    assert_exact(get(url, staging, pin=sha256(DATA)), staging, DATA)
    assert ranges(server, "/a") == [None, "bytes=123457-"]


def test_stall_longer_than_read_timeout_resumes(server: FaultServer, staging: Path) -> None:
    """§Retry: the read timeout bounds the wait between bytes; the retry resumes."""
    url = server.serve("/a", DATA, faults=[Stall(at=500_000, seconds=30)])
    start = time.monotonic()
    assert_exact(get(url, staging, timeout=0.5), staging, DATA)
    assert time.monotonic() - start < 5
    assert ranges(server, "/a") == [None, "bytes=500000-"]


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_retryable_status_is_retried(server: FaultServer, staging: Path, code: int) -> None:
    """§Retry table: 408, 429, 500, 502, 503, 504 are transient."""
    url = server.serve("/a", DATA, faults=[Status(code, times=2)])
    assert_exact(get(url, staging), staging, DATA)
    assert len(server.requests_for("/a")) == 3


@pytest.mark.parametrize(
    "retry_after",
    [
        pytest.param("3600", id="seconds"),
        pytest.param(email.utils.formatdate(time.time() + 3600, usegmt=True), id="http-date"),
    ],
)
def test_retry_after_is_honoured_up_to_the_cap(
    server: FaultServer, staging: Path, monkeypatch: pytest.MonkeyPatch, retry_after: str
) -> None:
    """§Backoff: Retry-After (seconds or HTTP-date) replaces the backoff, capped.

    The backoff is 1 ms, so waiting the 0.4 s cap proves the header was parsed.
    """
    monkeypatch.setenv("HUTCH_HTTP_RETRY_AFTER_MAX", "0.4")
    url = server.serve("/a", DATA, faults=[Status(503, retry_after=retry_after)])
    start = time.monotonic()
    assert_exact(get(url, staging), staging, DATA)
    assert 0.35 <= time.monotonic() - start < 3


def test_server_ignoring_range_restarts_cleanly(server: FaultServer, staging: Path) -> None:
    """§Resume: a 200 answer to a range request truncates the file and resets the hashes."""
    url = server.serve("/a", DATA, faults=[Reset(at=MIB), IgnoreRange()])
    assert_exact(get(url, staging, pin=sha256(DATA)), staging, DATA)
    assert ranges(server, "/a") == [None, f"bytes={MIB}-"]


def test_file_changed_between_attempts_restarts(server: FaultServer, staging: Path) -> None:
    """§Resume: If-Range with the old ETag gets the whole new file: no splice."""
    url = server.serve("/a", DATA, faults=[Reset(at=MIB), Change(NEW)])
    assert_exact(get(url, staging), staging, NEW)
    assert ranges(server, "/a") == [None, f"bytes={MIB}-"]


def test_206_of_another_version_is_refused(server: FaultServer, staging: Path) -> None:
    """§Resume: a 206 whose ETag is not the one we hold is never appended."""
    url = server.serve("/a", DATA, faults=[Reset(at=MIB), (Change(NEW), IgnoreIfRange())])
    assert_exact(get(url, staging), staging, NEW)
    assert ranges(server, "/a") == [None, f"bytes={MIB}-", None]


def test_206_with_another_length_is_refused(server: FaultServer, staging: Path) -> None:
    """§Resume: Content-Range must carry the length of the file we started on."""
    longer = NEW + b"tail"
    url = server.serve(
        "/a", DATA, etag=False, faults=[Reset(at=MIB), (Change(longer), IgnoreIfRange())]
    )
    assert_exact(get(url, staging), staging, longer)
    assert ranges(server, "/a") == [None, f"bytes={MIB}-", None]
    assert server.requests_for("/a")[1].if_range is not None  # the strong Last-Modified


def test_416_after_the_file_shrank_restarts(server: FaultServer, staging: Path) -> None:
    """§Resume: 416 for a range past the (new) end restarts from byte 0."""
    short = NEW[:1000]
    url = server.serve("/a", DATA, faults=[Reset(at=MIB), (Change(short), IgnoreIfRange())])
    assert_exact(get(url, staging), staging, short)
    assert ranges(server, "/a") == [None, f"bytes={MIB}-", None]


def test_no_validator_means_no_range(server: FaultServer, staging: Path) -> None:
    """§Resume: without ETag or Last-Modified a retry downloads the whole file again."""
    url = server.serve("/a", DATA, etag=False, last_modified=False, faults=[Reset(at=MIB)])
    assert_exact(get(url, staging, pin=sha256(DATA)), staging, DATA)
    assert ranges(server, "/a") == [None, None]


def test_spliced_versions_under_one_etag_are_redownloaded(
    server: FaultServer, staging: Path
) -> None:
    """§Resume: a mismatch after a resume earns one whole download before it counts."""
    url = server.serve("/a", DATA, faults=[Reset(at=MIB), Change(NEW, same_validators=True)])
    assert_exact(get(url, staging, pin=sha256(NEW)), staging, NEW)
    assert ranges(server, "/a") == [None, f"bytes={MIB}-", None]


def test_html_page_without_a_pin_is_just_bytes(server: FaultServer, staging: Path) -> None:
    """§Interface: fetch is bytes-only; refusing a non-archive is the extractor's job."""
    url = server.serve("/a", DATA, faults=[Html()])
    assert_exact(get(url, staging), staging, HTML_ERROR_PAGE)


def test_file_url_streams_through_the_same_checks(tmp_path: Path, staging: Path) -> None:
    """§file://: read in chunks, hashed, pin checked; requests and rich never loaded."""
    source = tmp_path / "dir with space" / "a.tar.gz"
    source.parent.mkdir()
    source.write_bytes(DATA)
    assert_exact(get(source.as_uri(), staging, pin=sha256(DATA)), staging, DATA)


def test_falls_back_to_a_mirror(server: FaultServer, staging: Path) -> None:
    """§Mirrors: urls are tried in turn; the result names the one that served."""
    dead = f"http://127.0.0.1:{unused_port()}/a"
    missing = server.serve("/missing", DATA, faults=[Status(404)])
    good = server.serve("/good", DATA)
    got = get([dead, missing, good], staging, pin=sha256(DATA), retries=1)
    assert_exact(got, staging, DATA)
    assert got.url == good


def test_wrong_bytes_from_one_mirror_try_the_next(server: FaultServer, staging: Path) -> None:
    """§Mirrors: a digest mismatch moves on to the next url, without a retry."""
    bad = server.serve("/bad", DATA, faults=[Corrupt(at=5, times=FOREVER)])
    good = server.serve("/good", DATA)
    got = get([bad, good], staging, pin=sha256(DATA))
    assert_exact(got, staging, DATA)
    assert got.url == good
    assert len(server.requests_for("/bad")) == 1


# -- Permanent failures: the right error, no retry, nothing left behind -----------------------


@pytest.mark.parametrize("code", [400, 403, 404, 410])
def test_client_errors_are_not_retried(server: FaultServer, staging: Path, code: int) -> None:
    """§Retry table: other 4xx are permanent: one attempt, exit 4, the status in words."""
    url = server.serve("/a", DATA, faults=[Status(code, times=FOREVER)])
    with pytest.raises(FetchError) as info:
        get(url, staging)
    err = info.value
    assert err.exit_code == 4
    assert err.attempts == 1
    assert err.urls == [url]
    reason = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 410: "Gone"}[code]
    assert str(err) == f"could not fetch {url} (1 attempt): HTTP {code} {reason}"
    assert isinstance(err.__cause__, HttpStatus)
    assert len(server.requests_for("/a")) == 1
    assert os.listdir(staging) == []


def test_html_page_with_a_pin_is_a_digest_mismatch(server: FaultServer, staging: Path) -> None:
    """§Errors: an HTML error page served as 200 fails the pin: exit 3, expected and got."""
    url = server.serve("/a", DATA, faults=[Html(times=FOREVER)])
    pin = sha256(DATA)
    with pytest.raises(DigestMismatch) as info:
        get(url, staging, pin=pin)
    err = info.value
    assert err.exit_code == 3
    assert (err.what, err.algo, err.expected) == (url, "sha256", pin.hex)
    assert err.got == hashlib.sha256(HTML_ERROR_PAGE).hexdigest()
    assert f"expected sha256:{pin.hex}" in str(err)
    assert f"got      sha256:{err.got}" in str(err)
    assert len(server.requests_for("/a")) == 1
    assert os.listdir(staging) == []


def test_corrupt_bytes_are_a_digest_mismatch(server: FaultServer, staging: Path) -> None:
    """§Retry table: a digest mismatch is permanent for its url."""
    url = server.serve("/a", DATA, faults=[Corrupt(at=2 * MIB, times=FOREVER)])
    with pytest.raises(DigestMismatch):
        get(url, staging, pin=Pin("blake3", blake3_bytes(DATA)))
    assert len(server.requests_for("/a")) == 1
    assert os.listdir(staging) == []


def test_retries_run_out_naming_attempts_and_cause(server: FaultServer, staging: Path) -> None:
    """§Errors: retries per url, then a FetchError with the attempts and the errno."""
    url = server.serve("/a", DATA, faults=[Reset(at=MIB, times=FOREVER)])
    with pytest.raises(FetchError) as info:
        get(url, staging, retries=2)
    err = info.value
    assert err.attempts == 3
    assert str(err) == f"could not fetch {url} (3 attempts): connection reset by peer (ECONNRESET)"
    assert err.hint is not None
    assert "--retries" in err.hint
    assert isinstance(err.__cause__, TransferError)
    # Each retry resumed: the resets at one offset leave nothing new to fetch from 0.
    assert ranges(server, "/a") == [None, f"bytes={MIB}-", f"bytes={MIB}-"]
    assert os.listdir(staging) == []


def test_read_timeout_is_reported_in_seconds(server: FaultServer, staging: Path) -> None:
    """§Errors: a stall names the read timeout."""
    url = server.serve("/a", DATA, faults=[Stall(at=0, seconds=30, times=FOREVER)])
    with pytest.raises(FetchError) as info:
        get(url, staging, timeout=0.3, retries=1)
    assert str(info.value).endswith("(2 attempts): read timed out after 0.3 s")


def test_connection_refused_is_retried_then_reported(staging: Path) -> None:
    """§Retry table: connection refused is transient, and named with its errno."""
    url = f"http://127.0.0.1:{unused_port()}/a"
    with pytest.raises(FetchError) as info:
        get(url, staging, retries=2)
    assert (
        str(info.value) == f"could not fetch {url} (3 attempts): connection refused (ECONNREFUSED)"
    )
    assert info.value.exit_code == 4
    assert os.listdir(staging) == []


def test_every_failed_url_is_reported(server: FaultServer, staging: Path) -> None:
    """§Mirrors: when all fail, the message has one line per url with its attempts."""
    missing = server.serve("/missing", DATA, faults=[Status(404)])
    busy = server.serve("/busy", DATA, faults=[Status(503, times=FOREVER)])
    with pytest.raises(FetchError) as info:
        get([missing, busy], staging, retries=1)
    err = info.value
    assert err.urls == [missing, busy]
    assert err.attempts == 3
    assert str(err).splitlines() == [
        "could not fetch from any of 2 urls (3 attempts): HTTP 503 Service Unavailable",
        f"  {missing} (1 attempt): HTTP 404 Not Found",
        f"  {busy} (2 attempts): HTTP 503 Service Unavailable",
    ]


def test_mismatch_outranks_a_dead_mirror(server: FaultServer, staging: Path) -> None:
    """§Mirrors: wrong bytes anywhere make it exit 3, caused by the per-url summary."""
    bad = server.serve("/bad", DATA, faults=[Html(times=FOREVER)])
    missing = server.serve("/missing", DATA, faults=[Status(404)])
    with pytest.raises(DigestMismatch) as info:
        get([bad, missing], staging, pin=sha256(DATA))
    assert info.value.what == bad
    summary = info.value.__cause__
    assert isinstance(summary, FetchError)
    assert f"{bad} (1 attempt): digest mismatch" in str(summary)
    assert f"{missing} (1 attempt): HTTP 404 Not Found" in str(summary)
    assert os.listdir(staging) == []


def test_tls_certificate_error_is_not_retried(tls: ssl.SSLContext, staging: Path) -> None:
    """§Retry table: an untrusted certificate is permanent: one attempt."""
    with FaultServer(tls=tls) as srv:
        url = srv.serve("/a", DATA)
        with pytest.raises(FetchError) as info:
            get(url, staging, retries=3)
    err = info.value
    assert err.attempts == 1
    assert "TLS certificate verification failed" in str(err)
    assert err.hint is not None
    assert "REQUESTS_CA_BUNDLE" in err.hint
    assert os.listdir(staging) == []


def test_missing_local_file_chains_the_oserror(tmp_path: Path, staging: Path) -> None:
    """§file://: ENOENT is a FetchError caused by the OSError, with its errno and path."""
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(FetchError) as info:
        get(missing.as_uri(), staging)
    err = info.value
    assert err.attempts == 1
    assert str(err).endswith(f"No such file or directory (ENOENT): {missing}")
    cause = err.__cause__
    assert isinstance(cause, FileNotFoundError)
    assert cause.filename == str(missing)
    assert os.listdir(staging) == []


def test_directory_as_local_file(tmp_path: Path, staging: Path) -> None:
    """§file://: EISDIR is permanent too."""
    with pytest.raises(FetchError) as info:
        get(tmp_path.as_uri(), staging)
    assert isinstance(info.value.__cause__, IsADirectoryError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files")
def test_unreadable_local_file(tmp_path: Path, staging: Path) -> None:
    """§file://: EACCES is a FetchError caused by the PermissionError."""
    source = tmp_path / "a.tar.gz"
    source.write_bytes(b"x")
    source.chmod(0)
    with pytest.raises(FetchError) as info:
        get(source.as_uri(), staging)
    assert isinstance(info.value.__cause__, PermissionError)
    assert "(EACCES)" in str(info.value)


def test_unsupported_scheme(staging: Path) -> None:
    """§Interface: only http(s):// and file://."""
    with pytest.raises(FetchError, match="unsupported url scheme 'ftp'"):
        get("ftp://example.org/a.tar.gz", staging)


def test_unwritable_destination_is_a_store_error(server: FaultServer, tmp_path: Path) -> None:
    """§Errors: our own disk failing is a StoreError (exit 6), never retried or mirrored."""
    url = server.serve("/a", DATA)
    with pytest.raises(StoreError) as info:
        fetch([url], tmp_path / "no-such-dir" / "archive")
    assert info.value.errno == errno.ENOENT
    assert server.requests == []


# -- The classification function, on real exceptions ---------------------------------------


def raw_requests_failure(url: str, *, timeout: float = 2.0) -> requests.RequestException:
    """What requests itself raises, unwrapped by hutch: requests -> urllib3 -> OSError."""
    with (
        pytest.raises(requests.RequestException) as info,
        requests.Session() as s,
        s.get(url, stream=True, timeout=timeout) as r,
    ):
        for _ in r.iter_content(64 * 1024):
            pass
    return info.value


def test_classify_sees_through_requests_wrappers(server: FaultServer) -> None:
    """§Retry: the errno three wrappers down decides, as raised by requests itself."""
    reset = raw_requests_failure(server.serve("/r", DATA, faults=[Reset(at=1000)]))
    assert isinstance(reset, requests.exceptions.ChunkedEncodingError)
    assert classify(reset).transient
    assert classify(reset).reason == "connection reset by peer (ECONNRESET)"

    refused = raw_requests_failure(f"http://127.0.0.1:{unused_port()}/")
    assert isinstance(refused, requests.ConnectionError)
    assert classify(refused).reason == "connection refused (ECONNREFUSED)"

    short = raw_requests_failure(server.serve("/t", DATA, faults=[Truncate(at=1000)]))
    assert classify(short).transient

    stall = raw_requests_failure(
        server.serve("/s", DATA, faults=[Stall(at=10, seconds=30)]), timeout=0.2
    )
    assert classify(stall).transient


def test_classify_through_the_hutch_seam(server: FaultServer) -> None:
    """§HTTP: fetch/http.py wraps every error in TransferError, chained, still classified."""
    url = server.serve("/s", DATA, faults=[Stall(at=10, seconds=30)])
    with (
        pytest.raises(TransferError) as info,
        http.get(url, {}, timeout=0.25) as resp,
    ):
        for _ in resp.chunks(MIB):
            pass
    assert info.value.stage == "body"
    assert classify(info.value) == classify(info.value)  # pure
    assert classify(info.value).reason == "read timed out after 0.25 s"


def test_classify_tls_is_permanent(tls: ssl.SSLContext) -> None:
    """§Retry table: certificate errors are permanent wherever they sit in the chain."""
    with FaultServer(tls=tls) as srv:
        err = raw_requests_failure(srv.serve("/a", DATA))
    verdict = classify(err)
    assert not verdict.transient
    assert verdict.reason.startswith("TLS certificate verification failed")


def unpack_after_reset() -> None:
    try:
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    except ConnectionResetError as exc:
        raise RuntimeError("failed to unpack member") from exc


def test_classify_tls_version_mismatch_is_permanent(server: FaultServer) -> None:
    """§Retry table: https:// to a plain-http port is a TLS error no retry will fix."""
    url = server.serve("/a", DATA).replace("http://", "https://")
    verdict = classify(raw_requests_failure(url))
    assert not verdict.transient
    assert verdict.reason.startswith("TLS error")


def test_classify_buried_and_constructed_causes(tmp_path: Path) -> None:
    """§Retry table: causes under unrelated wrappers, DNS, statuses, local files, digests."""
    # The uv failure (astral-sh/uv#14171): a reset under an extraction error.
    with pytest.raises(RuntimeError) as info:
        unpack_after_reset()
    assert classify(info.value) == classify(ConnectionResetError(errno.ECONNRESET, "x"))
    assert classify(info.value).transient
    # Built, not raised inside an except (an error handed over from a worker thread, as
    # requests and urllib3 do): the cause is only in args, or in MaxRetryError's reason.
    handed_over = OSError("Connection aborted.", ConnectionAbortedError(errno.ECONNABORTED, "x"))
    assert classify(handed_over).reason == "software caused connection abort (ECONNABORTED)"
    via_reason = OSError("Max retries exceeded")
    via_reason.reason = TimeoutError("timed out")  # type: ignore[attr-defined]
    assert classify(via_reason).transient

    # Loopback-only tests cannot make a resolver fail; these are the errors it raises.
    again = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    nohost = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    wrapped = OSError("Failed to resolve 'example.invalid'")
    wrapped.__cause__ = again
    assert classify(wrapped).transient
    assert classify(wrapped).reason == "temporary DNS failure (EAI_AGAIN)"
    assert not classify(nohost).transient

    assert classify(HttpStatus(503, "Service Unavailable", retry_after=7.0)).retry_after == 7.0
    assert not classify(HttpStatus(501, "Not Implemented")).transient
    assert classify(OSError("wrapper", ssl.SSLEOFError(8, "EOF occurred"))).transient
    assert classify(ShortBody(10, 20)).transient
    assert classify(BadRange("x")).transient

    with pytest.raises(FileNotFoundError) as missing:
        (tmp_path / "missing").read_bytes()
    assert not classify(missing.value).transient

    mismatch = DigestMismatch("u", algo="sha256", expected="a" * 64, got="b" * 64)
    assert not classify(mismatch).transient


# -- Pure pieces: resume decisions, backoff, Retry-After, options ----------------------------


def test_resume_plan_decisions() -> None:
    """§Resume: 206 accepted only if it fits exactly; 416 only when we hold it all."""
    held = Partial(size=100, validator='"v1"', total=300)
    ok = plan(held, 206, "", {"Content-Range": "bytes 100-299/300", "ETag": '"v1"'})
    assert (ok.start, ok.length, ok.total) == (100, 200, 300)
    for bad in ("bytes 99-299/300", "bytes 100-299/301", "bytes 100-200/300", "junk"):
        with pytest.raises(BadRange):
            plan(held, 206, "", {"Content-Range": bad})
    with pytest.raises(BadRange):
        plan(held, 206, "", {"Content-Range": "bytes 100-299/300", "ETag": '"v2"'})
    assert plan(held, 200, "", {"Content-Length": "300"}).start == 0
    done = Partial(size=300, validator='"v1"', total=300)
    assert plan(done, 416, "", {"Content-Range": "bytes */300"}).complete
    with pytest.raises(BadRange):
        plan(held, 416, "", {"Content-Range": "bytes */50"})


def test_validators() -> None:
    """§Resume: strong ETag, else a Last-Modified at least a second older than Date."""
    assert validator({"ETag": '"abc"'}) == '"abc"'
    assert validator({"ETag": 'W/"abc"'}) is None
    old = "Mon, 01 Jan 2024 00:00:00 GMT"
    assert validator({"Last-Modified": old, "Date": "Mon, 01 Jan 2024 00:00:05 GMT"}) == old
    assert validator({"Last-Modified": old, "Date": old}) is None
    assert validator({"Last-Modified": old}) is None


def test_backoff_and_retry_after() -> None:
    """§Backoff: exponential with jitter, bounded; Retry-After seconds or date, capped."""
    policy = RetryPolicy(attempts=6, backoff=0.5, retry_after_max=60)
    for attempt in range(1, 12):
        ceiling = min(0.5 * 2 ** (attempt - 1), 60)
        assert ceiling / 2 <= policy.delay(attempt) <= ceiling
    assert policy.delay(1, retry_after=3600) == 60
    assert policy.delay(3, retry_after=2) == 2
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == 30
    assert parse_retry_after("120") == 120
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_options_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """§Environment: flags win over HUTCH_HTTP_TIMEOUT/RETRIES, which win over defaults."""
    monkeypatch.delenv("HUTCH_HTTP_TIMEOUT", raising=False)
    monkeypatch.delenv("HUTCH_HTTP_RETRIES", raising=False)
    assert FetchOptions.from_env(None, None, False) == FetchOptions()
    monkeypatch.setenv("HUTCH_HTTP_TIMEOUT", "2.5")
    monkeypatch.setenv("HUTCH_HTTP_RETRIES", "9")
    assert FetchOptions.from_env(None, None, True) == FetchOptions(2.5, 9, True)
    assert FetchOptions.from_env(1.0, 0, False) == FetchOptions(1.0, 0, False)
    monkeypatch.setenv("HUTCH_HTTP_RETRIES", "many")
    with pytest.raises(UsageError, match="HUTCH_HTTP_RETRIES") as info:
        FetchOptions.from_env(None, None, False)
    assert info.value.exit_code == 2
    with pytest.raises(UsageError):
        FetchOptions.from_env(0, 1, False)


def test_bad_backoff_env_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, server: FaultServer, staging: Path
) -> None:
    """§Environment: HUTCH_HTTP_BACKOFF must be seconds >= 0."""
    monkeypatch.setenv("HUTCH_HTTP_BACKOFF", "-1")
    with pytest.raises(UsageError, match="HUTCH_HTTP_BACKOFF"):
        get(server.serve("/a", DATA), staging)


# -- Progress and imports --------------------------------------------------------------------


def test_progress_only_when_asked(
    server: FaultServer, staging: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """§Progress: a bar on stderr when progress is on; nothing on either stream otherwise."""
    url = server.serve("/a.tar.gz", DATA)
    fetch([url], staging / "archive")
    assert capfd.readouterr() == ("", "")
    fetch([url], staging / "archive", options=FetchOptions(progress=True))
    out, err = capfd.readouterr()
    assert out == ""
    assert "a.tar.gz" in err
    assert "3.1 MB" in err


def test_imports_stay_lazy(tmp_path: Path) -> None:
    """§Imports: importing hutch.fetch or fetching file:// loads neither requests nor rich."""
    source = tmp_path / "a"
    source.write_bytes(b"abc")
    code = (
        "import sys, hutch.fetch, hutch.fetch.download\n"
        "assert 'requests' not in sys.modules and 'rich' not in sys.modules\n"
        "from pathlib import Path\n"
        f"hutch.fetch.fetch([{source.as_uri()!r}], Path({str(tmp_path / 'out')!r}))\n"
        "assert 'requests' not in sys.modules and 'rich' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- TLS fixture -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate no CA bundle trusts."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
