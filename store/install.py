"""install: verify, heal if needed, then link an artifact's tree into DEST atomically.

spec/store.md §10-11: the tree is built beside DEST and renamed into place, so
DEST is absent, the old tree, or the complete new tree; never anything between.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from hutch.extract import Limits
from hutch.fetch import FetchOptions
from hutch.store import faults
from hutch.store.errors import Damage, DamageError, HutchError, UsageError, store_error
from hutch.store.fsutil import UnsafePath, safe_relpath
from hutch.store.journal import ArtifactRecord, Txn
from hutch.store.link import Linker, LinkFailed, LinkMode
from hutch.store.manifest import Entry, Manifest
from hutch.store.repair import repair
from hutch.store.store import Store
from hutch.store.verify import Level, verify


@dataclass(frozen=True)
class InstallOptions:
    link: LinkMode = "auto"
    verify: Level = "stat"
    force: bool = False
    strip_components: int = 0
    subdir: str | None = None
    fetch: FetchOptions = field(default_factory=FetchOptions)
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class InstallResult:
    dest: Path
    files: int
    repaired: int  # damaged files healed before linking
    summary: str  # link modes used and fallbacks, one line


def install(
    store: Store, record: ArtifactRecord, dest: Path, options: InstallOptions
) -> InstallResult:
    with store.journal.read() as txn:
        manifest = store.manifest(txn, record)
    entries = _select(manifest.entries, options.strip_components, options.subdir)
    if (dest.exists() or dest.is_symlink()) and not options.force:
        raise UsageError(
            f"destination {dest} already exists", hint="use --force to replace it atomically"
        )
    files = [e for e in entries if e.type == "file"]
    view = Manifest(source=manifest.source, entries=files)

    # 1. Verify before link; heal what a cleaner or a crash damaged.
    damage = verify(store.layout, view, options.verify)
    repaired = 0
    if damage:
        _heal(store, record, manifest, damage, options)
        repaired = len(damage)

    # 2. Build beside DEST. A file vanishing between verify and link (a cleaner
    #    racing us) is damage too: heal once and build again.
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(dest)
    for attempt in (1, 2):
        tmp = dest.with_name(f".{dest.name}.hutch-tmp-{os.getpid()}-{secrets.token_hex(4)}")
        linker = Linker(options.link)
        try:
            _build(store, tmp, entries, linker)
            faults.point("install.built")
            _publish(tmp, dest, force=options.force)
        except FileNotFoundError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            gone = verify(store.layout, view, "stat")
            if attempt == 2 or not gone:
                raise store_error("install into", dest, exc) from exc
            _heal(store, record, manifest, gone, options)
            repaired += len(gone)
            continue
        except LinkFailed as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise HutchError(
                f"cannot install with --link {exc.mode}: {exc.strerror}",
                hint="use --link auto to fall back to what works here",
            ) from exc
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise store_error("install into", dest, exc) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        break
    _touch(store, record.id)
    return InstallResult(dest, len(files), repaired, linker.summary())


def _heal(
    store: Store,
    record: ArtifactRecord,
    manifest: Manifest,
    damage: list[Damage],
    options: InstallOptions,
) -> None:
    repair(store, record, manifest, damage, options=options.fetch, limits=options.limits)
    left = verify(store.layout, Manifest(source=manifest.source, entries=manifest.files), "stat")
    if left:
        raise DamageError(record.id, left, why="still damaged after repair", hint=None)


def _select(entries: list[Entry], strip: int, subdir: str | None) -> list[Entry]:
    """The entries to install, re-rooted by --subdir and --strip-components."""
    if subdir:
        try:
            prefix = safe_relpath(subdir) + "/"
        except UnsafePath as exc:
            raise UsageError(f"invalid --subdir {subdir!r}: {exc.reason}") from exc
        chosen = [
            e.model_copy(update={"path": e.path[len(prefix) :]})
            for e in entries
            if e.path.startswith(prefix)
        ]
        if not chosen:
            raise UsageError(f"--subdir {subdir!r} is not a directory in this artifact")
        entries = chosen
    if strip:
        entries = [
            e.model_copy(update={"path": e.path.split("/", strip)[strip]})
            for e in entries
            if e.path.count("/") >= strip
        ]
    return entries


def _build(store: Store, root: Path, entries: list[Entry], linker: Linker) -> None:
    os.mkdir(root, 0o755)
    fix_dir_modes = _umask() & 0o055
    if fix_dir_modes:
        os.chmod(root, 0o755)
    # Sorted by path, so a directory always comes before its children; extract
    # lists every implied directory, so no per-file existence checks are needed.
    for e in entries:
        dst = root / e.path
        if e.type == "dir":
            os.mkdir(dst, 0o755)
            if fix_dir_modes:
                os.chmod(dst, 0o755)
        elif e.type == "symlink":
            assert e.target is not None
            os.symlink(e.target, dst)
        else:
            linker.link(store.layout.object_path(e.object_key), dst, executable=bool(e.exec_))


_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """rename with flags; False when this kernel or filesystem has no renameat2."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def _publish(tmp: Path, dest: Path, *, force: bool) -> None:
    if not force or not (dest.exists() or dest.is_symlink()):
        try:
            # NOREPLACE: a DEST that appeared meanwhile is refused, not taken over.
            if not _renameat2(tmp, dest, _RENAME_NOREPLACE):
                if dest.exists():
                    raise FileExistsError(errno.EEXIST, "File exists", str(dest))
                os.rename(tmp, dest)
        except FileExistsError as exc:
            raise UsageError(
                f"destination {dest} already exists", hint="use --force to replace it"
            ) from exc
        return
    # Swap atomically, then remove the old tree (now at tmp's name).
    if not _renameat2(tmp, dest, _RENAME_EXCHANGE):
        aside = tmp.with_name(tmp.name + "-old")
        os.rename(dest, aside)
        os.rename(tmp, dest)
        tmp = aside
    faults.point("install.swapped")
    _rmtree(tmp)


def _rmtree(path: Path) -> None:
    def make_writable(_func: object, p: str, _exc: object) -> None:
        # A tree whose directories a user made read-only must still go.
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            os.unlink(p) if not os.path.isdir(p) else shutil.rmtree(p)

    shutil.rmtree(path, onerror=make_writable)


def _remove_dead_temps(dest: Path) -> None:
    """Remove `.DEST.hutch-tmp-PID-*` left by installs that were killed."""
    prefix = f".{dest.name}.hutch-tmp-"
    try:
        names = os.listdir(dest.parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _rmtree(dest.parent / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _touch(store: Store, artifact_id: str) -> None:
    """Record the use for `gc --max-age`; a read-only store just doesn't."""
    if not store.writable:
        return

    def touch(txn: Txn) -> None:
        current = txn.artifact(artifact_id)
        if current is not None:
            current.last_used = time.time()
            txn.put_artifact(current)

    with contextlib.suppress(HutchError):
        store.journal.write(touch)
