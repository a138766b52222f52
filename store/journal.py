"""The journal: hutch's LMDB index (spec/store.md §5). The only module that imports lmdb.

Everything a command needs to answer "what is in this store" is read in one
read transaction; every change is one write transaction, so the journal moves
from one consistent state to the next or not at all.
"""

from __future__ import annotations

import atexit
import builtins
import errno as _errno
import functools
import json
import os
import pwd
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import lmdb
from hutch.store.errors import ReadOnlyStore, StoreError, store_error
from hutch.store.fsutil import hostname

T = TypeVar("T")

_DBS = ("artifacts", "manifests", "names", "aliases", "refs", "log")
_INITIAL_MAP = 256 << 20
# lmdb 3.x bundles LMDB 0.9 (data format v1) and 1.0 (format v3); they cannot
# read each other's files. New journals are always 0.9-format, whatever
# LMDB_DEFAULT_LIB_VERSION says, so every hutch (and mdb_stat) can read them.
_LIB_VERSION = 0
# Read by pydantic when hutch.store.schema audits a record (`hutch doctor`).
_STRICT: dict[str, Any] = {"extra": "forbid", "strict": True}


@dataclass(slots=True)
class ArtifactRecord:
    """One artifact, as the journal's ``artifacts`` db holds it (spec/store.md §5)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    id: str
    manifest: str
    urls: list[str]
    digests: dict[str, str]
    size: int
    files: int
    bytes: int
    added: float
    last_used: float
    names: list[str] = field(default_factory=list)

    def to_json(self) -> builtins.bytes:  # `bytes` is a field here
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ARTIFACT_FIELDS}

    @classmethod
    def from_json(cls, raw: builtins.bytes) -> ArtifactRecord:
        # hutch's own bytes, written by to_json() in a write transaction: decoded
        # by field name, not validated again (`hutch doctor` audits them strictly).
        try:
            return cls(**json.loads(raw))
        except (TypeError, ValueError) as exc:
            raise _damaged("artifact record", exc) from exc


@dataclass(slots=True)
class LogRecord:
    """One entry of the operation log (spec/inspect.md §log)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    op: str
    outcome: str  # committed | failed | aborted
    time: float
    user: str
    host: str
    pid: int
    artifact: str | None = None
    detail: str | None = None
    seq: int = 0

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _LOG_FIELDS}

    @classmethod
    def from_json(cls, raw: bytes) -> LogRecord:
        try:
            return cls(**json.loads(raw))
        except (TypeError, ValueError) as exc:
            raise _damaged("log record", exc) from exc

    @classmethod
    def now(
        cls, op: str, outcome: str, *, artifact: str | None = None, detail: str | None = None
    ) -> LogRecord:
        return cls(
            op=op,
            artifact=artifact,
            outcome=outcome,
            detail=detail,
            time=time.time(),
            user=_user(),
            host=hostname(),
            pid=os.getpid(),
        )


_ARTIFACT_FIELDS = tuple(f.name for f in fields(ArtifactRecord))
_LOG_FIELDS = tuple(f.name for f in fields(LogRecord))


def _damaged(what: str, exc: Exception) -> StoreError:
    return StoreError(
        f"damaged {what} in the journal: {exc}",
        op="read journal",
        hint="run `hutch doctor`; `hutch doctor --rebuild` rebuilds the journal from the "
        "manifest files",
    )


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


class Txn:
    """One LMDB transaction with hutch's typed reads and writes."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> None:
        self._txn = txn
        self._dbs = dbs

    def _get(self, db: str, key: str) -> bytes | None:
        value = self._txn.get(key.encode(), db=self._dbs[db])
        return None if value is None else bytes(value)

    # -- reads -------------------------------------------------------------
    def artifact(self, artifact_id: str) -> ArtifactRecord | None:
        raw = self._get("artifacts", artifact_id)
        return None if raw is None else ArtifactRecord.from_json(raw)

    def artifact_json(self, artifact_id: str) -> bytes | None:
        """The stored bytes of one artifact record, undecoded (rebuild validates them)."""
        return self._get("artifacts", artifact_id)

    def artifact_bytes(self) -> Iterator[tuple[str, bytes]]:
        """Every artifact record as (key, the JSON bytes stored), for an audit."""
        with self._txn.cursor(db=self._dbs["artifacts"]) as cur:
            for key, raw in cur:
                yield bytes(key).decode(errors="replace"), bytes(raw)

    def artifacts(self) -> Iterator[ArtifactRecord]:
        with self._txn.cursor(db=self._dbs["artifacts"]) as cur:
            for _, raw in cur:
                yield ArtifactRecord.from_json(bytes(raw))

    def artifact_ids_with_prefix(self, prefix: str) -> list[str]:
        found = []
        with self._txn.cursor(db=self._dbs["artifacts"]) as cur:
            if cur.set_range(prefix.encode()):
                for key in cur.iternext(keys=True, values=False):
                    text = bytes(key).decode()
                    if not text.startswith(prefix):
                        break
                    found.append(text)
        return found

    def manifest_bytes(self, manifest_id: str) -> bytes | None:
        return self._get("manifests", manifest_id)

    def name(self, name: str) -> str | None:
        raw = self._get("names", name)
        return None if raw is None else raw.decode()

    def alias(self, key: str) -> str | None:
        raw = self._get("aliases", key)
        return None if raw is None else raw.decode()

    def is_referenced(self, object_key: str) -> bool:
        prefix = object_key.encode() + b"\0"
        with self._txn.cursor(db=self._dbs["refs"]) as cur:
            return bool(cur.set_range(prefix)) and bytes(cur.key()).startswith(prefix)

    def referenced_objects(self) -> set[str]:
        with self._txn.cursor(db=self._dbs["refs"]) as cur:
            return {bytes(k).split(b"\0", 1)[0].decode() for k in cur.iternext(values=False)}

    def refs(self) -> Iterator[tuple[str, str]]:
        """Every reference as (object key, artifact id), in key order."""
        with self._txn.cursor(db=self._dbs["refs"]) as cur:
            for key in cur.iternext(values=False):
                obj, _, aid = bytes(key).partition(b"\0")
                yield obj.decode(), aid.decode()

    def log_newest_first(self) -> Iterator[LogRecord]:
        """The operation log from the newest record back, read lazily (filters stop early)."""
        with self._txn.cursor(db=self._dbs["log"]) as cur:
            for _, raw in cur.iterprev():
                yield LogRecord.from_json(bytes(raw))

    def log(self, limit: int | None = None) -> list[LogRecord]:
        """The newest ``limit`` records, oldest first."""
        out: list[LogRecord] = []
        with self._txn.cursor(db=self._dbs["log"]) as cur:
            for _, raw in cur.iterprev():
                out.append(LogRecord.from_json(bytes(raw)))
                if limit is not None and len(out) >= limit:
                    break
        out.reverse()
        return out

    # -- writes ------------------------------------------------------------
    def _put(self, db: str, key: str, value: bytes) -> None:
        self._txn.put(key.encode(), value, db=self._dbs[db])

    def put_artifact(self, record: ArtifactRecord) -> None:
        self._put("artifacts", record.id, record.to_json())

    def put_manifest(self, manifest_id: str, canonical: bytes) -> None:
        self._put("manifests", manifest_id, canonical)

    def put_name(self, name: str, artifact_id: str) -> None:
        self._put("names", name, artifact_id.encode())

    def put_alias(self, key: str, artifact_id: str) -> None:
        self._put("aliases", key, artifact_id.encode())

    def put_ref(self, object_key: str, artifact_id: str) -> None:
        self._put("refs", f"{object_key}\0{artifact_id}", b"")

    def append_log(self, record: LogRecord) -> int:
        db = self._dbs["log"]
        with self._txn.cursor(db=db) as cur:
            seq = struct.unpack(">Q", cur.key())[0] + 1 if cur.last() else 1
        record.seq = seq
        self._txn.put(struct.pack(">Q", seq), record.to_json(), db=db)
        return seq

    def delete_artifact(self, record: ArtifactRecord, object_keys: list[str]) -> None:
        aid = record.id.encode()
        self._txn.delete(aid, db=self._dbs["artifacts"])
        for name in record.names:
            if self.name(name) == record.id:
                self._txn.delete(name.encode(), db=self._dbs["names"])
        with self._txn.cursor(db=self._dbs["aliases"]) as cur:
            doomed = [bytes(k) for k, v in cur if bytes(v) == aid]
        for alias in doomed:
            self._txn.delete(alias, db=self._dbs["aliases"])
        for obj in object_keys:
            self._txn.delete(f"{obj}\0{record.id}".encode(), db=self._dbs["refs"])
        still_used = any(a.manifest == record.manifest for a in self.artifacts())
        if not still_used:
            self._txn.delete(record.manifest.encode(), db=self._dbs["manifests"])


class ReaderSlot(NamedTuple):
    """One slot of LMDB's reader table (Journal.readers())."""

    pid: int
    thread: str
    txnid: int | None  # the snapshot being read; None when the slot is idle
    alive: bool  # False: the process died and the slot is stale


def _drop(key: str) -> None:
    env = _ENVS.pop(key, None)
    if env is not None:
        env.close()


def _pid_alive(pid: int) -> bool:
    # The reader table lives in lock.mdb's shared memory, which is host-local,
    # so every pid in it is a pid on this host.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


# One Environment per path per process (LMDB forbids opening the same env twice
# in a process), and never used across fork (LMDB: "use an MDB_env* in the
# process which opened it, not after fork()"). A forked child (parallel.forked)
# closes what it inherited, so that it can open the journal itself: on Linux
# that releases only the child's own fcntl locks (it has none) and its own
# reader slots (mdb_env_close0 clears slots whose pid is the caller's).
# Unless a transaction was open at the fork: closing would abort it, and its
# reader slot is the parent's; then the handles are only dropped.
_ENVS: dict[str, lmdb.Environment] = {}


def _after_fork_in_child() -> None:
    global _GATE  # noqa: PLW0603 - a fresh one: a parent thread may have held its locks
    inherited = list(_ENVS.values())
    _ENVS.clear()
    idle = _GATE.idle()
    _GATE = _Gate()
    if idle:
        for env in inherited:
            env.close()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_all() -> None:
    """Close every environment this process opened, at its exit.

    As Python's own teardown would (the CLI skips it: cli.leave). Until its
    environment closes, a process keeps its slot in lock.mdb's reader table:
    py-lmdb keeps a finished read transaction for reuse, and a transaction
    still open also pins its snapshot, whose pages writers cannot reuse. A
    slot left by a process that has exited is freed only by the next
    writable open's mdb_reader_check. Closing aborts what is open and frees
    the slot now; one environment failing to close does not keep the others open.
    """
    for key in list(_ENVS):
        with suppress(lmdb.Error):
            _drop(key)


atexit.register(_close_all)


class Journal:
    def __init__(self, env: lmdb.Environment, path: Path, *, readonly: bool) -> None:
        self._env = env
        self.path = path
        self.readonly = readonly
        self._dbs = {name: env.open_db(name.encode(), create=not readonly) for name in _DBS}
        self._pid = os.getpid()

    def _check_process(self) -> None:
        # LMDB: "use an MDB_env* in the process which opened it, not after fork()".
        if self._pid != os.getpid():
            raise RuntimeError(
                f"the journal at {self.path} was opened before fork(); open the store again"
            )

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, mode: int = 0o644) -> Journal:
        """Open (creating when writable) the journal at ``path``.

        A store the user cannot write is opened read-only and without LMDB's
        lock file, which needs write access (spec/store.md §5).
        """
        key = os.path.realpath(path)
        env = _ENVS.get(key)
        fresh = env is None
        if env is None:
            try:
                env = _open_env(path, readonly=readonly, mode=mode)
            except lmdb.Error as exc:
                error = _translate(exc, path)  # a full disk or a permission: say so
                if type(error) is StoreError:  # no OS error behind it: the file is damaged
                    error = StoreError(
                        f"cannot open the journal at {path}: {exc}",
                        path=path,
                        op="open journal",
                        hint="run `hutch doctor`; `hutch doctor --rebuild` rebuilds it from the "
                        "manifest files",
                    )
                raise error from exc
            _ENVS[key] = env
        try:
            # Opening the named databases of a new journal is its first write.
            return cls(env, path, readonly=readonly)
        except lmdb.Error as exc:
            if fresh:  # a later open must not reuse an environment that failed
                _drop(key)
            raise _translate(exc, path) from exc

    @classmethod
    def open_keeping_readers(cls, path: Path, *, mode: int = 0o644) -> Journal:
        """Open an existing, writable journal *without* clearing stale reader slots.

        open() clears them silently; `hutch doctor` opens the journal this way
        first so it can list the slots killed processes left (readers()) and
        report what clear_stale_readers() removed. The environment is cached
        like open()'s, so a later open() in this process reuses it.
        """
        key = os.path.realpath(path)
        env = _ENVS.get(key)
        fresh = env is None
        if env is None:
            try:
                # The same settings as _open_env() for an existing file, whose
                # own format picks the engine (no lib_version).
                env = lmdb.open(
                    str(path),
                    map_size=_INITIAL_MAP,
                    max_dbs=len(_DBS) + 2,
                    mode=mode,
                    create=False,
                )
            except lmdb.Error as exc:
                error = _translate(exc, path)
                if type(error) is StoreError:  # no OS error behind it: the file is damaged
                    error = StoreError(
                        f"cannot open the journal at {path}: {exc}",
                        path=path,
                        op="open journal",
                        hint="`hutch doctor --rebuild` rebuilds it from the manifest files",
                    )
                raise error from exc
            _ENVS[key] = env
        try:
            return cls(env, path, readonly=False)
        except lmdb.Error as exc:
            if fresh:
                _drop(key)
            raise _translate(exc, path) from exc

    def readers(self) -> list[ReaderSlot]:
        """LMDB's reader table: one slot per process (thread) that has read the journal.

        Empty for a journal opened read-only, which runs without the lock file
        that holds the table.
        """
        if self.readonly:
            return []
        slots = []
        # mdb_reader_list() text: a header, then "pid thread txnid" per slot,
        # txnid "-" when the slot is idle.
        for line in self._env.readers().splitlines()[1:]:
            fields = line.split()
            if len(fields) != 3 or not fields[0].isdigit():
                continue
            pid = int(fields[0])
            txnid = int(fields[2]) if fields[2].isdigit() else None
            slots.append(ReaderSlot(pid, fields[1], txnid, alive=_pid_alive(pid)))
        return slots

    def clear_stale_readers(self) -> int:
        """Free the reader slots of dead processes (mdb_reader_check); how many were freed."""
        if self.readonly:
            return 0
        try:
            return int(self._env.reader_check())
        except lmdb.Error as exc:
            raise _translate(exc, self.path) from exc

    def last_txnid(self) -> int:
        """The id of the newest committed write transaction (how far readers may lag)."""
        return int(self._env.info()["last_txnid"])

    @staticmethod
    def exists(path: Path) -> bool:
        return (path / "data.mdb").exists()

    def close(self) -> None:
        key = os.path.realpath(self.path)
        env = _ENVS.pop(key, None)
        if env is not None:
            env.close()

    @contextmanager
    def read(self) -> Iterator[Txn]:
        self._check_process()
        with _GATE.txn():
            try:
                txn = self._env.begin(write=False)
            except lmdb.MapResizedError:
                # Another process grew the map; adopt its size.
                _GATE.resize(functools.partial(self._env.set_mapsize, 0))
                txn = self._env.begin(write=False)
            try:
                yield Txn(txn, self._dbs)
            finally:
                txn.abort()

    def write(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn`` in one write transaction and commit; grow the map and rerun if full.

        Threads of one process take turns (one write transaction at a time is
        all LMDB allows anyway), and a resize waits until no other thread of
        this process has a transaction open, as mdb_env_set_mapsize(3) requires.
        """
        if self.readonly:
            raise ReadOnlyStore(
                f"the journal at {self.path} is read-only for this user",
                path=self.path,
                op="write journal",
                hint="ask the store's owner to run this, or use a store you can write (--store)",
            )
        self._check_process()
        with _GATE.writer:
            for _ in range(8):
                with _GATE.txn():
                    try:
                        txn = self._env.begin(write=True)
                    except lmdb.MapResizedError:
                        _GATE.resize(functools.partial(self._env.set_mapsize, 0))
                        continue
                    try:
                        result = fn(Txn(txn, self._dbs))
                        txn.commit()
                    except lmdb.MapFullError:
                        txn.abort()
                        size = self._env.info()["map_size"] * 2
                        _GATE.resize(functools.partial(self._env.set_mapsize, size))
                        continue
                    except lmdb.Error as exc:
                        txn.abort()
                        raise _translate(exc, self.path) from exc
                    except BaseException:
                        txn.abort()
                        raise
                    return result
        raise StoreError(f"the journal at {self.path} cannot grow", path=self.path)


class _Gate:
    """This process's transactions, against set_mapsize(), which needs none active.

    ``writer`` makes threads take turns at writing. ``txn()`` marks a
    transaction open; ``resize()`` waits until the only open ones are the
    calling thread's own (those are the caller's responsibility, as before).
    """

    def __init__(self) -> None:
        self.writer = threading.RLock()
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False
        self._own = threading.local()

    @contextmanager
    def txn(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._active += 1
        self._own.n = getattr(self._own, "n", 0) + 1
        try:
            yield
        finally:
            self._own.n -= 1
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def idle(self) -> bool:
        """No transaction open in this process (read without the lock: for a forked child)."""
        return self._active == 0

    def resize(self, grow: Callable[[], object]) -> None:
        mine = getattr(self._own, "n", 0)
        with self._cond:
            while self._resizing or self._active > mine:
                self._cond.wait()
            self._resizing = True
        try:
            grow()
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


_GATE = _Gate()


def _open_env(path: Path, *, readonly: bool, mode: int) -> lmdb.Environment:
    # A group-writable file mode means a shared store (layout.Modes): its
    # journal directory is setgid and group-writable like every other one.
    shared = bool(mode & 0o020)
    if not readonly:
        try:
            if not path.is_dir():
                path.mkdir(mode=0o2775 if shared else 0o755, exist_ok=True)
                if shared:
                    # mkdir's mode went through this user's umask.
                    os.chmod(path, 0o2775)
        except OSError as exc:
            raise store_error("create the journal directory", path, exc) from exc
    open_env = functools.partial(
        lmdb.open,
        str(path),
        map_size=_INITIAL_MAP,
        max_dbs=len(_DBS) + 2,
        readonly=readonly,
        lock=not readonly,
        mode=mode,
        create=not readonly,
    )
    # An existing journal's own format picks the engine; a new one gets ours.
    exists = (path / "data.mdb").exists()
    env = open_env() if exists else open_env(lib_version=_LIB_VERSION)
    if not readonly:
        if shared:
            # LMDB creates data.mdb and lock.mdb with open(2)'s mode, which the
            # umask filters: a member with umask 022 would leave lock.mdb 0644
            # and every other member could then only open the journal
            # read-only. Only the owner can chmod; files another member made
            # were made right by that member.
            for name in ("data.mdb", "lock.mdb"):
                file = path / name
                try:
                    st = os.stat(file)
                    if st.st_uid == os.geteuid() and st.st_mode & 0o7777 != mode:
                        os.chmod(file, mode)
                except OSError as exc:
                    raise store_error("set the mode of", file, exc) from exc
        # Clear reader slots left by processes that were killed mid-read.
        env.reader_check()
    return env


# py-lmdb's errors carry no errno, only mdb_strerror()'s text ("mdb_txn_commit:
# No space left on device"); for system errors that text is strerror(3), so
# it maps back to the errno the CLI explains.
_STRERROR = {os.strerror(code): code for code in _errno.errorcode}
# LMDB turns a short write (the disk filled up mid-write) into EIO
# (mdb_page_flush: "wres != wsize ... rc = EIO"); with less than this free on
# the journal's filesystem an EIO is really ENOSPC.
_NEARLY_FULL = 1 << 20


def _translate(exc: lmdb.Error, path: Path) -> StoreError:
    code = getattr(exc, "errno", None)
    if not (isinstance(code, int) and code):
        text = str(exc)
        code = next((c for t, c in _STRERROR.items() if text.endswith(f": {t}")), None)
    text = os.strerror(code) if code else ""
    if code == _errno.EIO and _free_bytes(path) < _NEARLY_FULL:
        code = _errno.ENOSPC
        text = f"{os.strerror(code)} (LMDB reports the short write as an I/O error)"
    if code:
        return store_error("write the journal", path, OSError(code, text, str(path)))
    return StoreError(
        f"journal error at {path}: {exc}",
        path=path,
        op="write journal",
        hint="run `hutch doctor`; `hutch doctor --rebuild` rebuilds the journal from the "
        "manifest files",
    )


def _free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 1 << 62  # unknown: do not guess ENOSPC
    return st.f_bavail * st.f_frsize
