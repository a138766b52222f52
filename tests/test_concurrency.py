"""Many hutch processes on one store at once (spec/store.md §6, §8, §10, §11).

Single flight, bounded lock waits that name the holder, gc against adds in
flight, the staging sweep against live operations, POSIX lock semantics, and
the whole mix at once: installs, adds, rm, gc, verify --repair and a cleaner
deleting object files, every command a real `hutch` process.

The mix engine (``run_mix``) lives here so that tests/bench/soak.py runs the
very same mix for minutes; tests/test_crash.py reuses the corpus and runner.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import http.server
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import pytest

# -- trees ---------------------------------------------------------------------

Tree = dict[str, tuple[str, bytes | str, bool]]


def snapshot(root: Path) -> Tree | None:
    """A directory as {relpath: (kind, content-or-target, executable)}; None if absent."""
    if not root.exists() and not root.is_symlink():
        return None
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("symlink", os.readlink(path), False)
            elif path.is_dir():
                out[rel] = ("dir", b"", False)
            else:
                out[rel] = ("file", path.read_bytes(), bool(path.stat().st_mode & 0o100))
    return out


def describe_difference(got: Tree | None, want: Tree | None) -> str:
    if got is None or want is None:
        return f"got {'nothing' if got is None else f'{len(got)} entries'}, want " + (
            "nothing" if want is None else f"{len(want)} entries"
        )
    missing = sorted(want.keys() - got.keys())[:3]
    extra = sorted(got.keys() - want.keys())[:3]
    wrong = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])[:3]
    return f"missing {missing}, extra {extra}, different {wrong}"


# -- corpus: archives made by GNU tar and zip, extracted by GNU tar and unzip ----


@dataclass(frozen=True)
class Archive:
    name: str
    path: Path
    source: str  # what `hutch add` is given: a local path or a loopback http url
    sha256: str
    aid: str  # blake3 of the archive bytes: the artifact id
    tree: Tree  # what GNU tar or unzip extracts from it

    @property
    def pin(self) -> str:
        return f"sha256:{self.sha256}"


def _write_tree(root: Path, rng: random.Random, pool: Sequence[bytes], files: int) -> None:
    """A small source tree: nested dirs, shared and unique files, exec bits, symlinks."""
    dirs = [root, *(root / f"d{i}" / f"e{i % 3}" for i in range(max(1, files // 12)))]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    (root / "empty").mkdir()
    names = []
    for i in range(files):
        where = rng.choice(dirs)
        if rng.random() < 0.4:
            data = rng.choice(pool)  # shared with other archives: one object, many refs
        else:
            size = rng.choice([0, rng.randrange(1, 200), rng.randrange(200, 9000), 70_000])
            data = rng.randbytes(size)
        path = where / f"f{i}.dat"
        path.write_bytes(data)
        path.chmod(0o755 if rng.random() < 0.15 else 0o644)
        names.append(path)
    for i, target in enumerate(rng.sample(names, 2)):
        link = target.parent / f"link{i}"
        if not link.exists():
            link.symlink_to(target.name)


_REPRODUCIBLE_TAR = ["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0"]


def _pack(src: Path, name: str, out: Path, fmt: str) -> Path:
    if fmt == "zip":
        archive = out / f"{name}.zip"
        # No -y: hutch refuses zip symlinks (their target is file data); zip stores
        # what they point to instead, as unzip extracts it.
        subprocess.run(["zip", "-q", "-r", str(archive), name], cwd=src, check=True)
        return archive
    archive = out / f"{name}.tar.gz"
    subprocess.run(
        [*_REPRODUCIBLE_TAR, "-C", str(src), "-czf", str(archive), name],
        check=True,
    )
    return archive


def reference_tree(archive: Path, into: Path) -> Tree:
    """What the reference tool (GNU tar, or unzip for .zip) extracts from ``archive``."""
    into.mkdir(parents=True)
    if archive.suffix == ".zip":
        subprocess.run(["unzip", "-qq", str(archive), "-d", str(into)], check=True)
    else:
        subprocess.run(["tar", "-xf", str(archive), "-C", str(into)], check=True)
    tree = snapshot(into)
    assert tree is not None
    shutil.rmtree(into)
    return tree


def build_corpus(
    work: Path,
    names: Sequence[str],
    *,
    seed: int,
    files: int = 24,
    base_url: str | None = None,
    zip_every: int = 4,
) -> list[Archive]:
    """Archives under ``work``/corpus, their bytes deterministic in ``seed``.

    Every ``zip_every``-th one is a zip; with ``base_url`` every other one is
    added over http (so repairs re-fetch over the loopback too).
    """
    rng = random.Random(seed)
    pool = [rng.randbytes(rng.choice([17, 900, 5000])) for _ in range(12)]
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        src = work / "src" / name
        _write_tree(src / name, rng, pool, files)
        fmt = "zip" if zip_every and i % zip_every == zip_every - 1 else "tar"
        path = _pack(src, name, corpus, fmt)
        data = path.read_bytes()
        source = f"{base_url}/{path.name}" if base_url and i % 2 else str(path)
        tree = reference_tree(path, work / "ref" / name)
        out.append(
            Archive(
                name,
                path,
                source,
                hashlib.sha256(data).hexdigest(),
                blake3.blake3(data).hexdigest(),
                tree,
            )
        )
    return out


class StaticServer:
    """A plain static file server on loopback for the corpus (repairs re-fetch from it)."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


# -- running hutch -----------------------------------------------------------------


def hutch_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")}
    env["HUTCH_HTTP_BACKOFF"] = "0.01"
    env.update(extra)
    return env


@dataclass(frozen=True)
class Ran:
    args: tuple[str, ...]
    pid: int
    rc: int
    out: str
    err: str
    seconds: float
    killed: bool  # a kill -9 from the mix's killer (or the crash harness)
    hung: bool  # did not finish within its timeout (then killed)

    def brief(self) -> str:
        tail = self.err.strip().splitlines()[-3:]
        return f"hutch {' '.join(self.args)} -> {self.rc}: {' | '.join(tail)}"


class Runner:
    """Runs the real `hutch` (python -m hutch) on one store; knows what is running."""

    def __init__(self, store: Path, env: dict[str, str], timeout: float = 90.0) -> None:
        self.store = store
        self.env = env
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: dict[int, tuple[str, subprocess.Popen[str]]] = {}
        self._killed: set[int] = set()

    def cmd(self, *args: str | os.PathLike[str]) -> list[str]:
        return [sys.executable, "-m", "hutch", "--store", str(self.store), *map(str, args)]

    def start(
        self, *args: str | os.PathLike[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.cmd(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, **(env or {})},
        )

    def run(
        self,
        kind: str,
        *args: str | os.PathLike[str],
        env: dict[str, str] | None = None,
        kill_after: float | None = None,
    ) -> Ran:
        """Run one command to its end; ``kill_after`` seconds: SIGKILL it then."""
        start = time.monotonic()
        proc = self.start(*args, env=env)
        with self._lock:
            self._running[proc.pid] = (kind, proc)
        hung = False
        try:
            try:
                out, err = proc.communicate(timeout=kill_after or self.timeout)
            except subprocess.TimeoutExpired:
                if kill_after is not None:
                    self.kill(proc)
                else:
                    hung = True
                    proc.kill()
                out, err = proc.communicate(timeout=self.timeout)
        finally:
            with self._lock:
                del self._running[proc.pid]
                killed = proc.pid in self._killed and proc.returncode == -signal.SIGKILL
                self._killed.discard(proc.pid)
        return Ran(
            tuple(map(str, args)),
            proc.pid,
            proc.returncode,
            out,
            err,
            time.monotonic() - start,
            killed,
            hung,
        )

    def kill(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._killed.add(proc.pid)
        proc.send_signal(signal.SIGKILL)  # a no-op if it has already been reaped

    def kill_random(self, rng: random.Random, kinds: set[str]) -> str | None:
        with self._lock:
            candidates = [(k, p) for k, p in self._running.values() if k in kinds]
        if not candidates:
            return None
        kind, proc = rng.choice(candidates)
        self.kill(proc)
        return kind

    def ok(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None) -> str:
        ran = self.run("check", *args, env=env)
        assert ran.rc == 0, ran.brief()
        return ran.out


def staging_dirs(store: Path) -> list[str]:
    try:
        return sorted(os.listdir(store / "staging"))
    except FileNotFoundError:
        return []


def install_temps(dest: Path) -> list[str]:
    return sorted(n for n in os.listdir(dest.parent) if n.startswith(f".{dest.name}.hutch-tmp-"))


# -- the mix ---------------------------------------------------------------------


@dataclass(frozen=True)
class MixConfig:
    seconds: float = 20.0
    installers: int = 2
    adders: int = 1
    collectors: int = 1  # `hutch gc` loops
    repairers: int = 1  # `hutch verify --repair` loops
    clean_every: float | None = 0.25  # seconds between object deletions; None: no cleaner
    kill_every: float | None = None  # seconds between kill -9s; None: no killer
    stable: int = 4  # artifacts installed throughout, never removed
    churn: int = 4  # artifacts added and removed over and over
    files: int = 24  # files per archive
    seed: int = 1
    command_timeout: float = 90.0


@dataclass
class MixReport:
    seconds: float = 0.0
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    killed: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)  # commands that failed as allowed
    inconsistencies: list[str] = field(default_factory=list)
    cleaned: int = 0  # object files the cleaner deleted
    latency: dict[str, list[float]] = field(default_factory=dict)  # seconds per command
    final: list[str] = field(default_factory=list)  # what the closing checks did

    def total(self) -> int:
        return sum(self.ops.values())

    def summary(self) -> str:
        rate = self.total() / self.seconds if self.seconds else 0.0
        lines = [f"{self.total()} operations in {self.seconds:.1f} s: {rate:.2f} ops/s"]
        lines += [
            f"  {kind:<16} {n:>6}  {n / self.seconds:6.2f}/s  "
            f"median {statistics.median(self.latency[kind]):5.2f} s, "
            f"max {max(self.latency[kind]):5.2f} s"
            for kind, n in sorted(self.ops.items())
        ]
        lines.append(f"  killed (kill -9): {dict(sorted(self.killed.items()))}")
        lines.append(f"  objects deleted by the cleaner: {self.cleaned}")
        lines.append(f"  allowed failures: {len(self.failures)}")
        lines += [f"    {f}" for f in self.failures[:10]]
        lines += [f"  closing check: {c}" for c in self.final]
        lines.append(f"  INCONSISTENCIES: {len(self.inconsistencies)}")
        lines += [f"    {i}" for i in self.inconsistencies]
        return "\n".join(lines)


_PRESENT, _ABSENT, _UNKNOWN = "present", "absent", "unknown"


class _Mix:
    def __init__(self, work: Path, config: MixConfig) -> None:
        self.work = work
        self.config = config
        self.store = work / "store"
        self.runner = Runner(
            self.store, hutch_env(HUTCH_LOCK_TIMEOUT="60"), timeout=config.command_timeout
        )
        self.report = MixReport()
        self._lock = threading.Lock()
        self._cleaned: set[str] = set()  # "ab/cdef…" object paths the cleaner deleted
        self._churn_state: dict[str, str] = {}
        self._deadline = 0.0

    # -- bookkeeping ---------------------------------------------------------------
    def _inconsistent(self, what: str) -> None:
        with self._lock:
            self.report.inconsistencies.append(what)

    def _failed(self, what: str) -> None:
        with self._lock:
            self.report.failures.append(what)

    def _count(self, kind: str, ran: Ran) -> bool:
        """Count ``ran``; True when it completed normally (exit 0)."""
        with self._lock:
            if ran.killed:
                self.report.killed[kind] += 1
                return False
            if ran.rc == 0:
                self.report.ops[kind] += 1
                self.report.latency.setdefault(kind, []).append(ran.seconds)
        if ran.hung:
            self._inconsistent(
                f"hang: {ran.brief()} did not finish in {self.config.command_timeout} s"
            )
        return ran.rc == 0

    # -- setup and run ---------------------------------------------------------------
    def run(self) -> MixReport:
        (self.work / "corpus").mkdir(parents=True, exist_ok=True)
        server = StaticServer(self.work / "corpus")
        try:
            config = self.config
            names = [f"stable{i}" for i in range(config.stable)]
            names += [f"churn{i}" for i in range(config.churn)]
            corpus = build_corpus(
                self.work, names, seed=config.seed, files=config.files, base_url=server.url
            )
            self.stable = corpus[: config.stable]
            self.churn = corpus[config.stable :]
            self.by_id = {a.aid: a for a in corpus}
            for i, a in enumerate(self.stable):
                ran = self.runner.run(
                    "setup", "add", a.source, "--digest", a.pin, "--name", f"s{i}"
                )
                assert ran.rc == 0, ran.brief()
                assert ran.out.strip() == a.aid
            self._churn_state = {a.aid: _ABSENT for a in self.churn}
            self._run_workers()
            self._closing_checks()
        finally:
            server.close()
        return self.report

    def _run_workers(self) -> None:
        config = self.config
        rng = random.Random(config.seed)
        workers: list[tuple[str, Callable[[random.Random], None]]] = []
        workers += [(f"installer{i}", self._installer(i)) for i in range(config.installers)]
        workers += [("adder", self._adder)] * config.adders
        workers += [("collector", self._collector)] * config.collectors
        workers += [("repairer", self._repairer)] * config.repairers
        stop = threading.Event()
        threads = [
            threading.Thread(target=self._guard, args=(name, body, random.Random(rng.random())))
            for name, body in workers
        ]
        side = []
        if config.clean_every is not None:
            side.append(threading.Thread(target=self._cleaner, args=(stop, random.Random(2))))
        if config.kill_every is not None:
            side.append(threading.Thread(target=self._killer, args=(stop, random.Random(3))))
        start = time.monotonic()
        self._deadline = start + config.seconds
        for t in threads + side:
            t.start()
        for t in threads:
            # Every command has its own timeout, so a worker ends by then at the latest.
            t.join(config.seconds + 4 * config.command_timeout)
            if t.is_alive():
                self._inconsistent(f"a worker never finished: {t.name}")
        self.report.seconds = time.monotonic() - start
        stop.set()
        for t in side:
            t.join()

    def _guard(self, name: str, body: Callable[[random.Random], None], rng: random.Random) -> None:
        try:
            while time.monotonic() < self._deadline:
                body(rng)
        except Exception:  # a bug in the harness must show, not hang the test
            self._inconsistent(f"{name} crashed: {traceback.format_exc()}")

    # -- workers -----------------------------------------------------------------------
    def _installer(self, index: int) -> Callable[[random.Random], None]:
        dest = self.work / "dest" / f"i{index}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        current: list[Tree | None] = [None]  # what DEST holds between installs

        def install(rng: random.Random) -> None:
            k = rng.randrange(len(self.stable))
            a = self.stable[k]
            ref = rng.choice([a.aid, a.aid[:12], f"s{k}", a.pin])
            link = rng.choice(["auto", "hardlink", "copy"])
            ran = self.runner.run("install", "install", ref, dest, "--force", "--link", link)
            done = self._count("install", ran)
            got = snapshot(dest)
            if ran.killed:
                # store.md §11: absent, the old tree, or the complete new tree.
                if got != current[0] and got != a.tree:
                    self._inconsistent(
                        f"install killed: {dest} is neither the old nor the new tree: "
                        + describe_difference(got, a.tree)
                    )
                current[0] = got
                return
            if done:
                if got != a.tree:
                    self._inconsistent(
                        f"install {a.name} --link {link} not exact: "
                        + describe_difference(got, a.tree)
                    )
                if install_temps(dest):
                    self._inconsistent(f"install left {install_temps(dest)} beside {dest}")
                current[0] = a.tree
                return
            if ran.rc == 2 and "no artifact" in ran.err:
                self._inconsistent(f"committed artifact lost: {ran.brief()}")
            if got != current[0]:
                self._inconsistent(f"a failed install changed {dest}: {ran.brief()}")
            # store.md §10: damage is healed (a few rounds), and a file deleted
            # between verify and link makes one more; a cleaner that keeps striking
            # the same install may still fail it, and nothing else may.
            if "keep disappearing" in ran.err or "(ENOENT)" in ran.err:
                self._failed(ran.brief())
            else:
                self._inconsistent(f"install failed: {ran.brief()}")

        return install

    def _adder(self, rng: random.Random) -> None:
        a = rng.choice(self.churn)
        state = self._churn_state[a.aid]
        roll = rng.random()
        if roll < 0.15:
            s = rng.choice(self.stable)  # present already: nothing is downloaded
            ran = self.runner.run("add", "add", s.source, "--digest", s.pin)
            if self._count("add", ran) and ran.out.strip() != s.aid:
                self._inconsistent(f"re-add printed {ran.out.strip()}, want {s.aid}")
            elif not ran.killed and ran.rc != 0:
                self._inconsistent(f"re-add of a present artifact failed: {ran.brief()}")
            return
        if state == _ABSENT or (state == _UNKNOWN and roll < 0.6):
            ran = self.runner.run("add", "add", a.source, "--digest", a.pin)
            if self._count("add", ran):
                if ran.out.strip() != a.aid:
                    self._inconsistent(f"add printed {ran.out.strip()}, want {a.aid}")
                self._churn_state[a.aid] = _PRESENT
            elif ran.killed:
                self._churn_state[a.aid] = _UNKNOWN
            else:
                self._inconsistent(f"add failed: {ran.brief()}")
            return
        ran = self.runner.run("rm", "rm", a.aid)
        if self._count("rm", ran):
            self._churn_state[a.aid] = _ABSENT
        elif ran.killed:
            self._churn_state[a.aid] = _UNKNOWN
        elif ran.rc == 2 and state == _UNKNOWN:
            self._churn_state[a.aid] = _ABSENT  # the killed add never committed
        else:
            self._inconsistent(f"rm failed: {ran.brief()}")

    def _collector(self, rng: random.Random) -> None:
        ran = self.runner.run("gc", "gc")
        if not self._count("gc", ran) and not ran.killed:
            self._inconsistent(f"gc failed: {ran.brief()}")
        time.sleep(rng.uniform(0, 0.4))

    def _repairer(self, rng: random.Random) -> None:
        ran = self.runner.run("verify --repair", "verify", "--repair")
        if not self._count("verify --repair", ran) and not ran.killed:
            self._inconsistent(f"verify --repair failed: {ran.brief()}")
        time.sleep(rng.uniform(0.2, 0.8))

    def _cleaner(self, stop: threading.Event, rng: random.Random) -> None:
        """tmpwatch at its worst: deletes a random object file every ``clean_every`` s."""
        assert self.config.clean_every is not None
        objects = self.store / "objects"
        while not stop.wait(self.config.clean_every * rng.uniform(0.5, 1.5)):
            found = [
                f"{d.name}/{f.name}"
                for d in os.scandir(objects)
                if d.is_dir()
                for f in os.scandir(d.path)
            ]
            if not found:
                continue
            victim = rng.choice(found)
            with self._lock:
                self._cleaned.add(victim)  # before the unlink: a racing check must know
            try:
                os.unlink(objects / victim)
            except FileNotFoundError:
                continue
            with self._lock:
                self.report.cleaned += 1

    def _killer(self, stop: threading.Event, rng: random.Random) -> None:
        assert self.config.kill_every is not None
        kinds = {"install", "add", "rm", "gc", "verify --repair"}
        while not stop.wait(self.config.kill_every * rng.uniform(0.5, 1.5)):
            self.runner.kill_random(rng, kinds)

    # -- closing checks ----------------------------------------------------------------
    def _closing_checks(self) -> None:
        """With every worker done and the cleaner stopped: is the store whole?"""
        run = self.runner.run
        note = self.report.final.append
        # The next command recovers what kills left (store.md §6).
        listed = run("check", "ls", "--json")
        if listed.rc != 0:
            self._inconsistent(f"ls failed: {listed.brief()}")
            return
        left = staging_dirs(self.store)
        if left:
            self._inconsistent(f"staging not empty after the next command: {left}")
        ids = {r["id"] for r in json.loads(listed.out)}
        for a in self.stable:
            if a.aid not in ids:
                self._inconsistent(f"committed artifact {a.name} ({a.aid[:12]}) is not listed")
        for a in self.churn:
            state = self._churn_state[a.aid]
            if (state == _PRESENT and a.aid not in ids) or (state == _ABSENT and a.aid in ids):
                self._inconsistent(f"{a.name} should be {state} but ls says otherwise")
        note(f"{len(ids)} artifact(s) listed, staging empty")

        # Damage now is the cleaner's (expected) or gc's (a bug): tell them apart.
        stat = run("check", "verify", "--json")
        damaged = [d for entry in json.loads(stat.out or "[]") for d in entry["damage"]]
        for d in damaged:
            rel = "/".join(Path(d["object"]).parts[-2:])
            if d["problem"] != "missing" or rel not in self._cleaned:
                self._inconsistent(
                    f"{d['path']}: object {rel} {d['problem']} but the cleaner never deleted "
                    "it: something else (gc?) removed a live object"
                )
        note(f"{len(damaged)} damaged file(s), all deleted by the cleaner")
        repaired = run("check", "verify", "--repair")
        if repaired.rc != 0:
            self._inconsistent(f"verify --repair after the run: {repaired.brief()}")
        for step in (("verify", "--full"), ("gc",), ("verify", "--full")):
            ran = run("check", *step)
            if ran.rc != 0:
                self._inconsistent(f"after the run: {ran.brief()}")
        note("verify --repair, verify --full, gc, verify --full: all exit 0")
        # Every artifact listed installs exactly what GNU tar / unzip extract.
        for aid in sorted(ids):
            a = self.by_id[aid]
            dest = self.work / "final" / a.name
            ran = run("check", "install", aid, dest)
            got = snapshot(dest)
            if ran.rc != 0 or got != a.tree:
                self._inconsistent(
                    f"final install of {a.name}: {ran.brief()}; {describe_difference(got, a.tree)}"
                )
        note(f"{len(ids)} artifact(s) installed exactly")


def run_mix(work: Path, config: MixConfig) -> MixReport:
    """Run the mix in ``work`` (a fresh directory) and check the store afterwards."""
    return _Mix(work, config).run()


# -- helpers for the tests -------------------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path / "store", hutch_env())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Archive]:
    return build_corpus(tmp_path_factory.mktemp("corpus"), ["a", "b", "c"], seed=8, files=40)


def wait_stopped(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Wait until ``proc`` stopped itself at its HUTCH_STOP_AT point (state T in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}: {proc.communicate()}"
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the process never reached its stop point")


@contextmanager
def _stopped_at(runner: Runner, point: str, *args: str | os.PathLike[str]) -> Iterator[int]:
    """A real hutch process held at ``point``; resumed (and must succeed) on exit."""
    proc = runner.start(*args, env={"HUTCH_STOP_AT": point})
    try:
        wait_stopped(proc)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


# -- single flight and bounded waits -----------------------------------------------------


def test_n_concurrent_adds_download_once(runner: Runner, corpus: list[Archive]) -> None:
    """store.md §8: N adds of one source at once: one GET from byte 0, the rest wait and reuse."""
    from faultserver import FaultServer, Stall

    a = corpus[0]
    data = a.path.read_bytes()
    n = 6
    with FaultServer() as srv:
        # The first response stalls mid-body for 2 s: every process starts meanwhile.
        url = srv.serve("/a.tar.gz", data, faults=[Stall(at=len(data) // 2, seconds=2.0)])
        procs = [runner.start("add", url, "--digest", a.pin) for _ in range(n)]
        outs = [p.communicate(timeout=120) for p in procs]
        gets = [r for r in srv.requests_for("/a.tar.gz") if r.method == "GET"]
    assert [p.returncode for p in procs] == [0] * n, [e for _, e in outs]
    assert {o.strip() for o, _ in outs} == {a.aid}
    assert len([r for r in gets if r.range is None]) == 1, gets  # one download ...
    assert all(r.range is not None for r in gets[1:])  # ... and its resume after the stall
    log = json.loads(runner.ok("log", "--json", "-n", "100"))
    assert [(r["op"], r["outcome"]) for r in log] == [("add", "committed")]
    assert staging_dirs(runner.store) == []
    tree_dest = runner.store.parent / "dest"
    runner.ok("install", a.aid, tree_dest)
    assert snapshot(tree_dest) == a.tree


def test_lock_timeout_names_the_lock_file_and_its_holder(
    runner: Runner, corpus: list[Archive]
) -> None:
    """store.md §8: a wait is bounded by HUTCH_LOCK_TIMEOUT; exit 6 names the file and holder."""
    a = corpus[0]
    with _stopped_at(runner, "add.fetched", "add", a.path) as holder:
        start = time.monotonic()
        ran = runner.run("add", "add", a.path, env={"HUTCH_LOCK_TIMEOUT": "0.5"})
        took = time.monotonic() - start
        assert ran.rc == 6, ran.brief()
        assert took < 10
        lock_files = list((runner.store / "locks").glob("source-*.lock"))
        assert len(lock_files) == 1
        assert str(lock_files[0]) in ran.err
        assert f"pid {holder}" in ran.err  # the live holder, from the kernel and the file
        assert f"hutch --store {runner.store} add {a.path}" in ran.err  # what the holder does
        assert "HUTCH_LOCK_TIMEOUT" in ran.err  # the hint
        assert "Traceback" not in ran.err
    # Released: the waiter's successor finds the artifact and downloads nothing.
    assert runner.ok("add", a.path).strip() == a.aid


@pytest.mark.parametrize("point", ["add.placing", "add.extracted", "add.published"])
def test_gc_waits_for_an_add_in_flight_and_never_deletes_its_objects(
    runner: Runner, corpus: list[Archive], point: str
) -> None:
    """store.md §8: objects written but not yet committed are safe from gc (gc.lock shared),
    from the first one an extraction writes at its object path to the commit."""
    a, b = corpus[0], corpus[1]
    runner.ok("add", a.path)
    runner.ok("rm", a.aid)  # a's objects are now garbage, some shared with b
    with _stopped_at(runner, point, "add", b.path) as holder:
        published = sorted((runner.store / "objects").rglob("*"))
        ran = runner.run("gc", "gc", env={"HUTCH_LOCK_TIMEOUT": "0.5"})
        assert ran.rc == 6, ran.brief()
        assert str(runner.store / "locks" / "gc.lock") in ran.err
        assert f"pid {holder} (shared)" in ran.err  # shared holders are named by the kernel
        assert sorted((runner.store / "objects").rglob("*")) == published
        waiting = runner.start("gc")  # this one waits for the add to commit
        time.sleep(0.3)
        assert waiting.poll() is None
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    runner.ok("verify", "--full")
    dest = runner.store.parent / "b"
    runner.ok("install", b.aid, dest)
    assert snapshot(dest) == b.tree


def test_damage_appearing_while_install_heals_is_healed_too(
    runner: Runner, corpus: list[Archive], tmp_path: Path
) -> None:
    """store.md §10: a cleaner deleting one object while install heals another must not fail it."""
    from faultserver import FaultServer, Stall

    a = corpus[0]
    data = a.path.read_bytes()
    dest = tmp_path / "dest"
    with FaultServer() as srv:
        url = srv.serve("/a.tar.gz", data)
        runner.ok("add", url, "--digest", a.pin)
        shown = json.loads(runner.ok("show", a.aid, "--json"))
        first, second = sorted({Path(e["object"]) for e in shown["entries"] if "object" in e})[:2]
        first.unlink()
        # The heal's download stalls for a second: the cleaner strikes meanwhile.
        srv.serve("/a.tar.gz", data, faults=[Stall(at=len(data) // 2, seconds=1.5)])
        proc = runner.start("install", a.aid, dest)
        deadline = time.monotonic() + 30
        while len(srv.requests_for("/a.tar.gz")) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second.unlink()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert snapshot(dest) == a.tree


def test_sweep_spares_live_operations_and_reaps_dead_ones(
    runner: Runner, corpus: list[Archive]
) -> None:
    """store.md §6: a sweep removes only directories whose owner is dead, logging each once."""
    a = corpus[2]
    # Stopped with its archive fetched: past that point it holds gc.lock (§8), and gc waits.
    proc = runner.start("add", a.path, env={"HUTCH_STOP_AT": "add.fetched"})
    wait_stopped(proc)
    live = staging_dirs(runner.store)
    assert len(live) == 1
    for _ in range(3):  # writable opens sweep; gc sweeps again
        runner.ok("ls")
        runner.ok("gc")
    assert staging_dirs(runner.store) == live
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    procs = [runner.start("ls") for _ in range(3)]  # three sweepers race for one dead dir
    for p in procs:
        p.communicate(timeout=60)
    assert staging_dirs(runner.store) == []
    log = json.loads(runner.ok("log", "--json"))
    aborted = [r for r in log if r["outcome"] == "aborted"]
    assert len(aborted) == 1, aborted
    assert f"(pid {proc.pid})" in aborted[0]["detail"]
    assert runner.ok("add", a.path).strip() == a.aid


# -- lock semantics in one process and across processes -------------------------------


_HOLD = """
import sys
from pathlib import Path
from hutch.store.lock import FileLock
lock = FileLock(Path(sys.argv[1]), shared=sys.argv[2] == "shared", timeout=0)
print("locked" if lock.try_acquire() else "busy", flush=True)
sys.stdin.read()
"""


@contextmanager
def _other_process(path: Path, *, shared: bool = False) -> Iterator[str]:
    """Another process trying ``path`` (without waiting); yields "locked" or "busy"."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), "shared" if shared else "exclusive"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_locks_are_fcntl_record_locks_on_read_write_descriptors(tmp_path: Path) -> None:
    """store.md §8: O_RDWR lock files and POSIX (fcntl) locks, never flock: /proc/locks says so."""
    from hutch.store.lock import FileLock

    path = tmp_path / "locks" / "x.lock"  # locks/ does not exist yet: created on demand
    with FileLock(path) as lock:
        fd = lock._fd
        assert fd is not None
        flags = int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        assert flags & os.O_ACCMODE == os.O_RDWR
        ino = os.stat(path).st_ino
        mine = [
            line.split()
            for line in Path("/proc/locks").read_text().splitlines()
            if f":{ino} " in line and line.split()[4] == str(os.getpid())
        ]
        assert [m[1:4] for m in mine] == [["POSIX", "ADVISORY", "WRITE"]]
        with _other_process(path) as other:
            assert other == "busy"
        with _other_process(path, shared=True) as other:
            assert other == "busy"
    with FileLock(path, shared=True), _other_process(path, shared=True) as other:
        assert other == "locked"  # shared with shared
    with _other_process(path) as other:
        assert other == "locked"  # released


def test_in_process_contention_never_drops_the_holders_lock(tmp_path: Path) -> None:
    """fcntl(2): POSIX locks are per process and any close() drops them; FileLock guards that."""
    from hutch.store.lock import FileLock

    path = tmp_path / "x.lock"
    outer = FileLock(path).acquire()
    # A second lock of this process must neither "succeed" nor, by closing its
    # descriptor, release the first one.
    assert not FileLock(path, timeout=0).try_acquire()
    with pytest.raises(RuntimeError, match="already locked by this thread"):
        FileLock(path, timeout=5).acquire()
    got: list[float] = []

    def contender() -> None:
        with FileLock(path, timeout=10):
            got.append(time.monotonic())

    thread = threading.Thread(target=contender)
    thread.start()
    time.sleep(0.3)
    assert got == []  # another thread of ours waits like another process would
    with _other_process(path) as other:
        assert other == "busy"  # still held, after all those probes
    released = time.monotonic()
    outer.release()
    thread.join(10)
    assert got
    assert got[0] >= released


def test_lock_timeout_is_bounded_and_validated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store.md §8: HUTCH_LOCK_TIMEOUT bounds the wait; a nonsense value is a usage error."""
    from hutch.store.errors import LockTimeout, UsageError
    from hutch.store.lock import FileLock

    path = tmp_path / "x.lock"
    with _other_process(path) as other:
        assert other == "locked"
        monkeypatch.setenv("HUTCH_LOCK_TIMEOUT", "0.3")
        start = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            FileLock(path).acquire()
        assert 0.3 <= time.monotonic() - start < 3
        assert str(path) in str(info.value)
        assert "exclusive" in str(info.value)
        assert info.value.exit_code == 6
    monkeypatch.setenv("HUTCH_LOCK_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="HUTCH_LOCK_TIMEOUT"):
        FileLock(path)


# -- the whole mix -----------------------------------------------------------------------


def test_mix_of_installs_adds_gc_repair_and_a_cleaner(tmp_path: Path) -> None:
    """store.md §8, §10, §11: everything at once for ~20 s on 2 cores.

    Every install is exact (GNU tar / unzip trees) or, when the cleaner keeps
    striking it, fails leaving DEST as it was; gc never deletes a live object (all
    damage left is the cleaner's); nothing hangs; afterwards verify --repair
    heals and every listed artifact installs exactly.
    """
    report = run_mix(tmp_path, MixConfig(seconds=18))
    print(report.summary())
    assert report.inconsistencies == [], report.summary()
    for kind in ("install", "add", "rm", "gc", "verify --repair"):
        assert report.ops[kind] > 0, report.summary()
    assert report.cleaned > 0
