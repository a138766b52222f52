"""doctor: check everything a store depends on and say what to do (spec/inspect.md §doctor).

It runs before and around Store.open, because the things it looks for are
the ones that make opening fail: a journal on a network filesystem, a
directory this user cannot write, a full disk, a damaged journal. Each check
is one Check; the CLI renders the report and exits 0 when no check is an
error, else 6 (a store problem) or 1.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import json
import os
import pwd
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hutch.store.errors import (
    DiskFull,
    HutchError,
    LockTimeout,
    PermissionDenied,
    ReadOnlyStore,
    StoreError,
    store_error,
)
from hutch.store.gc import blank_journal
from hutch.store.journal import ArtifactRecord, Journal, LogRecord, ReaderSlot
from hutch.store.layout import Layout
from hutch.store.lock import is_locked
from hutch.store.staging import OWNER
from hutch.store.stats import human_size, stats
from hutch.store.store import Store

Status = Literal["ok", "info", "warning", "error"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    summary: str
    details: list[str] = field(default_factory=list)
    advice: str | None = None
    # An error here is a store problem (exit 6) rather than anything else (exit 1).
    store_problem: bool = True


@dataclass(frozen=True)
class DoctorOptions:
    rebuild: bool = False


@dataclass(frozen=True)
class DoctorReport:
    store: str
    journal: str
    checks: list[Check]

    @property
    def errors(self) -> list[Check]:
        return [c for c in self.checks if c.status == "error"]

    @property
    def exit_code(self) -> int:
        if not self.errors:
            return 0
        return 6 if any(c.store_problem for c in self.errors) else 1


def doctor(root: Path, options: DoctorOptions | None = None) -> DoctorReport:
    options = options or DoctorOptions()
    layout = Layout.at(root)
    checks: list[Check] = []
    report = DoctorReport(str(root), str(layout.journal), checks)
    if not layout.config.exists() and not layout.objects.is_dir():
        checks.append(
            Check(
                "store",
                "error",
                f"there is no hutch store at {root}",
                advice="check --store / HUTCH_STORE; `hutch add` creates a store",
            )
        )
        return report
    checks.append(filesystems(layout))
    checks.append(permissions(layout))
    checks.append(free_space(layout))

    # The journal: its reader table first, since opening the store clears stale slots.
    started = time.time()
    readers, broken = _readers(layout)
    # A full disk or a permission problem is not damage: moving the journal
    # aside would lose names for nothing.
    damaged = broken is not None and not isinstance(
        broken, DiskFull | PermissionDenied | ReadOnlyStore | LockTimeout
    )
    if options.rebuild and damaged:
        checks.append(_move_aside(layout))
    journal_was_missing = not Journal.exists(layout.journal)
    try:
        store = Store.open(root, create=False)
    except HutchError as exc:
        checks.append(
            Check(
                "journal",
                "error",
                f"the store cannot be opened: {str(exc).splitlines()[0]}",
                advice="`hutch doctor --rebuild` moves a damaged journal aside and rebuilds it "
                "from the manifest files (names are lost; `hutch add --name` restores them)"
                if damaged
                else exc.hint,
            )
        )
        return report
    checks.append(_journal(store, readers, rebuild=options.rebuild, missing=journal_was_missing))
    checks.append(_records(store))
    checks.append(_interrupted(store, started))
    checks.append(_unreferenced(store))
    return report


# -- filesystems -------------------------------------------------------------
# LMDB keeps its reader table and write lock in a shared-memory mapping of
# lock.mdb; network filesystems do not keep mmaps coherent between hosts, so
# two hosts would each think they hold the only writer (LMDB docs: "do not
# use LMDB databases on remote filesystems").
_NETWORK = {
    "nfs",
    "nfs4",
    "cifs",
    "smb",
    "smb2",
    "smb3",
    "smbfs",
    "fuse",
    "fuseblk",
    "lustre",
    "gpfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "beegfs",
}
# statfs(2) f_type values (linux/magic.h), for when /proc/self/mountinfo is absent.
_MAGIC = {
    0xEF53: "ext4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlay",
    0x2FC12FC1: "zfs",
    0xF2F52010: "f2fs",
    0x6969: "nfs",
    0x517B: "smb",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x65735546: "fuse",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
    0x00C36400: "ceph",
    0x01021997: "9p",
    0x5346414F: "afs",
}


@dataclass(frozen=True)
class Filesystem:
    path: str
    type: str  # "ext4", "nfs4", "fuse.sshfs", ... or "unknown"
    mount_point: str | None
    magic: int | None  # statfs f_type

    @property
    def network(self) -> bool:
        base = self.type.split(".", 1)[0]
        return base in _NETWORK or self.type.startswith("fuse")


def filesystem(path: Path) -> Filesystem:
    """The filesystem holding ``path`` (or its nearest existing parent)."""
    probe = _existing(path)
    magic = _statfs_type(probe)
    mount = _mount_of(probe)
    if mount is not None:
        return Filesystem(str(path), mount[1], mount[0], magic)
    name = _MAGIC.get(magic, f"unknown (0x{magic:x})") if magic is not None else "unknown"
    return Filesystem(str(path), name, None, magic)


def _existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _statfs_type(path: Path) -> int | None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86-64
    try:
        if libc.statfs(os.fsencode(path), buf) != 0:
            return None
    except AttributeError:  # pragma: no cover - a libc without statfs
        return None
    # f_type is the first member, a long (__fsword_t) on Linux.
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def _mount_of(path: Path) -> tuple[str, str] | None:
    """(mount point, fs type) from /proc/self/mountinfo: the longest mount point above path."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[str, str] | None = None
    for line in lines:
        # "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw"
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        point = _unescape(fields[4])
        fstype = fields[dash + 1]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        # Later lines are later mounts: on a tie, the one mounted over the other wins.
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def filesystems(layout: Layout) -> Check:
    store_fs = filesystem(layout.root)
    journal_fs = filesystem(layout.journal)
    details = [
        f"store   {layout.root}: {store_fs.type} (mounted at {store_fs.mount_point or '?'})",
        f"journal {layout.journal}: {journal_fs.type} (mounted at {journal_fs.mount_point or '?'})",
    ]
    if journal_fs.network:
        return Check(
            "filesystem",
            "error",
            f"the journal is on a network filesystem ({journal_fs.type}): LMDB's locking "
            "does not work there and concurrent writers can corrupt it",
            details,
            advice="put the journal on a local disk: export HUTCH_JOURNAL=/local/path "
            "(for example /var/tmp/hutch-journal) in every shell that uses this store",
        )
    if store_fs.network:
        return Check(
            "filesystem",
            "ok",
            f"the store is on {store_fs.type}, the journal on local {journal_fs.type}",
            details,
        )
    return Check("filesystem", "ok", f"local filesystems ({store_fs.type})", details)


# -- permissions -------------------------------------------------------------
def permissions(layout: Layout) -> Check:
    """Can this user do everything a writer does? Names each path and missing permission."""
    problems: list[str] = []
    # A read-only mount makes every path below it unwritable: say that once.
    read_only: set[int] = set()
    for what, path in (("store", layout.root), ("journal", layout.journal)):
        probe = _existing(path)
        if _read_only_mount(probe) and _dev(probe) not in read_only:
            read_only.add(_dev(probe))
            problems.append(f"{probe}: the filesystem holding the {what} is mounted read-only")
    dirs = [layout.root, layout.objects, layout.manifests, layout.staging, layout.locks]
    dirs.append(layout.journal)
    files = [layout.journal / "data.mdb", layout.journal / "lock.mdb"]
    fanout = sorted(p for p in _listdir(layout.objects) if len(p.name) == 2)
    writable_fs = [p for p in [*dirs, *fanout, *files] if _dev(_existing(p)) not in read_only]
    bad_fanout = []
    for path in writable_fs:
        lacking = _lacks(path, directory=path not in files)
        if path in fanout and lacking:
            bad_fanout += lacking
        else:
            problems += lacking
    problems += bad_fanout[:3]
    if len(bad_fanout) > 3:
        problems.append(f"... and {len(bad_fanout) - 3} more fan-out directories under objects/")
    who = _who()
    if not problems:
        return Check("permissions", "ok", f"{who} can read and write the whole store")
    return Check(
        "permissions",
        "error",
        f"{who} cannot write everything a writer must",
        problems,
        advice="fix the owner or mode of the paths above (chown/chmod), or run hutch as their "
        "owner; a store shared by several users needs `hutch init --shared GROUP`; on a "
        "read-only filesystem only installs of intact artifacts work: use a store elsewhere "
        "(--store) to add",
    )


def _dev(path: Path) -> int:
    try:
        return os.stat(path).st_dev
    except OSError:
        return -1


def _lacks(path: Path, *, directory: bool) -> list[str]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [] if not directory or path.parent.exists() else [f"{path}: missing"]
    except OSError as exc:
        return [f"{path}: cannot stat: {exc.strerror}"]
    wanted = [("read", os.R_OK), ("write", os.W_OK)]
    if directory:
        wanted.append(("search (x)", os.X_OK))
    missing = [name for name, bit in wanted if not os.access(path, bit)]
    if not missing:
        return []
    why = "; its filesystem is mounted read-only" if _read_only_mount(path) else ""
    return [f"{path}: no {' or '.join(missing)} permission ({_describe(st)}){why}"]


def _describe(st: os.stat_result) -> str:
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"owner {owner}:{group}, mode {stat.filemode(st.st_mode)}"


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _who() -> str:
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = "?"
    return f"this user ({name}, uid {os.getuid()})"


def _listdir(path: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path)]
    except OSError:
        return []


# -- free space --------------------------------------------------------------
# An add needs room for the archive, its extracted files and the journal txn;
# below this it will fail, below _LOW it soon may.
_FULL = 64 << 20
_LOW = 1 << 30
_FEW_INODES = 1000


def free_space(layout: Layout) -> Check:
    seen: set[int] = set()
    details: list[str] = []
    full: list[str] = []
    low: list[str] = []
    for what, path in (("store", layout.root), ("journal", layout.journal)):
        probe = _existing(path)
        try:
            st = os.statvfs(probe)
            dev = os.stat(probe).st_dev
        except OSError as exc:
            details.append(f"{what} {path}: cannot statvfs: {exc.strerror}")
            continue
        if dev in seen:
            continue
        seen.add(dev)
        free = st.f_bavail * st.f_frsize
        line = f"{what} {probe}: {human_size(free)} free of {human_size(st.f_blocks * st.f_frsize)}"
        if st.f_files:  # some filesystems (btrfs) have no fixed inode count
            line += f", {st.f_favail} inodes free"
        details.append(line)
        if free < _FULL or (st.f_files and st.f_favail < _FEW_INODES):
            full.append(what)
        elif free < _LOW:
            low.append(what)
    where = " and ".join(full or low)
    advice = (
        "free space on that filesystem: `hutch gc` frees what nothing references, "
        "`hutch gc --max-age 30d` also artifacts unused for 30 days, `--max-size SIZE` caps "
        "the store; or move the store (--store / HUTCH_STORE)"
    )
    if "journal" in (full or low) and layout.journal != layout.root / "journal":
        advice += "; the journal moves with HUTCH_JOURNAL=/other/local/path"
    if full:
        return Check(
            "free space",
            "error",
            f"the {where} filesystem is (nearly) full: writes will fail with "
            "No space left on device",
            details,
            advice=advice,
        )
    if low:
        return Check(
            "free space", "warning", f"less than 1 GiB free for the {where}", details, advice
        )
    return Check("free space", "ok", "enough free space", details)


# -- journal -----------------------------------------------------------------
@dataclass(frozen=True)
class _Readers:
    live: list[str]
    stale: list[str]
    cleared: int


def _readers(layout: Layout) -> tuple[_Readers | None, StoreError | None]:
    """Stale reader slots, seen before Store.open clears them; or why the journal won't open."""
    path = layout.journal
    writable = os.access(path, os.W_OK) and all(
        os.access(path / n, os.W_OK) for n in ("data.mdb", "lock.mdb") if (path / n).exists()
    )
    if not Journal.exists(path) or not writable:
        return None, None
    try:
        journal = Journal.open_keeping_readers(path)
        slots = [s for s in journal.readers() if s.pid != os.getpid()]
        cleared = journal.clear_stale_readers()
    except StoreError as exc:
        return None, exc
    last = journal.last_txnid()

    def show(slot: ReaderSlot) -> str:
        if slot.txnid is None:
            return f"pid {slot.pid}: idle"
        return f"pid {slot.pid}: reading txn {slot.txnid} ({last - slot.txnid} behind)"

    live = [show(s) for s in slots if s.alive]
    return _Readers(live, [show(s) for s in slots if not s.alive], cleared), None


def _move_aside(layout: Layout) -> Check:
    """Keep the damaged journal for a post-mortem; Store.open then rebuilds a fresh one."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for name in ("data.mdb", "lock.mdb"):
        src = layout.journal / name
        if not src.exists():
            continue
        dst = layout.journal / f"{name}.broken-{stamp}"
        try:
            os.rename(src, dst)
        except OSError as exc:
            raise store_error("move the damaged journal aside", src, exc) from exc
        moved.append(f"{src} -> {dst}")
    return Check("rebuild", "warning", "moved the damaged journal aside", moved)


def _journal(store: Store, readers: _Readers | None, *, rebuild: bool, missing: bool) -> Check:
    details: list[str] = []
    status: Status = "ok"
    summary = f"the journal at {store.layout.journal} opens"
    advice = None
    with store.journal.read() as txn:
        artifacts = sum(1 for _ in txn.artifacts())
        last = next(
            (r for r in txn.log_newest_first() if r.op == "rebuild"),
            None,
        )
    manifest_files = sum(1 for p in _listdir(store.layout.manifests) if p.suffix == ".json")
    if missing and store.writable:
        status = "warning"
        summary = "the journal was missing and has been rebuilt from the manifest files"
        details.append(_rebuilt(last))
        advice = "names live only in the journal and were lost; `hutch add SOURCE --name NAME` "
        "restores them"
    elif rebuild:
        from hutch.store.rebuild import rebuild as do_rebuild

        result = do_rebuild(store)
        summary = f"re-indexed {result.artifacts} manifest file(s) into the journal"
        details += [f"ignored {name}: it does not hash to its name" for name in result.ignored]
    elif blank_journal(store):
        status = "error"
        summary = (
            f"the journal has never committed anything but the store has {manifest_files} "
            "manifest file(s): it was replaced or emptied"
        )
        advice = "run `hutch doctor --rebuild` to re-index them (gc refuses to run until then)"
    details.append(f"{artifacts} artifact(s); {manifest_files} manifest file(s)")
    if not store.writable:
        details.append("opened read-only: the reader table is not inspected")
    if readers is not None:
        details += [f"reader {r}" for r in readers.live]
        if readers.stale or readers.cleared:
            details += [f"stale reader {r} (process gone)" for r in readers.stale]
            details.append(f"cleared {readers.cleared} stale reader slot(s)")
            if status == "ok":
                status = "info"
    return Check("journal", status, summary, details, advice)


def _records(store: Store) -> Check:
    """Every artifact record and its manifest, validated strictly (spec/inspect.md §9).

    Commands decode the journal's records by field name and trust a manifest
    whose bytes hash to its id (spec/store.md §4-5); this is where both are
    checked against the schema and the manifest's tree checked for safety.
    """
    from hutch.store.schema import InvalidDocument, validate

    bad: list[str] = []
    count = 0
    with store.journal.read() as txn:
        for key, raw in txn.artifact_bytes():
            count += 1
            try:
                record = validate(ArtifactRecord, raw, what=f"artifact record {key[:16]}")
                if record.id != key:
                    bad.append(f"{key[:16]}: the record names artifact {record.id[:16]}")
                    continue
                problems = store.manifest(txn, record).problems()
            except InvalidDocument as exc:
                bad += [f"{key[:16]}: {exc.what}: {p}" for p in exc.problems[:5]]
                continue
            except StoreError as exc:
                bad.append(f"{key[:16]}: {str(exc).splitlines()[0]}")
                continue
            bad += [f"{key[:16]}: manifest {p}" for p in problems[:5]]
    if not bad:
        return Check("records", "ok", f"{count} artifact record(s) and manifests are valid")
    return Check(
        "records",
        "error",
        f"{len(bad)} problem(s) in the journal's records or manifests",
        bad[:50],
        advice="`hutch doctor --rebuild` re-indexes the journal from the manifest files, "
        "which are validated as they are read",
    )


def _rebuilt(record: LogRecord | None) -> str:
    return f"rebuild: {record.detail}" if record and record.detail else "rebuild: nothing to index"


# -- interrupted operations --------------------------------------------------
def _interrupted(store: Store, started: float) -> Check:
    with store.journal.read() as txn:
        aborted = [r for r in txn.log(200) if r.outcome == "aborted"]
    just_now = [r for r in aborted if r.time >= started]
    details = [
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.time))} {r.op}: {r.detail}"
        for r in aborted[-5:]
    ]
    in_flight, leftover = [], []
    for path in _listdir(store.layout.staging):
        info = _op_info(path)
        # Asked, never taken: an owner may be about to lock .owner.new (staging.py).
        if is_locked(path / OWNER) or is_locked(path / ".owner.new"):
            in_flight.append(f"{path}: in flight ({info})")
        else:
            # Store.open swept every staging directory of a dead owner it could
            # remove; one still here could not be (or is younger than a minute).
            leftover.append(f"{path}: owner gone, not removed ({info})")
    details += in_flight + leftover
    if leftover:
        return Check(
            "interrupted operations",
            "warning",
            f"{len(leftover)} staging director(y/ies) of dead operations could not be removed",
            details,
            advice="remove them by hand (check their owner and mode); `hutch gc` retries",
        )
    summary = f"{len(aborted)} operation(s) in the recent log were interrupted and recovered"
    if just_now:
        summary += f"; {len(just_now)} recovered just now"
    return Check(
        "interrupted operations",
        "info" if aborted else "ok",
        summary if aborted else "none",
        details,
    )


def _op_info(path: Path) -> str:
    try:
        info = json.loads((path / "op.json").read_text())
    except (OSError, ValueError):
        return "no op.json"
    return f"{info.get('op', '?')} {info.get('detail', '')} by pid {info.get('pid', '?')}"


# -- unreferenced ------------------------------------------------------------
def _unreferenced(store: Store) -> Check:
    s = stats(store)
    with store.journal.read() as txn:
        live = {a.manifest for a in txn.artifacts()}
    orphans = [
        p.name
        for p in _listdir(store.layout.manifests)
        if p.suffix == ".json" and not p.name.startswith(".") and p.stem not in live
    ]
    details = [
        f"{s.objects} object file(s), {human_size(s.physical_bytes)}",
        f"{s.unreferenced_objects} unreferenced, {human_size(s.unreferenced_bytes)}",
        f"{len(orphans)} manifest file(s) no artifact in the journal uses",
    ]
    if s.missing_objects:
        return Check(
            "objects",
            "warning",
            f"{s.missing_objects} object(s) that artifacts need are missing",
            details,
            advice="`hutch verify --repair` restores them from the sources (installs heal "
            "on their own)",
        )
    if s.unreferenced_objects or orphans:
        return Check(
            "objects",
            "info",
            f"{s.unreferenced_objects} unreferenced object(s), {human_size(s.unreferenced_bytes)}; "
            f"{len(orphans)} orphan manifest file(s)",
            details,
            # Orphans are what crashed or removed adds leave, or what a journal that
            # was lost and replaced no longer knows: gc deletes both alike.
            advice="`hutch gc` frees them; if the orphan manifests are artifacts you expect "
            "(`hutch ls` does not show them), run `hutch doctor --rebuild` before gc",
        )
    return Check("objects", "ok", "every object and manifest file is referenced", details)
