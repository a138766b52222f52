"""The one seam to pydantic: strict validation of documents that come from outside.

hutch's values (Manifest, ArtifactRecord, LogRecord) are plain dataclasses;
pydantic validates bytes against them where bytes enter from outside the
commit path: manifest files a journal rebuild picks up, and the records
`hutch doctor` audits. Strict mode, unknown keys refused (each class's
``__pydantic_config__``). Imported only by those paths: pydantic's import
costs more than a whole warm install (issue 7).
"""

from __future__ import annotations

from typing import Any, TypeVar

from hutch.store.errors import StoreError
from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")


class InvalidDocument(StoreError):
    """A manifest or record that is not what hutch wrote: every problem, listed."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.what = what
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(
            f"invalid {what}: {len(problems)} problem(s)\n{shown}{more}",
            op="validate",
            hint="it was not written by this version of hutch, or it is damaged",
        )


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    # Building an adapter compiles the schema (~ms): once per class and process.
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


def validate(cls: type[T], raw: bytes, *, what: str) -> T:
    """``raw`` (JSON) as a ``cls``, or InvalidDocument naming every field that is wrong."""
    try:
        value: T = _adapter(cls).validate_json(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '(document)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise InvalidDocument(what, problems) from None
    return value
