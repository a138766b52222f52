"""Archive format detection by magic bytes; file names and Content-Type lie."""

from __future__ import annotations

from typing import Literal

Compression = Literal["none", "gzip", "bzip2", "xz", "zstd"]
Format = Literal["tar", "zip"]

BLOCK = 512

_COMPRESSORS: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    # pzstd starts its output with a skippable frame (magic 0x184D2A5?).
    *((bytes([0x50 + i, 0x2A, 0x4D, 0x18]), "zstd") for i in range(16)),
)

# A local file header, or the end-of-central-directory record of an empty zip.
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")


def compression(head: bytes) -> Compression | None:
    for magic, name in _COMPRESSORS:
        if head.startswith(magic):
            return name
    return None


def is_zip(head: bytes) -> bool:
    return head.startswith(_ZIP)


def is_tar(head: bytes) -> bool:
    """Whether the first block is a tar header (ustar, GNU or v7) or an end block.

    v7 headers have no magic, so the header checksum decides, computed the way
    GNU tar does (unsigned, and signed for old Sun tars).
    """
    if len(head) < BLOCK:
        return False
    block = head[:BLOCK]
    if block == bytes(BLOCK):
        return True  # an empty archive is just the end-of-archive marker
    if block[257:262] == b"ustar":
        return True
    field = block[148:156].split(b"\0", 1)[0].strip(b" ")
    try:
        stored = int(field, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b >= 0x80)
    return stored in (unsigned, signed)


def describe(head: bytes) -> str:
    """What a non-archive looks like, as a noun phrase for the refusal message."""
    text = head[:256].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "an HTML/XML page (a login or error page served instead?)"
    if text.startswith((b"{", b"[")):
        return "JSON"
    if not head:
        return "an empty file"
    if not head.strip(b"\0"):
        return "only zero bytes"
    return f"data starting with {head[:8].hex(' ')}"
