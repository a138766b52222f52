"""install: verify, heal if needed, then link an artifact's tree into DEST atomically.

spec/store.md §10-11, spec/install.md: the tree is built beside DEST and
renamed into place, so DEST is absent, the old tree, or the complete new tree;
never anything between. Nothing is left beside DEST on success or failure.

    select entries (--subdir, --strip-components)
      → verify (stat | full) → heal from the source
      → build `.DEST.hutch-tmp-PID-RAND/` (dirs, linked files, symlinks)
      → rename (or, with --force, exchange) → remove the old tree
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import itertools
import os
import pwd
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from hutch.store import faults
from hutch.store.errors import (
    Damage,
    DamageError,
    HutchError,
    PermissionDenied,
    StoreError,
    UsageError,
    describe_oserror,
    store_error,
)
from hutch.store.fsutil import UnsafePath, current_umask, safe_relpath
from hutch.store.journal import ArtifactRecord, Txn
from hutch.store.link import Check, Dirs, Job, Linker, LinkFailed, LinkMode, opened
from hutch.store.manifest import Entry, Manifest, escapes, path_order
from hutch.store.parallel import can_fork, forked, split, spread, width
from hutch.store.store import Store
from hutch.store.verify import Level, damage_of, stat_problem, verify

if TYPE_CHECKING:
    # Only a heal fetches and extracts; an intact install never imports them.
    from hutch.extract import Limits
    from hutch.fetch import FetchOptions

# Builds of one install: damage found while building is healed and the tree
# built again; a cleaner that keeps deleting objects gets this many tries.
_BUILDS = 3
# last_used is rewritten only when it is older than this (_touch).
TOUCH_AFTER = 3600.0
# Trees with fewer entries are built by this process alone: a fork and its reaping cost ~1-2 ms.
_PARTS_FROM = 1000


class InstallOptions(NamedTuple):
    link: LinkMode = "auto"
    verify: Level = "stat"
    force: bool = False
    strip_components: int = 0
    subdir: str | None = None
    fetch: FetchOptions | None = None  # for a heal; None: the defaults
    limits: Limits | None = None


class InstallResult(NamedTuple):
    dest: Path
    files: int
    repaired: int  # damaged files healed before linking
    summary: str  # link modes used and fallbacks with their causes, one line
    warnings: tuple[str, ...] = ()  # the install succeeded, but something needs a look
    seconds: float = 0.0


def install_all(
    store: Store, pairs: Sequence[tuple[ArtifactRecord, Path]], options: InstallOptions
) -> list[InstallResult | HutchError]:
    """install() for several (artifact, DEST) pairs at once; each succeeds or fails alone.

    Each tree in a forked worker of its own, one per core, the biggest first,
    like add_all: the workers decode their manifests side by side, and no
    core waits at the end of each tree for the other to finish its part.
    The slot of a worker that ends with no tree left to start is lent to the
    others, and the last big tree still being built takes it (_build_in_order):
    four trees on two cores in one round, not four. The results
    (InstallResult or the HutchError) come in the order given.
    """
    if len(pairs) == 1 or width() == 1 or not can_fork() or _nested([d for _, d in pairs]):
        return [_install_or_error(store, record, dest, options) for record, dest in pairs]
    if options.fetch is not None:
        # One progress bar per worker (a heal's fetch), all on one terminal, would garble.
        options = options._replace(fetch=options.fetch._replace(progress=False))
    root = store.layout.root

    def install_here(i: int) -> InstallResult | HutchError:
        # A forked child: its own journal environment (LMDB's cannot cross fork).
        record, dest = pairs[i]
        return _install_or_error(Store.open(root), record, dest, options)

    # Biggest first: the trees that start last are small ones, and the last
    # one still running when the others end is split onto their slots.
    order = sorted(range(len(pairs)), key=lambda i: -pairs[i][0].files)
    done = forked(
        install_here, order, running=width(), lend=True, alone=lambda i: f"DEST {pairs[i][1]}"
    )
    by_pair = dict(zip(order, done, strict=True))
    return [by_pair[i] for i in range(len(pairs))]


def _install_or_error(
    store: Store, record: ArtifactRecord, dest: Path, options: InstallOptions
) -> InstallResult | HutchError:
    try:
        return install(store, record, dest, options)
    except HutchError as exc:
        return exc
    except OSError as exc:  # one no seam translated (ENAMETOOLONG from DEST): this pair's alone
        return store_error("install into", dest, exc)


def _nested(dests: Sequence[Path]) -> bool:
    """Whether one DEST lies inside another (or is another): then one after another.

    Each DEST's parent is resolved (`..`, symlinks: a shell's $PWD may reach the
    same directory by another way than a relative DEST); DEST itself is not,
    since a DEST that is a symlink is replaced, not followed.
    """
    real = [Path(os.path.realpath(d.parent)) / d.name for d in dests]
    # Sorted by components, whatever lies inside a DEST comes right after it.
    ordered = sorted(d.parts for d in real)
    return any(b[: len(a)] == a for a, b in itertools.pairwise(ordered))


def install(
    store: Store, record: ArtifactRecord, dest: Path, options: InstallOptions
) -> InstallResult:
    start = time.perf_counter()
    with store.journal.read() as txn:
        manifest = store.manifest(txn, record)
    entries = _select(manifest.entries, options.strip_components, options.subdir)
    replacing = dest.exists() or dest.is_symlink()
    if replacing and not options.force:
        raise UsageError(
            f"destination {dest} already exists", hint="use --force to replace it atomically"
        )
    if replacing:
        _check_replaceable(dest)
    files = [e for e in entries if e.type == "file"]

    # 1. Verify before link, in every link mode; heal what a cleaner or a crash
    #    damaged. A symlink cannot notice a missing object when it is made, so
    #    `--link symlink` always checks at least existence and size. `full`
    #    re-hashes everything first; the stat checks are made by the processes
    #    building the tree, each object just before its link (one pass).
    level: Level = (
        "stat" if options.link == "symlink" and options.verify == "none" else options.verify
    )
    repaired = 0
    if level == "full":
        damage = verify(store.layout, files, "full")
        if damage:
            _heal(store, record, manifest, damage, options)
            repaired = len(damage)
    check = stat_problem if level != "none" else None

    # 2. Build beside DEST. Damage the checks find, or a file vanishing between
    #    check and link (a cleaner racing us, ENOENT), is healed and the tree
    #    built again from scratch.
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise store_error("create the parent directory of", dest, exc) from exc
    _remove_dead_temps(dest)
    warnings: list[str] = []
    objects = os.fspath(store.layout.objects)
    for attempt in range(1, _BUILDS + 1):
        tmp = dest.with_name(f".{dest.name}.hutch-tmp-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            linker = _build(objects, os.fspath(tmp), entries, options.link, check)
            damage = damage_of(store.layout, files, dict(linker.damaged))
            if damage:
                _discard(tmp)
                if attempt == _BUILDS:
                    raise _keeps_disappearing(record, damage)
                _heal(store, record, manifest, damage, options)
                repaired += len(damage)
                continue
            faults.point("install.built")
            warnings += _publish(tmp, dest, force=options.force)
        except FileNotFoundError as exc:
            _discard(tmp)
            gone = verify(store.layout, files, "stat")
            if attempt == _BUILDS or not gone:
                raise store_error("install into", dest, exc) from exc
            _heal(store, record, manifest, gone, options)
            repaired += len(gone)
            continue
        except LinkFailed as exc:
            _discard(tmp)
            _link_error(exc, tmp, dest)
        except OSError as exc:
            _discard(tmp)
            raise store_error("install into", dest, exc) from exc
        except BaseException:
            _discard(tmp)
            raise
        break
    _touch(store, record)
    took = time.perf_counter() - start
    return InstallResult(dest, len(files), repaired, linker.summary(), tuple(warnings), took)


def _heal(
    store: Store,
    record: ArtifactRecord,
    manifest: Manifest,
    damage: list[Damage],
    options: InstallOptions,
) -> None:
    from hutch.store.repair import repair

    whole = manifest.files
    # A cleaner may delete more objects while the repair runs; heal those too,
    # a few rounds, rather than fail an install whose source is reachable.
    for _ in range(3):
        repair(store, record, manifest, damage, options=options.fetch, limits=options.limits)
        damage = verify(store.layout, whole, "stat")
        if not damage:
            return
    raise _keeps_disappearing(record, damage)


def _keeps_disappearing(record: ArtifactRecord, damage: list[Damage]) -> DamageError:
    return DamageError(
        record.id,
        damage,
        why="objects keep disappearing while they are repaired",
        hint="stop whatever is deleting files under the store's objects/ and retry",
    )


# -- which entries, at which paths ----------------------------------------------
def _select(entries: Sequence[Entry], strip: int, subdir: str | None) -> Sequence[Entry]:
    """The entries to install, re-rooted by --subdir, then --strip-components.

    Like a build system's strip_prefix: a re-rooted tree must still be a tree
    (no two entries at one path), and must not reach outside itself (a
    symlink that pointed to a sibling of the subdir would now point outside DEST).
    """
    if not subdir and not strip:
        return entries
    chosen: list[Entry] = list(entries)
    origin = {e.path: e.path for e in entries}
    what = []
    if subdir:
        what.append(f"--subdir {subdir}")
        try:
            base = safe_relpath(subdir)
        except UnsafePath as exc:
            raise UsageError(f"invalid --subdir {subdir!r}: {exc.reason}") from exc
        kind = next((e.type for e in entries if e.path == base), None)
        if kind != "dir":
            found = (
                f"is a {kind} in this artifact, not a directory"
                if kind
                else "is not in this artifact"
            )
            raise UsageError(
                f"--subdir {subdir!r} {found}",
                hint="`hutch show ARTIFACT` lists its entries",
            )
        prefix = base + "/"
        chosen = [
            e._replace(path=e.path[len(prefix) :]) for e in chosen if e.path.startswith(prefix)
        ]
        origin = {e.path: prefix + e.path for e in chosen}
    if strip:
        what.append(f"--strip-components {strip}")
        # Like GNU tar: the N leading components go, and entries no deeper than
        # N (the leading directories themselves) are not installed.
        stripped = [
            (e._replace(path=e.path.split("/", strip)[strip]), origin[e.path])
            for e in chosen
            if e.path.count("/") >= strip
        ]
        chosen, origin = [], {}
        for e, was in stripped:
            if e.path in origin:
                if e.type == "dir" and _kind(chosen, e.path) == "dir":
                    continue  # two leading dirs with the same subdirectory: merged, like tar
                raise UsageError(
                    f"--strip-components {strip} puts both {origin[e.path]!r} and {was!r} "
                    f"at {e.path!r}",
                    hint="strip fewer components, or pick one tree with --subdir",
                )
            origin[e.path] = was
            chosen.append(e)
    if not chosen:
        raise UsageError(
            f"{' '.join(what)} leaves nothing to install", hint="`hutch show ARTIFACT` lists it"
        )
    # Parents before children: the build below relies on it.
    chosen.sort(key=lambda e: path_order(e.path))
    tree = {e.path: e for e in chosen}
    for e in chosen:
        if e.type == "symlink" and escapes(e.path, e.target or "", tree):
            raise UsageError(
                f"symlink {origin[e.path]!r} -> {e.target!r} points outside what "
                f"{' '.join(what)} installs",
                hint="install a wider --subdir or strip fewer components",
            )
    return chosen


def _kind(entries: list[Entry], path: str) -> str | None:
    return next((e.type for e in reversed(entries) if e.path == path), None)


# -- building and publishing -----------------------------------------------------
def _build(
    objects: str, root: str, entries: Sequence[Entry], mode: LinkMode, check: Check | None
) -> Linker:
    """The tree at ``root``: directories, linked files and symlinks, in parallel parts.

    A tree is mostly mkdir(2) and link(2), each ~10-25 µs in the kernel. On
    threads, every call hands the GIL over and back (measured: 59,000 futex
    calls for the 11,600 mkdirs and links of the benchmark wheels, and more
    CPU than one thread), so the entries are cut into one contiguous part per
    core and each part is built by a process of its own (parallel.forked),
    the directories its entries need first made here (_shared_dirs).
    Every call starts from a descriptor of the objects directory or of
    ``root`` (link.Dirs); paths are joined as strings: pathlib costs ~10 µs
    a join, more than the link(2) it would feed.
    """
    # Directories are 0755 whatever the umask (umask 077 would make them 0700,
    # and an installed tree is meant to be used by others, e.g. a build user).
    mask = current_umask()
    fix = mask is None or bool(mask & 0o055)
    exact = mask is None or bool(mask & 0o755)  # else no fchmod per copied file
    _mkdir(root, fix)
    with opened(objects, root) as at:
        count = width() if len(entries) >= _PARTS_FROM else 1
        if count == 1:
            return _build_in_order(at, entries, mode, check, fix=fix, exact=exact)
        parts = split(entries, count)
        made = _shared_dirs(entries, parts)
        for path in sorted(made, key=path_order):  # parents first
            _mkdir(path, fix, at)
        build = functools.partial(
            _build_part, at, mode=mode, check=check, fix=fix, exact=exact, made=made
        )
        return Linker.merged(mode, forked(build, parts, here=True))


def _shared_dirs(entries: Sequence[Entry], parts: Sequence[Sequence[Entry]]) -> set[str]:
    """The directories one part holds and a later part needs: made before the parts start."""
    dirs = {e.path for e in entries if e.type == "dir"}
    return {path for part in parts[1:] if part for path in _needed_before(part[0].path, dirs)}


def _needed_before(first: str, dirs: set[str]) -> list[str]:
    """The directories that entries from ``first`` on may need from before it, parents first.

    Entries come in bytewise path order (the manifest's; _select keeps it), so
    a directory precedes everything under it, and the entries from ``first``
    on can need a directory that comes before ``first`` only if it is a prefix
    of ``first`` followed by a character sorting at or before "/": its
    ancestors (``a`` for ``a/b``) and directories like ``numpy`` before
    ``numpy-2.1.dist-info`` when a part starts there (``numpy/core`` comes after it).
    """
    return [first[:i] for i, ch in enumerate(first) if ch <= "/" and i and first[:i] in dirs]


def _build_in_order(
    at: Dirs,
    entries: Sequence[Entry],
    mode: LinkMode,
    check: Check | None,
    *,
    fix: bool,
    exact: bool,
) -> Linker:
    """The tree built here in path order; in a worker of install_all, whenever
    another worker lends its slot, the back half of what is left goes to a
    helper process (parallel.spread), once this one has made the directories
    that half needs from the front."""
    made: set[str] = set()
    dirs: set[str] = set()
    linker = Linker(mode, exact_modes=exact)

    def here(r: range) -> None:
        _place(at, entries[r.start : r.stop], linker, check, fix=fix, made=made)

    def there(r: range) -> Linker:
        part = entries[r.start : r.stop]
        return _build_part(at, part, mode, check, fix=fix, exact=exact, made=made)

    def before(cut: int) -> None:
        if not dirs:
            dirs.update(e.path for e in entries if e.type == "dir")
        for path in _needed_before(entries[cut].path, dirs):
            if path in made:
                continue
            try:
                _mkdir(path, fix, at)
            except FileExistsError:
                continue  # made here already: the build is past it
            made.add(path)

    _, theirs = spread(
        here, there, len(entries), [1.0] * len(entries), least=_PARTS_FROM / 2, before=before
    )
    return Linker.merged(mode, [linker, *theirs])


def _build_part(
    at: Dirs,
    entries: Sequence[Entry],
    mode: LinkMode,
    check: Check | None,
    *,
    fix: bool,
    exact: bool,
    made: set[str],
) -> Linker:
    """One part of a tree, in path order; directories in ``made`` exist already."""
    linker = Linker(mode, exact_modes=exact)
    _place(at, entries, linker, check, fix=fix, made=made)
    return linker


def _place(
    at: Dirs,
    entries: Sequence[Entry],
    linker: Linker,
    check: Check | None,
    *,
    fix: bool,
    made: set[str],
) -> None:
    """``entries`` under ``at.root`` through ``linker``; directories in ``made`` exist already."""
    jobs: list[Job] = []
    symlinks: list[tuple[str, str]] = []
    # extract lists every implied directory, so no per-file existence checks are needed.
    for e in entries:
        if e.type == "file":
            key = e.object_key
            jobs.append((key, f"{key[:2]}/{key[2:]}", e.path, bool(e.exec), e.size or 0))
        elif e.type == "dir":
            if e.path not in made:
                _mkdir(e.path, fix, at)
        else:
            assert e.target is not None
            symlinks.append((e.target, e.path))
    linker.link_many(jobs, at, check)
    for target, path in symlinks:
        try:
            os.symlink(target, path, dir_fd=at.root_fd)
        except OSError as exc:
            raise at.in_root(exc, path) from None


def _mkdir(path: str, fix: bool, at: Dirs | None = None) -> None:
    """``path`` (under ``at.root``, if given) as 0755, whatever the umask."""
    fd = None if at is None else at.root_fd
    try:
        os.mkdir(path, 0o755, dir_fd=fd)
        if fix:
            os.chmod(path, 0o755, dir_fd=fd)
    except OSError as exc:
        if at is None:
            raise
        raise at.in_root(exc, path) from None


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


def _publish(tmp: Path, dest: Path, *, force: bool) -> list[str]:
    """Move the built tree to DEST; returns warnings (an old tree that would not go)."""
    if not force or not (dest.exists() or dest.is_symlink()):
        try:
            # NOREPLACE: a DEST that appeared meanwhile is refused, not taken over.
            if not _renameat2(tmp, dest, _RENAME_NOREPLACE):
                if dest.exists() or dest.is_symlink():
                    raise FileExistsError(errno.EEXIST, "File exists", str(dest))
                os.rename(tmp, dest)
        except FileExistsError as exc:
            raise UsageError(
                f"destination {dest} already exists", hint="use --force to replace it"
            ) from exc
        return []
    # Swap atomically, then remove the old tree (now at tmp's name). Without
    # renameat2 (old kernels, some filesystems) there is a moment with no DEST.
    old = tmp
    if not _renameat2(tmp, dest, _RENAME_EXCHANGE):
        old = tmp.with_name(tmp.name + "-old")
        os.rename(dest, old)
        os.rename(tmp, dest)
    faults.point("install.swapped")
    try:
        _rmtree(old)
    except OSError as exc:
        # DEST is already the new tree: the install succeeded. The old one stays
        # under its temporary name, which the next install to DEST retries.
        return [f"the old tree is left at {old}: {describe_oserror(exc)}; remove it by hand"]
    return []


def _check_replaceable(dest: Path) -> None:
    """Refuse --force before changing anything if the old tree cannot be removed afterwards.

    Removing a file needs write access to its directory, not to the file; a
    directory another user owns and this user cannot write (another user's
    install, 0755) would leave their files behind after the swap.
    """
    if dest.is_symlink() or not dest.is_dir():
        return
    me = os.geteuid()
    for top, _dirs, _files in os.walk(dest):
        st = os.stat(top)
        if st.st_uid != me and not os.access(top, os.R_OK | os.W_OK | os.X_OK):
            owner = _user_name(st.st_uid)
            raise PermissionDenied(
                f"cannot replace {dest}: {top} belongs to {owner} and this user cannot "
                f"remove what is in it; nothing was changed",
                path=top,
                op="replace",
                errno=errno.EACCES,
                hint=f"ask {owner} to remove {dest}, or install somewhere else",
            )


def _link_error(exc: LinkFailed, tmp: Path, dest: Path) -> NoReturn:
    """An explicit --link mode that cannot work here: raise naming the mode, file, OS error."""
    try:
        final = dest / exc.dst.relative_to(tmp)
    except ValueError:
        final = exc.dst
    code = exc.errno or 0
    # The OS error as it would read for the final path, not the temporary one.
    cause = OSError(code, exc.strerror, str(exc.src), None, str(final))
    name = errno.errorcode.get(code, str(code))
    hint = {
        errno.EXDEV: "hard links and reflinks cannot cross filesystems; use --link auto "
        "(it copies where it must) or put DEST on the store's filesystem",
        errno.EMLINK: "use --link auto, which copies the files at the link limit",
        errno.EPERM: "the kernel refuses hard links to files you neither own nor can write "
        "(fs.protected_hardlinks); use --link auto, which copies those files",
    }.get(code, "use --link auto, which falls back to what works here")
    if exc.mode == "reflink" and code == errno.EINVAL:
        hint = "btrfs does not clone between nodatacow (chattr +C) and ordinary files; "
        hint += "use --link auto"
    elif exc.mode == "reflink" and code != errno.EXDEV:
        hint = "reflinks need xfs (mkfs.xfs -m reflink=1) or btrfs; use --link auto"
    raise StoreError(
        f"cannot install {final} with --link {exc.mode}: {exc.strerror} ({name}): {exc.reason}",
        path=final,
        op=f"{exc.mode} link",
        errno=code,
        hint=hint,
    ) from cause


def _discard(tmp: Path) -> None:
    """Remove a half-built tree; never let that hide the error being raised."""
    with contextlib.suppress(OSError):
        _rmtree(tmp)


def _rmtree(path: Path) -> None:
    """Remove a tree, even one whose owner made some of its directories read-only."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    root = os.fspath(path)

    def unblock(func: Callable[..., object], p: str, exc: BaseException) -> None:
        if isinstance(exc, FileNotFoundError):
            return
        inside = p.startswith(root + os.sep)
        if not isinstance(exc, PermissionError) or not (inside or p == root):
            raise exc
        if func in (os.unlink, os.rmdir):
            # Removing an entry needs a writable directory; only touch ours, inside the tree.
            if not inside:
                raise exc
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        else:  # the directory itself could not be opened or listed
            os.chmod(p, 0o700)
            _remove(p, unblock)

    _remove(root, unblock)


def _remove(
    path: str, handler: Callable[[Callable[..., object], str, BaseException], None]
) -> None:
    import shutil  # only to remove trees; it imports bz2 and lzma (~2.5 ms)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=handler)
    else:
        shutil.rmtree(path, onerror=lambda func, p, info: handler(func, p, info[1]))


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
            # Best effort: a leftover someone else owns is not this install's problem.
            with contextlib.suppress(OSError):
                _rmtree(dest.parent / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _touch(store: Store, record: ArtifactRecord) -> None:
    """Record the use for `gc --max-age`, at most once an hour (spec/store.md §11).

    Like relatime: each journal write is an LMDB commit with its fsyncs, and a
    build that installs the same artifact into a hundred fresh trees would pay
    for a hundred of them to move a date that gc reads in days.
    A read-only store just doesn't.
    """
    now = time.time()
    if not store.writable or now - record.last_used < TOUCH_AFTER:
        return

    def touch(txn: Txn) -> None:
        current = txn.artifact(record.id)
        if current is not None:
            current.last_used = now
            txn.put_artifact(current)

    with contextlib.suppress(HutchError):
        store.journal.write(touch)
