"""The values and their two decoders: committed bytes (hash-checked) and foreign bytes
(validated strictly). spec/store.md §4 (manifest), §5 (journal records), §9 (rebuild)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import Hutch, tamper
from hutch.store.digest import blake3_bytes
from hutch.store.errors import StoreError
from hutch.store.journal import ArtifactRecord, LogRecord
from hutch.store.manifest import Entry, Manifest, Source
from hutch.store.schema import InvalidDocument, validate
from hypothesis import given
from hypothesis import strategies as st

_D = "ab" * 32


def _manifest(*entries: Entry) -> Manifest:
    return Manifest(
        Source(("https://example.org/a.tar.gz",), 10, {"blake3": _D, "sha256": _D}), entries
    )


_TREE = (
    Entry("pkg", "dir"),
    Entry("pkg/a.py", "file", size=3, exec=False, digest=_D),
    Entry("pkg/run", "file", size=0, exec=True, digest="cd" * 32),
    Entry("pkg/link", "symlink", target="a.py"),
)


def test_canonical_bytes_are_the_documented_format() -> None:
    """store.md §4: keys sorted, no whitespace, entries by bytewise path, only each type's keys.

    The exact bytes matter: they name the manifest, and stores made by earlier
    hutch versions must keep their ids.
    """
    raw = _manifest(*reversed(_TREE)).canonical_bytes()
    expected = (
        '{"entries":[{"path":"pkg","type":"dir"},'
        f'{{"digest":"{_D}","exec":false,"path":"pkg/a.py","size":3,"type":"file"}},'
        '{"path":"pkg/link","target":"a.py","type":"symlink"},'
        f'{{"digest":"{"cd" * 32}","exec":true,"path":"pkg/run","size":0,"type":"file"}}],'
        '"format":1,'
        f'"source":{{"digests":{{"blake3":"{_D}","sha256":"{_D}"}},"size":10,'
        '"urls":["https://example.org/a.tar.gz"]}}'
    ).encode()
    assert raw == expected
    assert _manifest(*_TREE).id == blake3_bytes(expected)


def test_load_checks_the_bytes_against_the_manifest_id() -> None:
    """store.md §4: committed bytes are trusted only when they hash to their id."""
    raw = _manifest(*_TREE).canonical_bytes()
    assert Manifest.load(raw, blake3_bytes(raw), where="x") == Manifest.parse(raw, where="x")
    tampered = raw.replace(b'"size":3', b'"size":4')
    with pytest.raises(StoreError, match="do not hash to their id") as info:
        Manifest.load(tampered, blake3_bytes(raw), where="the journal")
    assert info.value.exit_code == 6
    assert "doctor" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda d: d["entries"][1].update(size="3"),
            "entries.1.size: Input should be a valid integer",
        ),
        (
            lambda d: d["entries"][0].update(mode=0o755),
            "entries.0.mode: Extra inputs are not permitted",
        ),
        (lambda d: d["entries"][0].update(type="fifo"), "entries.0.type: Input should be"),
        (lambda d: d.pop("source"), "source: Field required"),
    ],
)
def test_parse_refuses_what_the_schema_does_not_allow(mutate: object, problem: str) -> None:
    """store.md §9: foreign bytes are validated strictly (types, unknown keys, literals)."""
    data = json.loads(_manifest(*_TREE).canonical_bytes())
    mutate(data)  # type: ignore[operator]
    with pytest.raises(InvalidDocument) as info:
        Manifest.parse(json.dumps(data).encode(), where="m.json")
    assert any(problem in p for p in info.value.problems), info.value.problems


def test_problems_lists_every_tree_problem_at_once() -> None:
    """store.md §9: a manifest that would install outside DEST is refused, every issue named."""
    bad = _manifest(
        Entry("pkg", "dir"),
        Entry("../evil", "file", size=1, exec=False, digest=_D),
        Entry("pkg/x", "file", size=1, exec=None, digest="nothex"),
        Entry("pkg/up", "symlink", target="../../etc"),
        Entry("orphan/f", "file", size=1, exec=False, digest=_D),
        Entry("pkg", "dir"),
    )
    text = "\n".join(bad.problems())
    for expected in (
        "'../evil': unsafe path: '..' component",
        "'pkg/x': a file needs exec",
        "'pkg/x': a file needs a blake3 hex digest",
        "'pkg/up': symlink target '../../etc' leaves the tree",
        "'orphan/f': its parent 'orphan' is not a directory entry",
        "'pkg': listed twice",
    ):
        assert expected in text
    assert _manifest(*_TREE).problems() == []


def test_parse_refuses_a_tree_that_leaves_dest() -> None:
    """store.md §9: schema-valid bytes are still refused when the tree is unsafe (exit 6)."""
    raw = _manifest(
        Entry("pkg", "dir"), Entry("pkg/up", "symlink", target="../..")
    ).canonical_bytes()
    with pytest.raises(InvalidDocument, match="leaves the tree") as info:
        Manifest.parse(raw, where="m.json")
    assert info.value.exit_code == 6


_names = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="/\\:"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))


@given(
    st.lists(_names, min_size=1, max_size=8, unique=True), st.integers(0, 1 << 40), st.booleans()
)
def test_canonical_round_trip(names: list[str], size: int, executable: bool) -> None:
    """store.md §4: load(canonical) is the same manifest, and strict parse agrees with load."""
    entries = [Entry(n, "file", size=size, exec=executable, digest=_D) for n in names]
    m = _manifest(*entries)
    raw = m.canonical_bytes()
    loaded = Manifest.load(raw, blake3_bytes(raw), where="x")
    assert sorted(loaded.entries, key=lambda e: e.path.encode("utf-8", "surrogateescape")) == list(
        loaded.entries
    )
    assert set(loaded.entries) == set(m.entries)
    assert loaded.canonical_bytes() == raw
    assert Manifest.parse(raw, where="x") == loaded


def test_records_round_trip_and_validate_strictly() -> None:
    """store.md §5: records are JSON by field name; the strict schema is the same classes."""
    record = ArtifactRecord("a" * 64, "b" * 64, ["u"], {"blake3": "a" * 64}, 1, 2, 3, 4.5, 6, ["n"])
    raw = record.to_json()
    assert ArtifactRecord.from_json(raw) == record
    assert validate(ArtifactRecord, raw, what="r") == record
    log = LogRecord.now("add", "committed", artifact="a" * 64)
    assert LogRecord.from_json(log.to_json()) == log
    with pytest.raises(InvalidDocument, match="files"):
        validate(ArtifactRecord, raw.replace(b'"files":2', b'"files":"2"'), what="r")
    with pytest.raises(StoreError, match="damaged artifact record"):
        ArtifactRecord.from_json(raw.replace(b'"files"', b'"filez"'))


def test_a_damaged_manifest_in_the_journal_is_an_error_not_a_wrong_tree(
    hutch: Hutch, sdist: Path, tmp_path: Path
) -> None:
    """store.md §4-5: install refuses manifest bytes that no longer match their id (exit 6)."""
    aid = hutch.ok("add", sdist).strip()
    mid = json.loads(hutch.ok("show", aid, "--json"))["artifact"]["manifest"]
    tamper(hutch.store, "manifests", mid, lambda m: m["entries"].pop())
    result = hutch("install", aid, tmp_path / "dest")
    assert result.returncode == 6, result.stderr
    assert "do not hash to their id" in result.stderr
    assert not (tmp_path / "dest").exists()


def test_rebuild_refuses_a_foreign_manifest_that_escapes(
    hutch: Hutch, sdist: Path, tmp_path: Path
) -> None:
    """store.md §9: a manifest file named by its own hash is still validated before use."""
    hutch.ok("add", sdist)
    evil = _manifest(Entry("../../outside", "file", size=1, exec=False, digest=_D))
    raw = evil.canonical_bytes()
    path = hutch.store / "manifests" / f"{blake3_bytes(raw)}.json"
    path.write_bytes(raw)
    for name in ("data.mdb", "lock.mdb"):
        os.unlink(hutch.store / "journal" / name)
    listed = json.loads(hutch.ok("ls", "--json"))  # opening the store rebuilds its journal
    assert len(listed) == 1  # the real artifact, and not the planted one
    assert listed[0]["id"] != _D
    log = json.loads(hutch.ok("log", "--json", "--op", "rebuild"))
    assert "ignored 1 invalid file(s)" in log[-1]["detail"]


def test_entries_are_immutable_values() -> None:
    e = _TREE[1]
    assert e._replace(path="x").path == "x"
    assert e == Entry("pkg/a.py", "file", 3, False, _D)
    with pytest.raises(AttributeError):
        e.path = "y"  # type: ignore[misc]


def test_doctor_audits_records_strictly_and_rebuild_repairs_them(hutch: Hutch, sdist: Path) -> None:
    """inspect.md §9 `records`: a record of the wrong type is found; --rebuild replaces it."""
    aid = hutch.ok("add", sdist).strip()
    assert "artifact record(s) and manifests are valid" in hutch.ok("doctor")
    files = json.loads(hutch.ok("ls", "--json"))[0]["files"]
    # Decodes by name, but is not what hutch writes: a str where an int belongs.
    tamper(hutch.store, "artifacts", aid, lambda r: r.update(files=str(r["files"])))
    result = hutch("doctor", "--json")
    assert result.returncode == 6, result.stderr
    check = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "records")
    assert check["status"] == "error"
    assert any("files: Input should be a valid integer" in d for d in check["details"])
    hutch.ok("doctor", "--rebuild")
    assert hutch("doctor").returncode == 0
    listed = json.loads(hutch.ok("ls", "--json"))
    assert [r["files"] for r in listed] == [files]


@pytest.mark.parametrize("hint", [0, 5, 10, 11, 20, 1 << 21])
def test_hash_fd_reads_to_the_end_whatever_the_size_hint(tmp_path: Path, hint: int) -> None:
    """store.md §10: the hash is of what the file holds, not of what fstat said."""
    from hutch.store.digest import hash_fd

    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert hash_fd(fd, size_hint=hint) == (blake3_bytes(b"0123456789"), 10)
    finally:
        os.close(fd)
