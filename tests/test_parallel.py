"""Threads and forked workers (store/parallel.py), and what must hold when they share a store:
the journal from several threads (store.md §5), gc.lock shared by threads (store.md §8),
errors that cross from a worker with their whole cause chain (cli.md §Errors)."""

from __future__ import annotations

import errno
import functools
import itertools
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hutch.store import journal as journal_mod
from hutch.store import parallel
from hutch.store.errors import DigestMismatch, ForeignCause, StoreError, store_error
from hutch.store.fsutil import current_umask
from hutch.store.journal import Journal, LogRecord, Txn
from hutch.store.lock import FileLock, joint_shared
from hypothesis import given
from hypothesis import strategies as st


@pytest.fixture(autouse=True)
def _no_stray_threads(lone_thread: None) -> None:
    """These tests fork as a command does (conftest.lone_thread)."""


def test_map_chunks_keeps_order_and_covers_every_item(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_THREADS", "4")
    items = list(range(1000))
    seen: list[int] = []
    lock = threading.Lock()

    def square(batch: Sequence[int]) -> list[int]:
        with lock:
            seen.extend(batch)
        return [x * x for x in batch]

    parts = parallel.map_chunks(square, items, per_thread=3)
    assert len(parts) == 12
    assert [x for part in parts for x in part] == [x * x for x in items]
    assert sorted(seen) == items


def test_map_chunks_raises_after_every_started_slice_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failing slice must not leave another still writing when the caller cleans up."""
    monkeypatch.setenv("HUTCH_THREADS", "2")
    finished: list[int] = []

    def work(batch: Sequence[int]) -> None:
        if batch[0] == 50:
            time.sleep(0.05)
            raise OSError(errno.ENOSPC, "No space left on device")
        time.sleep(0.3)
        finished.append(batch[0])

    with pytest.raises(OSError, match="No space"):
        parallel.map_chunks(work, list(range(100)), min_chunk=50)
    assert finished == [0]  # the slice that was running when the other failed


def test_map_chunks_with_one_thread_runs_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_THREADS", "1")
    here = threading.get_ident()
    assert parallel.map_chunks(lambda _: threading.get_ident(), list(range(500))) == [here]


@given(
    st.lists(st.integers(min_value=1, max_value=10_000), max_size=200),
    st.integers(min_value=1, max_value=9),
)
def test_split_weighted_covers_in_order_and_balances(weights: list[int], count: int) -> None:
    """verify --full's parts: contiguous, in order, none empty, none much over its share."""
    items = list(range(len(weights)))
    parts = parallel.split_weighted(items, count, weights)
    assert [x for part in parts for x in part] == items
    assert len(parts) <= count
    assert all(parts)
    if weights:
        # Each part stops at the first item that reaches its share: at most one item over.
        share = sum(weights) / min(count, len(weights))
        assert all(sum(weights[i] for i in part) <= share + max(weights) for part in parts)


def test_split_weighted_puts_a_heavy_item_alone() -> None:
    parts = parallel.split_weighted(list("abcdef"), 2, [1, 1, 100, 1, 1, 1])
    assert [list(p) for p in parts] == [["a", "b", "c"], ["d", "e", "f"]]


def test_forked_runs_in_children_and_returns_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_THREADS", "2")
    me = os.getpid()
    got = parallel.forked(lambda x: (x * 2, os.getpid()), list(range(5)))
    assert [v for v, _ in got] == [0, 2, 4, 6, 8]
    assert all(pid != me for _, pid in got)
    assert len({pid for _, pid in got}) == 2  # two lanes take the five items between them


def test_forked_children_are_reaped_once_they_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that sent its result is reaped after it exits, without forked() waiting for it."""
    monkeypatch.setenv("HUTCH_THREADS", "3")
    assert parallel.forked(functools.partial(pow, 2), [1, 2, 3, 4]) == [2, 4, 8, 16]
    deadline = time.monotonic() + 10
    while parallel._exiting and time.monotonic() < deadline:
        time.sleep(0.01)
        parallel._reap()
    assert parallel._exiting == []
    with pytest.raises(ChildProcessError):  # no zombie left behind
        os.waitpid(-1, os.WNOHANG)


def test_a_child_that_cannot_send_its_result_still_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child whose send fails never returns into the parent's copied stack."""
    monkeypatch.setenv("HUTCH_THREADS", "2")
    me = os.getpid()

    def shut(x: int) -> int:
        if os.getpid() != me:
            os.closerange(3, 65536)  # its pipe too: the result cannot be sent
        return x

    with pytest.raises(parallel.WorkerDied, match="exit status 1"):
        parallel.forked(shut, [1, 2])
    assert os.getpid() == me


def test_a_worker_spreads_no_further(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.md HUTCH_THREADS: work inside a forked worker is not cut again."""
    monkeypatch.setenv("HUTCH_THREADS", "4")
    assert parallel.forked(lambda _: parallel.width(), [0, 0, 0]) == [1, 1, 1]
    assert parallel.width() == 4


def _spread_worker(item: str, log: Path) -> tuple[list[int], list[int], int]:
    """A forked worker: "short" ends at once; "long" spreads 3000 items, 8 at a time,
    each chunk taking a millisecond, and logs when each of its helpers ran."""
    if item == "short":
        return [], [], 0

    def here(r: range) -> list[int]:
        time.sleep(0.001)
        return list(r)

    def there(r: range) -> list[int]:
        start = time.monotonic()
        time.sleep(0.05)
        with log.open("a") as f:
            f.write(f"{os.getpid()} {start} {time.monotonic()}\n")
        return list(r)

    def before(cut: int) -> None:
        with log.open("a") as f:
            f.write(f"cut {cut}\n")

    mine, theirs = parallel.spread(here, there, 3000, [1.0] * 3000, step=8, before=before)
    return [x for part in mine for x in part], [x for part in theirs for x in part], os.getpid()


def test_spread_takes_up_a_slot_a_finished_worker_lends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """cli.md HUTCH_THREADS, extract.md §7: once no item is left to start, the slot of a
    worker that ends goes to one still running, which hands the back half of what it has
    left to a helper; every item is done once, in order, and never more processes run
    than workers (one slot lent: its helpers run one at a time)."""
    monkeypatch.setenv("HUTCH_THREADS", "2")
    log = tmp_path / "helpers"
    got = parallel.forked(
        functools.partial(_spread_worker, log=log), ["long", "short"], running=2, lend=True
    )
    mine, theirs, worker = got[0]
    assert mine + theirs == list(range(3000))
    assert theirs, "the lent slot was not taken"
    assert mine, "the worker gave all of its work away"
    lines = log.read_text().splitlines()
    # before(cut) ran in the worker ahead of each helper, which then took range(cut, ...).
    cuts = [int(line.split()[1]) for line in lines if line.startswith("cut ")]
    assert cuts
    assert cuts == sorted(cuts, reverse=True)
    assert cuts[-1] == len(mine)
    ran = [line.split() for line in lines if not line.startswith("cut ")]
    assert all(int(pid) not in (worker, os.getpid()) for pid, _, _ in ran)
    spans = sorted((float(a), float(b)) for _, a, b in ran)
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))


def test_spread_splits_nothing_without_a_lent_slot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without lend (or outside a worker), spread runs everything in this process."""
    monkeypatch.setenv("HUTCH_THREADS", "2")
    log = tmp_path / "helpers"
    got = parallel.forked(functools.partial(_spread_worker, log=log), ["long", "short"])
    assert got[0][:2] == (list(range(3000)), [])
    mine, theirs = parallel.spread(list, list, 100, [1.0] * 100, step=8)
    assert [x for part in mine for x in part] == list(range(100))
    assert theirs == []
    assert not log.exists()


def test_spread_raises_a_helpers_error_after_every_helper_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error in a helper is raised by the worker, with its class, once all have ended."""
    monkeypatch.setenv("HUTCH_THREADS", "2")

    def work(item: str) -> int:
        if item == "short":
            return 0

        def there(r: range) -> list[int]:
            raise StoreError("disk on fire", path="/x", op="write blob")

        def here(r: range) -> list[int]:
            time.sleep(0.001)
            return list(r)

        parallel.spread(here, there, 3000, [1.0] * 3000, step=8)
        return 1

    with pytest.raises(StoreError, match="disk on fire"):
        parallel.forked(work, ["long", "short"], running=2, lend=True)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_a_helper_dies_with_its_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A worker killed (the OOM killer picks the big one) takes its helper with it: nothing
    goes on writing into a store that no live process guards any more."""
    monkeypatch.setenv("HUTCH_THREADS", "2")
    log = tmp_path / "helper"

    me = os.getpid()

    def work(item: str) -> int:
        if item == "short":
            return 0

        def there(r: range) -> list[int]:
            log.write_text(str(os.getpid()))
            time.sleep(30)
            return list(r)

        def here(r: range) -> list[int]:
            time.sleep(0.001)
            if os.getpid() != me and log.exists() and log.read_text():
                os.kill(os.getpid(), signal.SIGKILL)  # the worker, never this test process
            return list(r)

        parallel.spread(here, there, 100_000, [1.0] * 100_000, step=8)
        return 1

    start = time.monotonic()
    with pytest.raises(parallel.WorkerDied, match="killed by signal 9"):
        parallel.forked(work, ["long", "short"], running=2, lend=True)
    assert time.monotonic() - start < 10  # the helper holds no pipe of the worker's open
    helper = int(log.read_text())
    deadline = time.monotonic() + 10
    while not _gone(helper) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(helper)


def test_forked_here_takes_the_last_item_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_THREADS", "2")
    me = os.getpid()
    got = parallel.forked(lambda x: (x, os.getpid()), [0, 1, 2], here=True)
    assert [v for v, _ in got] == [0, 1, 2]
    assert got[2][1] == me
    assert me not in (got[0][1], got[1][1])


def test_forked_error_keeps_its_class_fields_and_os_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.md §Errors: an error from a worker still prints every cause down to the errno."""
    monkeypatch.setenv("HUTCH_THREADS", "2")

    def fail(i: int) -> int:
        if i == 1:
            try:
                raise OSError(errno.ENOSPC, "No space left on device", "/s/objects/ab")
            except OSError as exc:
                raise store_error("publish object", "/s/objects/ab", exc) from exc
        if i == 2:
            try:
                raise _Unpicklable("a requests error holding a socket")
            except _Unpicklable as exc:
                raise DigestMismatch("u", algo="sha256", expected="a", got="b") from exc
        return i

    with pytest.raises(StoreError) as info:
        parallel.forked(fail, [0, 1, 2])
    exc = info.value
    assert exc.errno == errno.ENOSPC
    assert exc.path == "/s/objects/ab"
    assert exc.exit_code == 6
    assert isinstance(exc.__cause__, OSError)
    assert exc.__cause__.errno == errno.ENOSPC
    assert exc.__cause__.filename == "/s/objects/ab"


def test_an_error_with_a_foreign_cause_crosses_as_text() -> None:
    import pickle

    try:
        try:
            raise _Unpicklable("connection reset")
        except _Unpicklable as inner:
            raise DigestMismatch("u", algo="sha256", expected="a", got="b") from inner
    except DigestMismatch as exc:
        back = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    assert isinstance(back, DigestMismatch)
    assert (back.algo, back.expected, back.got) == ("sha256", "a", "b")
    assert isinstance(back.__cause__, ForeignCause)
    assert str(back.__cause__) == "_Unpicklable: connection reset"


class _Unpicklable(Exception):
    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("cannot pickle")


def test_a_worker_that_dies_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_THREADS", "2")

    def die(i: int) -> int:
        if i == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return i

    with pytest.raises(parallel.WorkerDied, match=r"item 2 of 3 .*killed by signal 9"):
        parallel.forked(die, [0, 1, 2])


def test_a_new_lane_takes_the_items_after_one_that_killed_its_lane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lane killed holding an item fails that item alone (``alone``); the items still
    to start go to a new lane, and the other lane goes on taking them."""
    monkeypatch.setenv("HUTCH_THREADS", "2")

    def work(i: int) -> tuple[int, int]:
        if i == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.01)
        return i, os.getpid()

    got = parallel.forked(work, list(range(6)), alone=lambda i: f"number {i}")
    died = got[1]
    assert isinstance(died, parallel.WorkerDied)
    assert "the worker for number 1 ended without a result (killed by signal 9)" in str(died)
    done = [g for k, g in enumerate(got) if k != 1]
    assert [i for i, _ in done] == [0, 2, 3, 4, 5]
    assert len({pid for _, pid in done}) == 2  # the first lane and the one after the killed


class _Unreadable:
    """A result that pickles in the child and raises when the parent unpickles it."""

    def __init__(self, parent: int) -> None:
        self.parent = parent

    def __reduce__(self) -> tuple[object, ...]:
        return (_read_back, (self.parent,))


def _read_back(parent: int) -> None:
    if os.getpid() == parent:
        raise RuntimeError("cannot read this result")


@pytest.mark.timeout(30)
def test_a_result_that_cannot_be_read_fails_the_call_once_every_lane_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without ``alone``, a result the parent cannot unpickle fails the whole call,
    naming the item and the cause, once the other items are done and every lane ended."""
    monkeypatch.setenv("HUTCH_THREADS", "2")
    me = os.getpid()

    def work(i: int) -> object:
        if i == 0:
            return _Unreadable(me)
        time.sleep(0.2)
        return i

    with pytest.raises(
        parallel.WorkerDied,
        match=r"item 1 of 4 sent a result this process could not read "
        r"\(RuntimeError: cannot read this result\)",
    ):
        parallel.forked(work, list(range(4)))
    parallel._reap(block=True)
    with pytest.raises(ChildProcessError):  # every lane has ended and been reaped
        os.waitpid(-1, os.WNOHANG)


@pytest.mark.timeout(30)
def test_the_parent_interrupted_alone_ends_every_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C reaching the parent alone (`kill -INT`), while one lane still works on a
    result bigger than a pipe holds and another waits for its next item: both end (no
    lane holds a sibling's pipe open), the interrupt is raised, nothing is left."""
    monkeypatch.setenv("HUTCH_THREADS", "2")

    def work(i: int) -> object:
        if i == 0:
            time.sleep(1.5)  # still working when the parent is interrupted
            return b"x" * 300_000
        if i == 1:
            # Once the parent waits for results: a signal during fork()'s own
            # hooks is swallowed by Python ("Exception ignored in _releaseLock").
            time.sleep(0.3)
            os.kill(os.getppid(), signal.SIGINT)
        return i

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        parallel.forked(work, list(range(40)))
    assert time.monotonic() - start < 10
    parallel._reap(block=True)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


class _TwoArgs(Exception):
    """Pickles, and cannot be rebuilt from its args (its __init__ takes two)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}{b}")


def test_a_result_that_cannot_be_read_fails_its_item_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A result the parent cannot unpickle fails that item, named with the cause; the
    other items' results are kept (``alone``)."""
    monkeypatch.setenv("HUTCH_THREADS", "2")

    def work(i: int) -> int:
        if i == 1:
            raise _TwoArgs("x", "y")
        return i

    got = parallel.forked(work, [0, 1, 2], alone=lambda i: f"number {i}")
    assert got[0] == 0
    assert got[2] == 2
    assert isinstance(got[1], parallel.WorkerDied)
    assert "the worker for number 1 sent a result this process could not read (TypeError" in str(
        got[1]
    )


def test_forked_falls_back_to_threads_when_another_thread_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fork(2) with another thread alive could copy a held lock: threads instead."""
    monkeypatch.setenv("HUTCH_THREADS", "2")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert parallel.forked(lambda _: os.getpid(), [0, 1, 2]) == [os.getpid()] * 3
    finally:
        stop.set()
        other.join()


def test_a_forked_child_opens_the_journal_itself(tmp_path: Path) -> None:
    """store.md §5: a child never uses the parent's LMDB environment, and can open its own."""
    journal = Journal.open(tmp_path / "journal")
    journal.write(lambda txn: txn.append_log(LogRecord.now("test", "committed")))

    def child(_: int) -> int:
        with pytest.raises(RuntimeError, match="before fork"):
            journal.write(lambda _: None)
        own = Journal.open(tmp_path / "journal")
        return own.write(lambda txn: txn.append_log(LogRecord.now("child", "committed")))

    seqs = parallel.forked(child, [0, 1])
    assert sorted(seqs) == [2, 3]
    with journal.read() as txn:
        assert [r.op for r in txn.log()] == ["test", "child", "child"]


def test_journal_writes_from_threads_while_the_map_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store.md §5: MapFullError grows the map while other threads read: nothing is lost."""
    monkeypatch.setattr(journal_mod, "_INITIAL_MAP", 64 << 10)
    journal = Journal.open(tmp_path / "journal")
    blob = os.urandom(2048).hex()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(60):
                journal.write(functools.partial(_put_name, name=f"w{n}-{i}", value=blob))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(300):
                with journal.read() as txn:
                    txn.name("w0-0")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with journal.read() as txn:
        assert all(txn.name(f"w{n}-{i}") == blob for n in range(3) for i in range(60))
    assert journal._env.info()["map_size"] > 64 << 10


def _put_name(txn: Txn, *, name: str, value: str) -> None:
    txn.put_name(name, value)


def test_joint_shared_lock_is_held_by_threads_together(tmp_path: Path) -> None:
    """store.md §8: two adding threads share gc.lock; an exclusive holder waits for both."""
    path = tmp_path / "gc.lock"
    inside = threading.Barrier(2, timeout=5)
    leave = threading.Event()

    def hold() -> None:
        with joint_shared(path, mode=0o644):
            inside.wait()  # both threads are in at once: neither waited for the other
            leave.wait(5)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    probe = os.fork()
    if probe == 0:  # another process: it must not get the lock exclusively now
        os._exit(0 if not FileLock(path, timeout=0).try_acquire() else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(probe, 0)[1]) == 0
    leave.set()
    for t in threads:
        t.join()
    probe = os.fork()
    if probe == 0:
        os._exit(0 if FileLock(path, timeout=0).try_acquire() else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(probe, 0)[1]) == 0


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o000])
def test_current_umask_reads_without_changing(mask: int) -> None:
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        assert current_umask() == mask
    finally:
        os.umask(old)
