"""hutch's one error tree. Every failure a user can meet is one of these.

    HutchError                      exit 1   anything else
    ├── UsageError                  exit 2   bad arguments, unknown artifact
    ├── IntegrityError              exit 3   content is not what it must be
    │   ├── DigestMismatch                   expected vs got, for an archive or object
    │   └── DamageError                      damaged objects that could not be healed
    ├── FetchError                  exit 4   every url and attempt failed
    ├── ArchiveError                exit 5   archive refused: unsafe, invalid or too big
    └── StoreError                  exit 6   the store itself: permissions, disk, locks
        ├── DiskFull                         ENOSPC / EDQUOT
        ├── PermissionDenied                 EACCES / EPERM / EROFS
        ├── ReadOnlyStore                    a write was needed but the store is read-only
        └── LockTimeout                      another process held a lock too long

Each class carries structured fields and builds its message from them. The
underlying cause (an OSError, a requests error) is chained with
``raise ... from exc`` and never swallowed: the CLI prints the chain as
``caused by:`` lines down to the errno, then the ``hint:``.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence
from typing import NamedTuple


class HutchError(Exception):
    """Base of all hutch errors. ``hint`` tells the user what to do next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Picklable whatever a subclass's __init__ takes, cause chain included:
        # a forked worker (hutch.store.parallel) sends its error to the parent,
        # which must still print every `caused by:` down to the errno.
        return (_restore, (type(self), self.args, self.__dict__, portable(cause_of(self))))


class ForeignCause(Exception):
    """A cause that crossed from a forked worker as its text (`ConnectionError: ...`)."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_restore, (type(self), self.args, self.__dict__, portable(cause_of(self))))


def portable(exc: BaseException | None) -> BaseException | None:
    """``exc`` as something pickle carries whole: ours and the builtins' as they are,
    anything else (a requests error holding its response) as a ForeignCause."""
    if exc is None or isinstance(exc, HutchError | ForeignCause):
        return exc
    if type(exc).__module__ == "builtins":
        return exc  # OSError and friends pickle their errno, text and file names
    foreign = ForeignCause(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    foreign.__cause__ = cause_of(exc)
    return foreign


def cause_of(exc: BaseException) -> BaseException | None:
    """The next link of ``exc``'s chain as Python prints it: its cause, else its context."""
    if exc.__cause__ is not None:
        return exc.__cause__
    return None if exc.__suppress_context__ else exc.__context__


def _restore(
    cls: type[BaseException], args: tuple[object, ...], state: dict[str, object],
    cause: BaseException | None,
) -> BaseException:  # fmt: skip
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    exc.__cause__ = cause
    return exc


class UsageError(HutchError):
    exit_code = 2


class IntegrityError(HutchError):
    exit_code = 3


class DigestMismatch(IntegrityError):
    def __init__(
        self, what: str, *, algo: str, expected: str, got: str, hint: str | None = None
    ) -> None:
        self.what = what
        self.algo = algo
        self.expected = expected
        self.got = got
        super().__init__(
            f"digest mismatch for {what}\n  expected {algo}:{expected}\n  got      {algo}:{got}",
            hint=hint or "the source changed or is corrupt; check the pinned digest and the URL",
        )


class Damage(NamedTuple):
    """One object an artifact needs that is not intact."""

    path: str  # the member path in the artifact
    object: str  # the object's path in the store
    problem: str  # "missing", "truncated (12 of 40 bytes)", "corrupt", ...


class DamageError(IntegrityError):
    def __init__(
        self, artifact: str, damage: Sequence[Damage], *, why: str, hint: str | None
    ) -> None:
        self.artifact = artifact
        self.damage = list(damage)
        shown = "\n".join(f"  {d.path}: {d.problem}" for d in self.damage[:20])
        more = f"\n  ... and {len(self.damage) - 20} more" if len(self.damage) > 20 else ""
        super().__init__(
            f"artifact {artifact[:16]} has {len(self.damage)} damaged file(s) and could not be "
            f"repaired: {why}\n{shown}{more}",
            hint=hint,
        )


class FetchError(HutchError):
    exit_code = 4

    def __init__(
        self, message: str, *, urls: Sequence[str] = (), attempts: int = 0, hint: str | None = None
    ) -> None:
        self.urls = list(urls)
        self.attempts = attempts
        super().__init__(message, hint=hint)


class ArchiveError(HutchError):
    """An archive hutch refuses to extract. Names the archive, the member and why."""

    exit_code = 5

    def __init__(
        self, archive: str, reason: str, *, member: str | None = None, hint: str | None = None
    ) -> None:
        self.archive = archive
        self.member = member
        self.reason = reason
        where = f" member {member!r}" if member is not None else ""
        super().__init__(
            f"refused archive {archive}:{where} {reason}",
            hint=hint or "the archive is unsafe or invalid; nothing was extracted",
        )


class StoreError(HutchError):
    exit_code = 6

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        op: str | None = None,
        errno: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self.op = op
        self.errno = errno
        super().__init__(message, hint=hint)


class DiskFull(StoreError):
    pass


class PermissionDenied(StoreError):
    pass


class ReadOnlyStore(StoreError):
    pass


class LockTimeout(StoreError):
    pass


def describe_oserror(exc: OSError) -> str:
    """`No space left on device (ENOSPC): /store/objects/ab/cd`: name, text, path."""
    code = exc.errno
    name = _errno.errorcode.get(code, str(code)) if code is not None else "?"
    text = exc.strerror or os.strerror(code) if code is not None else str(exc)
    where = ""
    if exc.filename is not None:
        where = f": {os.fsdecode(exc.filename)}"
        if exc.filename2 is not None:
            where += f" -> {os.fsdecode(exc.filename2)}"
    return f"{text} ({name}){where}"


_HINTS = {
    _errno.ENOSPC: "free space on that filesystem (`hutch gc` frees what nothing references; "
    "`hutch gc --max-age 30d` also artifacts unused for 30 days), or point HUTCH_STORE (or "
    "HUTCH_JOURNAL, for the journal) at one with room",
    _errno.EDQUOT: "your disk quota is exhausted; free space or raise the quota",
    _errno.EACCES: "check the owner and mode of that path (ls -ld); a shared store needs "
    "`hutch init --shared GROUP`",
    _errno.EPERM: "the operation is not permitted on that path; check its owner and mode",
    _errno.EROFS: "the filesystem is mounted read-only; use a writable store with --store",
}


def store_error(op: str, path: str | os.PathLike[str], exc: OSError) -> StoreError:
    """Translate an OSError met while `op`-ing `path` into the right StoreError.

    The caller raises the result ``from exc`` so the errno stays in the chain.
    """
    code = exc.errno
    message = f"cannot {op} {os.fspath(path)}: {exc.strerror or exc}"
    hint = _HINTS.get(code or 0, "see the OS error below")
    cls: type[StoreError] = StoreError
    if code in (_errno.ENOSPC, _errno.EDQUOT):
        cls = DiskFull
    elif code in (_errno.EACCES, _errno.EPERM, _errno.EROFS):
        cls = PermissionDenied
    return cls(message, path=path, op=op, errno=code, hint=hint)
