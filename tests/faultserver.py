"""A real HTTP server on 127.0.0.1 that misbehaves on purpose (spec/fetch.md §Tests).

    with FaultServer() as srv:
        url = srv.serve("/a.tar.gz", data, faults=[Reset(at=4096), Status(503, times=2)])
        ...
        assert srv.requests_for("/a.tar.gz")[1].range == "bytes=4096-"

Each path serves its bytes like a well-behaved static file server (HTTP/1.1,
keep-alive, strong ETag, Last-Modified, Range with If-Range, 416) until told
otherwise. ``faults`` is a queue consumed one entry per request to that path;
an entry is one fault or a tuple of faults applied together, and a fault with
``times=N`` stays at the head of the queue for N requests (``FOREVER`` never
leaves). Once the queue is empty the path is served cleanly.

Every request is recorded (method, path, headers) before any fault applies, so
tests can assert what the client asked for, including resumed ranges.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import hashlib
import http.server
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Literal, Self

FOREVER = -1

HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Service unavailable</title></head>\n"
    b"<body><h1>Sorry</h1><p>The download service is down for maintenance.</p></body></html>\n"
)


@dataclass(frozen=True)
class Fault:
    times: int = field(default=1, kw_only=True)  # requests this fault applies to; FOREVER


@dataclass(frozen=True)
class Reset(Fault):
    """Send the file up to offset ``at``, then abort with a real TCP RST (SO_LINGER 0, close)."""

    at: int


@dataclass(frozen=True)
class Truncate(Fault):
    """Announce the full Content-Length, send up to offset ``at``, then close cleanly (FIN)."""

    at: int


@dataclass(frozen=True)
class Stall(Fault):
    """Send the file up to offset ``at``, then go silent for ``seconds`` before closing."""

    at: int
    seconds: float


@dataclass(frozen=True)
class Status(Fault):
    """Answer ``code`` with an optional Retry-After (seconds or an HTTP-date) and no body."""

    code: int
    retry_after: str | None = None


@dataclass(frozen=True)
class IgnoreRange(Fault):
    """Answer a range request with 200 and the whole body, like servers without Range support."""


@dataclass(frozen=True)
class IgnoreIfRange(Fault):
    """Honour Range but not If-Range: a 206 of the *current* content whatever the validator."""


@dataclass(frozen=True)
class Change(Fault):
    """From this request on the path serves ``data``, with a new ETag and Last-Modified.

    ``same_validators`` keeps the old ones, like a server that derives its ETag from
    something other than the content: a client that trusts If-Range then splices.
    """

    data: bytes
    same_validators: bool = False


@dataclass(frozen=True)
class Corrupt(Fault):
    """Flip the bits of the body byte at offset ``at`` in this response."""

    at: int


@dataclass(frozen=True)
class Html(Fault):
    """A 200 text/html error page instead of the file, like a captive portal or a CDN."""


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # header names lowercased
    client_port: int  # the same port on two requests means one pooled connection

    @property
    def range(self) -> str | None:
        return self.headers.get("range")

    @property
    def if_range(self) -> str | None:
        return self.headers.get("if-range")


@dataclass
class _Resource:
    data: bytes
    queue: list[tuple[Fault, ...]]
    etag: str | None
    last_modified: str | None
    content_type: str
    version: int = 0

    def change(self, data: bytes, *, same_validators: bool) -> None:
        self.data = data
        self.version += 1
        if same_validators:
            return
        if self.etag is not None:
            self.etag = _etag(data, self.version)
        if self.last_modified is not None:
            self.last_modified = email.utils.formatdate(time.time() + self.version, usegmt=True)


def _etag(data: bytes, version: int) -> str:
    return f'"{hashlib.sha256(data).hexdigest()[:16]}-{version}"'


class FaultServer:
    """A ThreadingHTTPServer on an ephemeral loopback port, in a daemon thread."""

    def __init__(self, *, chunk: int = 64 * 1024, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: a server-side context, to serve https:// with its certificate."""
        self.chunk = chunk
        self._lock = threading.Lock()
        self._resources: dict[str, _Resource] = {}
        self._log: list[Recorded] = []
        # Stalls wait on this, so closing the server never waits out a stall.
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.scheme = "http"
        if tls is not None:
            try:
                self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
            except BaseException:
                self._httpd.server_close()
                raise
            self.scheme = "https"
        # A short poll keeps close() (which waits for the loop to notice) quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def serve(
        self,
        path: str,
        data: bytes,
        *,
        faults: Sequence[Fault | tuple[Fault, ...]] = (),
        etag: bool = True,
        last_modified: bool = True,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Serve ``data`` at ``path`` (replacing what was there); return its url."""
        queue = [f if isinstance(f, tuple) else (f,) for f in faults]
        resource = _Resource(
            data,
            queue,
            _etag(data, 0) if etag else None,
            email.utils.formatdate(time.time() - 3600, usegmt=True) if last_modified else None,
            content_type,
        )
        with self._lock:
            self._resources[path] = resource
        return self.url(path)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._log)

    def requests_for(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop serving and end every handler thread before returning.

        A handler may be blocked on a client that neither reads nor hangs up
        (a keep-alive connection left in a pool): its socket is shut down,
        which wakes it. Tests that fork in-process need no thread left behind
        (parallel.forked falls back to threads while one lives).
        """
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.drop_connections()
        self._httpd.server_close()  # joins the handler threads (block_on_close)
        self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _next(self, request: Recorded) -> tuple[_Resource, tuple[Fault, ...]] | None:
        """Record the request; the resource as it now stands, and this request's faults."""
        with self._lock:
            self._log.append(request)
            path = request.path
            resource = self._resources.get(path)
            if resource is None:
                return None
            if not resource.queue:
                return replace(resource, queue=[]), ()
            head = resource.queue[0]
            left = FOREVER if any(f.times == FOREVER for f in head) else max(f.times for f in head)
            if left != FOREVER and left <= 1:
                resource.queue.pop(0)
            elif left != FOREVER:
                resource.queue[0] = tuple(replace(f, times=left - 1) for f in head)
            for fault in head:
                if isinstance(fault, Change):
                    resource.change(fault.data, same_validators=fault.same_validators)
            # A snapshot: the handler must not see a Change made by a concurrent request.
            return replace(resource, queue=[]), head


class _Server(http.server.ThreadingHTTPServer):
    # Handler threads are joined by server_close(), once drop_connections() woke them.
    daemon_threads = False
    block_on_close = True
    owner: FaultServer

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self._live: set[socket.socket] = set()
        self._live_lock = threading.Lock()

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self._live_lock:
            self._live.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._live_lock:
            self._live.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._live_lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up mid-body are the point of this server; stay quiet.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        owner = self.server.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        port = int(self.client_address[1])
        found = owner._next(Recorded(self.command, self.path, headers, port))
        if found is None:
            self._status(404)
            return
        resource, faults = found
        for fault in faults:
            if isinstance(fault, Status):
                self._status(fault.code, retry_after=fault.retry_after)
                return
            if isinstance(fault, Html):
                self._send(200, HTML_ERROR_PAGE, {"Content-Type": "text/html; charset=utf-8"})
                return

        data = resource.data
        for fault in faults:
            if isinstance(fault, Corrupt) and fault.at < len(data):
                data = data[: fault.at] + bytes([data[fault.at] ^ 0xFF]) + data[fault.at + 1 :]

        extra = {"Content-Type": resource.content_type, "Accept-Ranges": "bytes"}
        if resource.etag is not None:
            extra["ETag"] = resource.etag
        if resource.last_modified is not None:
            extra["Last-Modified"] = resource.last_modified

        status, start, end = 200, 0, len(data)
        wanted = _parse_range(headers.get("range"), len(data))
        honour = not any(isinstance(f, IgnoreRange) for f in faults)
        if_range = headers.get("if-range")
        fresh = (
            if_range is None
            or any(isinstance(f, IgnoreIfRange) for f in faults)
            or if_range in (resource.etag, resource.last_modified)
        )
        if wanted is not None and honour and fresh:
            if isinstance(wanted, str):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            start, end = wanted
            status = 206
            extra["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        payload = data[start:end] if body else b""
        self._send(status, payload, extra, faults=faults, start=start, head=not body)

    def _status(self, code: int, *, retry_after: str | None = None) -> None:
        extra = {"Content-Type": "text/plain"}
        if retry_after is not None:
            extra["Retry-After"] = retry_after
        text = f"{code} {self.responses.get(code, ('',))[0]}\n".encode()
        self._send(code, text, extra)

    def _send(
        self,
        status: int,
        payload: bytes,
        extra: dict[str, str],
        *,
        faults: Sequence[Fault] = (),
        start: int = 0,
        head: bool = False,
    ) -> None:
        """Send an answer; ``start`` is the file offset of the payload's first byte."""
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if head:
            return
        cut = next((f for f in faults if isinstance(f, Reset | Truncate | Stall)), None)
        limit = len(payload)
        if isinstance(cut, Reset | Truncate | Stall):
            limit = max(0, min(cut.at - start, limit))
        try:
            view = memoryview(payload)
            for offset in range(0, limit, self.server.owner.chunk):
                self.wfile.write(view[offset : min(offset + self.server.owner.chunk, limit)])
            if isinstance(cut, Stall):
                self.server.owner._closing.wait(cut.seconds)
                self.close_connection = True
            elif isinstance(cut, Reset):
                self._reset()
            elif isinstance(cut, Truncate):
                self.close_connection = True
        except OSError:
            # The client gave up (it timed out, or reset its side): nothing left to send.
            self.close_connection = True

    def _reset(self) -> None:
        _drain(self.connection)
        # SO_LINGER {on, 0} makes close() discard the send queue and emit RST instead
        # of FIN (tcp(7), socket(7)): the client sees ECONNRESET, as on a real network.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


def _drain(sock: socket.socket, timeout: float = 2.0) -> None:
    """Wait until the peer's kernel has acknowledged everything sent (SIOCOUTQ reaches 0)."""
    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while time.monotonic() < deadline:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf)
        if int.from_bytes(buf, "little") == 0:
            return
        time.sleep(0.001)


def _parse_range(value: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """``bytes=N-`` or ``bytes=N-M`` as [start, end); "unsatisfiable"; None if absent/unknown."""
    if value is None or not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[len("bytes=") :].partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        return "unsatisfiable"
    return start, end
