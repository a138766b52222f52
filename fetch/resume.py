"""resume: continue a broken download without ever splicing two versions of a file.

Pure functions over status and headers (spec/fetch.md §Resume): which headers to
send for what we already hold, and what the answer lets us do with it.

- We resume only with a strong validator from the answer that gave us the bytes:
  its ETag, else its Last-Modified if that is strong (RFC 9110 §8.8.2.2). Without
  one there is no way to know the next answer is the same version, so we restart.
- A 206 is appended only if its Content-Range starts exactly where we stopped,
  and its total and validator agree with the first answer's.
- A 200 to a range request means "here is the whole (maybe new) file": restart
  from byte 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from hutch.fetch.retry import BadRange, HttpStatus, parse_retry_after


@dataclass
class Partial:
    """What the destination holds for one url: ``size`` bytes of version ``validator``."""

    size: int = 0
    validator: str | None = None  # an ETag or an HTTP-date, sent back as If-Range
    total: int | None = None  # the whole file's length, when the server said
    resumed: bool = False  # some bytes came from a range answer

    def forget(self) -> None:
        """Make the next request a plain GET; the bytes held are then replaced."""
        self.validator = None
        self.total = None
        self.resumed = False


@dataclass(frozen=True)
class Plan:
    """How to use one answer's body."""

    start: int  # where its first byte goes: 0 (restart) or the held size (append)
    length: int | None  # body bytes announced (Content-Length), if any
    total: int | None  # the whole file's length, if known
    validator: str | None
    complete: bool = False  # a 416 confirming we already hold every byte


def request_headers(partial: Partial) -> dict[str, str]:
    if partial.size == 0 or partial.validator is None:
        return {}
    return {"Range": f"bytes={partial.size}-", "If-Range": partial.validator}


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED = re.compile(r"bytes \*/(\d+)")


def plan(partial: Partial, status: int, reason: str, headers: Mapping[str, str]) -> Plan:
    """Interpret an answer to the request ``request_headers(partial)`` built.

    ``headers`` must look names up case-insensitively. Raises HttpStatus for an
    answer without a usable body and BadRange for a range answer that does not fit.
    """
    length = _int(headers.get("Content-Length"))
    if status == 200:
        return Plan(0, length, length, validator(headers))
    asked = request_headers(partial)
    if status == 206 and asked:
        match = _CONTENT_RANGE.fullmatch((headers.get("Content-Range") or "").strip())
        if match is None:
            raise BadRange(f"206 with an unusable Content-Range {headers.get('Content-Range')!r}")
        first, last, total_text = match.groups()
        total = None if total_text == "*" else int(total_text)
        if int(first) != partial.size:
            raise BadRange(f"asked for bytes from {partial.size}, got {first}-{last}")
        if partial.total is not None and total != partial.total:
            raise BadRange(f"the file's length changed from {partial.total} to {total}")
        if total is not None and int(last) != total - 1:
            raise BadRange(f"206 stops at byte {last} of {total}")
        now = validator(headers)
        if now is not None and now != partial.validator:
            raise BadRange(f"206 of another version: {now} instead of {partial.validator}")
        return Plan(partial.size, int(last) - int(first) + 1, total, partial.validator)
    if status == 416 and asked:
        match = _UNSATISFIED.fullmatch((headers.get("Content-Range") or "").strip())
        if match is not None and int(match.group(1)) == partial.size == partial.total:
            return Plan(partial.size, 0, partial.total, partial.validator, complete=True)
        raise BadRange(f"416 Range Not Satisfiable for bytes={partial.size}-")
    raise HttpStatus(status, reason, retry_after=parse_retry_after(headers.get("Retry-After")))


def validator(headers: Mapping[str, str]) -> str | None:
    """The strong validator of an answer, usable in If-Range; None if it has none."""
    etag = (headers.get("ETag") or "").strip()
    if etag.startswith('"'):
        return etag
    if etag:  # W/"..." (weak) must not be sent in If-Range (RFC 9110 §13.1.5)
        return None
    modified = headers.get("Last-Modified")
    date = headers.get("Date")
    if modified is None or date is None:
        return None
    try:
        gap = parsedate_to_datetime(date) - parsedate_to_datetime(modified)
    except (TypeError, ValueError):
        return None
    # A Last-Modified is strong only if the file was at least a second old when served:
    # within the same second, two versions share one date.
    return modified if gap.total_seconds() >= 1 else None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None
