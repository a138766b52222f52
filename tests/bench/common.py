"""Shared helpers of the benchmarks: inputs, a loopback server, timing, the machine.

Every measured command runs as a child process, timed from fork to wait4, and
wait4's rusage gives that child's own peak RSS (ru_maxrss), so one primitive,
``run_child``, serves the wall-time rows and the memory row alike.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"  # gitignored: wheels, the big archive, work trees
MIB = 1 << 20

# The four real wheels of issue 7: a C extension, a framework, a huge pure-Python
# data package, and a deep pure-Python tree. Pinned so the figures stay comparable.
WHEELS = (
    ("numpy", "2.1.3"),
    ("django", "5.1.4"),
    ("botocore", "1.35.80"),
    ("sympy", "1.13.3"),
)
# numpy's wheel is the cp311 manylinux x86_64 one whatever python runs the bench.
_PLATFORM = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
_PLATFORM += ["--platform", "manylinux_2_17_x86_64", "--only-binary=:all:"]


# -- inputs --------------------------------------------------------------------
def _wheel_file(folder: Path, name: str, version: str) -> Path | None:
    prefix = f"{name}-{version}-".lower()
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    return found[0] if found else None


def ensure_wheels() -> list[Path]:
    """The pinned wheels, downloaded once into .cache/wheels with ``pip download``."""
    folder = CACHE / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [f"{n}=={v}" for n, v in WHEELS if _wheel_file(folder, n, v) is None]
    if missing:
        print(f"downloading {', '.join(missing)} into {folder}", file=sys.stderr)
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *_PLATFORM]
        subprocess.run([*pip, "-d", str(folder), *missing], check=True)
    wheels = [_wheel_file(folder, n, v) for n, v in WHEELS]
    return [w for w in wheels if w is not None]


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def ensure_big_archive(size_mib: int) -> Path:
    """A ``size_mib`` MiB .tar.gz of pseudo-random bytes (8 files), made once.

    Random bytes do not compress, so the archive is as big as its content and
    every byte goes through fetch, gunzip, hash and write. gzip level 1: the
    archive is made once, and level 6 would compress random data no better.
    """
    path = CACHE / f"random-{size_mib}MiB.tar.gz"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"making {path} (once)", file=sys.stderr)
    rng = random.Random(7)
    parts = 8
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
        for i in range(parts):
            left = size_mib * MIB // parts
            info = tarfile.TarInfo(f"random/part-{i}.bin")
            info.size = left
            info.mode = 0o644
            reader = _RandomReader(rng, left)
            tar.addfile(info, reader)  # type: ignore[arg-type,unused-ignore]  # read() suffices
    tmp.rename(path)
    return path


class _RandomReader:
    def __init__(self, rng: random.Random, size: int) -> None:
        self._rng = rng
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        self._left -= n
        return self._rng.randbytes(n)


# -- tools ---------------------------------------------------------------------
def tool(name: str) -> Path | None:
    """``name`` beside this python (a venv's bin, never a pyenv shim), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def ensure_uv() -> Path:
    """uv, installed with pip into this python's environment if it is missing."""
    uv = tool("uv")
    if uv is None:
        print("installing uv with pip", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv"], check=True)
        uv = tool("uv")
    if uv is None:
        raise SystemExit("uv is not installed and `pip install uv` did not provide it")
    return uv


def hutch_venv(uv: Path, python: str = sys.executable) -> Path:
    """hutch as a user runs it: this checkout installed (not editable) into a venv
    under .cache made from ``python``; returns the venv (``bin/hutch`` is the command).

    An editable install adds its import finder to every start (~13 ms measured
    here), and a checkout would compile its modules on the first timed runs; uv
    installs the checkout as a wheel with its bytecode compiled, like pip does.
    The venv is refreshed on every benchmark run, so it always runs this code.
    One venv per interpreter (``venv`` for the one running this, ``venv-HASH``
    for another): how the interpreter was built moves every start-up
    (tests/bench/README.md, "Which Python").
    """
    real = os.path.realpath(python)
    if real == os.path.realpath(sys.executable):
        venv = CACHE / "venv"
    else:
        venv = CACHE / f"venv-{hashlib.sha256(real.encode()).hexdigest()[:10]}"
    if not (venv / "bin" / "python").exists():
        subprocess.run([str(uv), "venv", "-q", "--python", python, str(venv)], check=True)
    subprocess.run(
        [
            str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
            "--compile-bytecode", "--reinstall-package", "hutch", str(HERE.parent.parent),
        ],
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("UV_")},
    )  # fmt: skip
    return venv


def interpreter(python: str) -> str:
    """``python``'s version, the installation its venv was made from, and whether
    libpython is a shared library (as pyenv builds it) or linked into the
    executable (as Debian's is): tests/bench/README.md, "Which Python"."""
    code = (
        "import sys; maps = open('/proc/self/maps').read(); "
        "print(sys.version.split()[0], sys.base_prefix, "
        "'libpython shared' if 'libpython' in maps else 'libpython linked in', sep=', ')"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def bytecode_env() -> dict[str, str]:
    """The environment for hutch's children: the bytecode the install compiled is used.

    PYTHONPYCACHEPREFIX is dropped (it would make Python ignore __pycache__ and
    compile everything again on the first runs); PYTHONDONTWRITEBYTECODE does
    not matter once the bytecode exists.
    """
    return {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}


def version_of(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "?"


# -- the loopback server -------------------------------------------------------
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass

    def copyfile(self, source: Any, outputfile: Any) -> None:
        # sendfile(2), not http.server's 64 KiB read/write loop: the server stands
        # in for the package index and must not take CPU from the side it serves
        # (uv's side reads the files and has no server at all).
        self.wfile.flush()
        self.connection.sendfile(source)


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 from a thread; yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# -- timing --------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    seconds: float  # wall clock, spawn to exit
    maxrss_kib: int  # this child's own peak resident set (wait4's ru_maxrss)
    cpu: float = 0.0  # user + system seconds: less swayed by other load than wall time

    def __add__(self, other: Sample) -> Sample:
        """Children run one after another: times add up, the peak is the larger."""
        return Sample(
            self.seconds + other.seconds,
            max(self.maxrss_kib, other.maxrss_kib),
            self.cpu + other.cpu,
        )


def run_child(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Sample:
    """Run ``cmd`` to completion; its wall time and peak RSS. Fails loudly on exit != 0.

    Dirty pages left by the previous command are written first, outside the
    clock: hutch flushes what it wrote (syncfs) and uv does not, so without
    this one side would pay for the other's writeback.
    """
    os.sync()
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(
            [os.fspath(c) for c in cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
        _, status, usage = os.wait4(child.pid, 0)
        took = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            text = err.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"{' '.join(map(str, cmd))[:300]}: exit {child.returncode}\n{text}")
    return Sample(took, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def drop_tree(path: Path) -> None:
    """Remove a work tree. Read-only files (objects are 0444) need only a writable directory."""
    shutil.rmtree(path, ignore_errors=True)


# -- a quiet disk --------------------------------------------------------------
def _disk_counters(dev: tuple[int, int]) -> tuple[int, ...] | None:
    """(writes, discards, I/Os in flight) of the block device ``dev``, from /proc/diskstats."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/diskstats").read_text().splitlines():
            f = line.split()
            if (int(f[0]), int(f[1])) == dev:
                # 7: writes completed, 11: I/Os in progress, 14: discards completed
                return (int(f[7]), int(f[11]), int(f[14]) if len(f) > 14 else 0)
    return None


def settle(path: Path, *, quiet_for: float = 2.0, limit: float = 180.0) -> float:
    """Wait until the disk holding ``path`` has done no writes or discards for ``quiet_for`` s.

    On a filesystem mounted with ``discard``, deleting a tree keeps the disk busy
    trimming for a minute or more, and file creation meanwhile is slower; a run
    that starts then measures the previous run's deletions. (On ext4 without a
    journal creation stays slower for minutes after the disk is quiet: see
    journal_less.) Returns how long it waited (at most ``limit``).
    """
    os.sync()
    st = os.stat(path)
    dev = (os.major(st.st_dev), os.minor(st.st_dev))
    start = time.monotonic()
    last = _disk_counters(dev)
    if last is None:
        return 0.0  # not a block device we can see (tmpfs, overlay): nothing to wait for
    quiet_since = start
    while time.monotonic() - start < limit:
        time.sleep(0.25)
        now = _disk_counters(dev)
        if now != last or (now is not None and now[1]):
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_for:
            break
        last = now
    return time.monotonic() - start


# -- the machine ---------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def _ram_gib() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    return float("nan")


def filesystem_of(path: Path) -> str:
    """The type and mount point of the filesystem holding ``path`` (/proc/mounts)."""
    best = ("?", "")
    real = os.path.realpath(path)
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1]
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best[1]):
                best = (fields[2], mount)
    return f"{best[0]} ({best[1]})"


def fs_speed(work: Path, count: int = 1000) -> str:
    """µs per create, mkdir and link in ``work``: what every row's tree costs the kernel here.

    Seen on one ext4 disk: 20 µs per create in one run and 130 µs (or 650 µs)
    in another, for both sides of every row alike (what was deleted on the disk
    in the minutes before: see journal_less). The ratios move with it, since
    the kernel's share of each side moves.
    The probe is left in ``work`` (it goes with the run's work dir): on ext4
    without a journal, inodes freed just before the timed runs would slow
    every one of their creates and mkdirs (see journal_less).
    """
    probe = Path(tempfile.mkdtemp(prefix="fs-probe-", dir=work))
    took: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(count):
        os.close(os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
    took["create"] = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(count):
        os.mkdir(probe / f"d{i}")
    took["mkdir"] = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(count):
        os.link(probe / f"f{i}", probe / f"d{i}" / "l")
    took["link"] = time.perf_counter() - start
    return ", ".join(f"{t / count * 1e6:.0f} µs per {what}" for what, t in took.items())


def journal_less(path: Path) -> bool:
    """Whether ``path`` is on ext2/3/4 mounted without a journal (no /proc/fs/jbd2 entry).

    There, the inode allocator passes over every inode freed in the last 60 s
    (360 s while its inode table block is unwritten), looking up that block for each
    (fs/ext4/ialloc.c, recently_deleted): right after a tree of 11,600 inodes
    was deleted, an install of the four wheels took 1.5 s instead of 0.3 s,
    three quarters of its CPU in ext4_mkdir (perf). A run started within
    minutes of another's cleanup measures that cleanup.

    A filesystem whose journal is on another device is reported journal-less
    (its jbd2 entry names that device): only the note run.py prints is then wrong.
    """
    if not filesystem_of(path).startswith(("ext4 ", "ext2 ", "ext3 ")):
        return False
    dev = os.stat(path).st_dev
    with contextlib.suppress(OSError):
        for entry in Path("/proc/fs/jbd2").iterdir():  # e.g. vda-8, sda1-8
            name = entry.name.rpartition("-")[0]
            with contextlib.suppress(OSError, ValueError, IndexError):
                block = Path(f"/sys/class/block/{name}/dev").read_text().split(":")
                if os.makedev(int(block[0]), int(block[1])) == dev:
                    return False
    return True


def machine(path: Path) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({_cpu_model()}), {_ram_gib():.0f} GiB RAM, "
        f"{filesystem_of(path)}, Python {sys.version.split()[0]}, load average {load}"
    )
