"""The manifest: what an artifact's tree is, in canonical bytes (spec/store.md §4)."""

from __future__ import annotations

import json
from typing import Literal

from hutch.store.digest import Blake3Hex, blake3_bytes
from pydantic import BaseModel, ConfigDict, Field

FORMAT = 1


class Source(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    urls: list[str]
    size: int
    digests: dict[str, str]  # algo -> hex; always blake3 and sha256

    @property
    def artifact_id(self) -> Blake3Hex:
        return Blake3Hex(self.digests["blake3"])


class Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    path: str
    type: Literal["file", "dir", "symlink"]
    size: int | None = None
    exec_: bool | None = Field(default=None, alias="exec")
    digest: str | None = None
    target: str | None = None

    @property
    def object_key(self) -> str:
        """The object this file entry is stored as: its blake3, plus ``.x`` if executable."""
        assert self.digest is not None
        return object_key(self.digest, executable=bool(self.exec_))


def object_key(digest: str, *, executable: bool) -> str:
    return f"{digest}.x" if executable else digest


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT
    source: Source
    entries: list[Entry]

    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.type == "file"]

    def canonical_bytes(self) -> bytes:
        data = self.model_dump(by_alias=True, exclude_none=True)
        data["entries"].sort(key=lambda e: e["path"].encode("utf-8", "surrogateescape"))
        data["source"]["urls"] = sorted(set(data["source"]["urls"]))
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        )

    @property
    def id(self) -> Blake3Hex:
        return blake3_bytes(self.canonical_bytes())

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        return cls.model_validate_json(raw)
