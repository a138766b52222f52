"""parallel: spread work over the CPUs, with threads (``map_chunks``) or processes (``forked``).

Threads where the work is system calls: link, mkdir and stat release the GIL,
so threads overlap them on several cores, and on a network filesystem they
overlap the round trips. Plain threads started per call (~0.1 ms each), not a
pool: nothing outlives the call, and concurrent.futures (+4 ms of imports,
issue 7) is not needed.

Processes where Python itself is the work: hashing thousands of small files
or parsing an archive costs ~15 µs of interpreter per file, under the GIL, so
two threads are no faster than one (measured: verify --full of 7244 objects,
0.10 s on one thread or two). ``forked`` runs the parts in fork()ed children
(one per core, each taking the next part when done), which inherit
everything already imported and loaded, and pickle only the results back
through a pipe.

``HUTCH_THREADS`` overrides the width (default: the CPUs this process may
run on, at most 8). On NFS, where each call waits for the server, more
threads than cores still help.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar, TypeVar, cast

from hutch.store.errors import HutchError

T = TypeVar("T")
R = TypeVar("R")

_MAX_DEFAULT = 8


class _Process:
    in_worker = False  # True in a child forked by forked()
    # forked(lend=True): the pipe through which it lends its workers the slots
    # of workers that finished when no item was left to start (see spread).
    slots: tuple[int, int] | None = None
    result_fd: int | None = None  # in a child of _fork: the pipe its result goes to
    # The pipe ends this process holds for its children. A child forked after
    # closes them: a sibling holding one would keep that pipe from ending (a
    # lane would wait forever for its next item, or block sending a result
    # nobody reads).
    held: ClassVar[set[int]] = set()


def can_fork() -> bool:
    """Whether forked() would use processes here, not fall back to threads."""
    return threading.active_count() == 1 and hasattr(os, "fork")


def width() -> int:
    """How many threads or processes to spread one piece of work over.

    1 inside a forked worker: the worker is already one of the command's
    HUTCH_THREADS, so it spreads no further (an add of several big zips
    would otherwise fork parts inside every add worker), except onto a slot
    another worker lent it when it ended (spread).
    """
    if _Process.in_worker:
        return 1
    raw = os.environ.get("HUTCH_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return min(int(raw), 64)
    return max(1, min(len(os.sched_getaffinity(0)), _MAX_DEFAULT))


def split(items: Sequence[T], count: int) -> list[Sequence[T]]:
    """``items`` in ``count`` contiguous slices whose lengths differ by at most one."""
    step, extra = divmod(len(items), max(1, count))
    bounds = itertools.accumulate([step + (i < extra) for i in range(max(1, count))], initial=0)
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


def split_weighted(items: Sequence[T], count: int, weights: Sequence[float]) -> list[Sequence[T]]:
    """``items`` in at most ``count`` contiguous slices of about equal total weight.

    For work whose cost varies by item (hashing: a 30 MiB file costs what
    ~2,000 small ones do), where slices of equal length would leave one core
    idle while the other finishes. ``weights[i]`` is the cost of ``items[i]``.
    """
    count = max(1, min(count, len(items)))
    running = list(itertools.accumulate(weights))
    total = running[-1] if running else 0.0
    cuts = [bisect.bisect_left(running, total * j / count) + 1 for j in range(1, count)]
    bounds = [0, *cuts, len(items)]
    return [items[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def map_chunks(
    fn: Callable[[Sequence[T]], R],
    items: Sequence[T],
    *,
    per_thread: int = 1,
    min_chunk: int = 32,
) -> list[R]:
    """``fn`` over contiguous slices of ``items`` on up to width() threads; results in order.

    Contiguous, so that work on neighbours (files of one directory) stays on one
    thread. ``per_thread`` > 1 cuts more slices than threads, taken in turn,
    for work of uneven size. The calling thread works too. Every started slice
    finishes before an error is raised (the first slice's), so nothing is still
    writing when the caller cleans up; after an error no new slice starts.
    """
    threads = width()
    count = min(threads * per_thread, len(items) // min_chunk)
    if threads == 1 or count <= 1:
        return [fn(items)]
    slices = split(items, count)
    results: list[R | None] = [None] * count
    errors: list[BaseException | None] = [None] * count
    # next() on itertools.count is atomic under the GIL: each slice is taken once.
    take = itertools.count()
    failed = threading.Event()

    def work() -> None:
        while not failed.is_set() and (i := next(take)) < count:
            try:
                results[i] = fn(slices[i])
            except BaseException as exc:  # handed to the caller below
                errors[i] = exc
                failed.set()

    helpers = [threading.Thread(target=work, daemon=True) for _ in range(min(threads, count) - 1)]
    for t in helpers:
        t.start()
    try:
        work()
    except BaseException:  # Ctrl-C: the helpers finish their slices and take no more
        failed.set()
        raise
    finally:
        for t in helpers:
            t.join()
    error = next((e for e in errors if e is not None), None)
    if error is not None:
        raise error
    return cast("list[R]", results)  # every slice ran: no None is left


class WorkerDied(HutchError):
    """A forked worker ended without a result: killed, or it crashed."""


def forked(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    running: int | None = None,
    here: bool = False,
    lend: bool = False,
    alone: Callable[[T], str] | None = None,
) -> list[R]:
    """``fn(item)`` for every item in forked children, ``running`` at a time; results in order.

    Each child (a lane) takes one item, sends its result and waits for the
    next item the parent gives it, until none is left: more items than lanes
    cost no fork, no journal open and no exit each (~5 ms of one core
    between two installs, measured). ``fn`` and the items are inherited, not
    pickled; each result (or the exception ``fn`` raised, re-raised here once
    every child has ended) comes back pickled.
    ``here``: this process takes the last item itself once the children for the
    others are started (work cut into one part per core: one fork fewer, and
    no core idles while this process waits).
    ``lend``: once no item is left to start, each lane that ends lends its
    slot to those still running, which spread() takes up: the last, biggest
    item does not run alone on one core while the others idle.
    ``alone``: each item succeeds or fails on its own, for an ``fn`` that returns
    its failure as a value (add_all, install_all: R admits a HutchError). A
    lane that ends without a result (killed), or sends one this process
    cannot unpickle, gives the item it held a WorkerDied, named by
    ``alone(item)``, instead of failing the whole call; the items after it go
    to a new lane.
    Every child dies with this process (a command killed leaves nothing
    writing), and holds no pipe of its siblings (_Process.held): closing a
    lane's pipes ends it, however the parent was interrupted.
    Falls back to threads (map_chunks) where forking is unsafe: with another
    thread alive, fork(2) would copy a lock that thread holds, held forever in
    the child. A child must not touch what cannot cross fork: LMDB environments
    (journal.py reopens its own) and POSIX locks (the child holds none).
    """
    import pickle  # only forking callers pay for these two
    import selectors

    limit = max(1, min(running or width(), len(items)))
    if len(items) <= 1 or limit == 1 or not can_fork():
        parts = map_chunks(
            lambda batch: [fn(x) for x in batch], items, per_thread=len(items), min_chunk=1
        )
        return [r for part in parts for r in part]
    results: list[tuple[str, object] | None] = [None] * len(items)
    statuses: dict[int, int] = {}
    unread: dict[int, str] = {}  # results that came but could not be unpickled
    mine = len(items) - 1 if here else None
    pending = iter(range(len(items) - 1 if here else len(items)))
    lanes: dict[int, _Lane] = {}  # by the read end of its results
    sel = selectors.DefaultSelector()

    def start(i: int) -> None:
        lane = _fork(fn, items, i, lane=True)
        lanes[lane.results] = lane
        sel.register(lane.results, selectors.EVENT_READ)

    def next_for(lane: _Lane) -> None:
        """Give ``lane`` the next item, or end it (and lend its slot) if none is left."""
        nxt = next(pending, None)
        lane.item = nxt
        if nxt is None:
            lane.end()
            lend_slot()
            return
        assert lane.orders is not None  # only end() closes it
        # A lane killed meanwhile (EPIPE) is seen to end just after: its item died with it.
        with contextlib.suppress(BrokenPipeError):
            os.write(lane.orders, nxt.to_bytes(4, "little"))

    def lend_slot() -> None:
        if lent is not None and any(x.item is not None for x in lanes.values()):
            os.write(lent[1], b".")  # a slot for spread() to take

    outer = _Process.slots
    lent = os.pipe() if lend else None
    if lent is not None:
        os.set_blocking(lent[0], False)
        _Process.slots = lent
    try:
        for i in itertools.islice(pending, limit - 1 if here else limit):
            start(i)
        if mine is not None:
            try:
                results[mine] = ("ok", fn(items[mine]))
            except Exception as exc:  # raised below, like a child's
                results[mine] = ("raised", exc)
        while lanes:
            for key, _ in sel.select():
                lane = lanes[int(key.fd)]
                chunk = os.read(lane.results, 1 << 16)
                if chunk:
                    lane.got += chunk
                    while lane.item is not None and (frame := _unframe(lane.got)) is not None:
                        try:
                            # Bytes from our own forked child, through a pipe only it could write.
                            results[lane.item] = pickle.loads(frame)  # noqa: S301
                        except Exception as exc:  # a class that pickles but cannot be rebuilt
                            unread[lane.item] = f"{type(exc).__name__}: {exc}"
                        next_for(lane)
                    continue
                sel.unregister(lane.results)
                del lanes[lane.results]
                lane.close()
                if lane.item is None:
                    _exiting.append(lane.pid)
                    continue
                # It died holding an item (killed; or cut short while sending).
                statuses[lane.item] = os.waitpid(lane.pid, 0)[1]
                nxt = next(pending, None)
                if nxt is not None:
                    start(nxt)
                else:
                    lend_slot()
    finally:
        # Interrupted: every pipe closed first (a lane waiting for its next item
        # sees it end, one still working fails to send: EPIPE), then all reaped.
        for lane in lanes.values():
            lane.close()
        for lane in lanes.values():
            status = os.waitpid(lane.pid, 0)[1]
            if lane.item is not None:
                statuses[lane.item] = status
        sel.close()
        if lent is not None:
            for fd in lent:
                os.close(fd)
            _Process.slots = outer
        _reap()
    out: list[R] = []
    for i, result in enumerate(results):
        if result is None:
            which = alone(items[i]) if alone else f"item {i + 1} of {len(items)}"
            if i in unread:
                why = f"sent a result this process could not read ({unread[i]})"
            else:
                why = f"ended without a result ({_how(statuses.get(i, 0))})"
            died = WorkerDied(f"the worker for {which} {why}", hint="run the command again; "
                              "if it keeps happening, run the items one at a time")  # fmt: skip
            if alone is None:
                raise died
            out.append(cast("R", died))
            continue
        kind, value = result
        if kind == "raised":
            raise cast("BaseException", value)
        out.append(cast("R", value))
    return out


class _Lane:
    """A forked child as its parent sees it: where its results come from, where
    its next item goes (closed: no next item), and which item it holds (None:
    told to end)."""

    def __init__(self, pid: int, results: int, orders: int | None, item: int) -> None:
        self.pid = pid
        self.results = results
        self.orders = orders
        self.item: int | None = item
        self.got = bytearray()
        _Process.held.update(fd for fd in (results, orders) if fd is not None)

    def end(self) -> None:
        """No next item: the lane sees its orders end, and exits."""
        if self.orders is not None:
            _Process.held.discard(self.orders)
            os.close(self.orders)
            self.orders = None

    def close(self) -> None:
        self.end()
        if self.results >= 0:
            _Process.held.discard(self.results)
            os.close(self.results)
            self.results = -1


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(8, "little") + payload


def _unframe(got: bytearray) -> bytes | None:
    """The first whole frame in ``got``, taken off it; None until one has arrived."""
    if len(got) < 8:
        return None
    end = 8 + int.from_bytes(got[:8], "little")
    if len(got) < end:
        return None
    frame = bytes(got[8:end])
    del got[:end]
    return frame


def _fork(
    fn: Callable[[T], R],
    items: Sequence[T],
    first: int,
    *,
    lane: bool = False,
    helper: bool = False,
) -> _Lane:
    """A child computing ``fn(items[first])`` and sending it, pickled and framed,
    through a pipe. ``lane``: then it waits for the index of the next item to
    compute, sent by the parent through a second pipe, until that pipe ends.

    Every child dies with the process that forked it (a command or a worker
    killed must not leave children writing into a store, or publishing a
    tree, that nothing guards any more). ``helper`` (spread): the child runs on
    a lent slot inside a worker, and gives the slot back itself once its work
    is done, before it sends the result.
    """
    import pickle

    parent = os.getpid()
    r, w = os.pipe()
    orders = os.pipe() if lane else None
    try:
        pid = os.fork()
    except OSError:
        for fd in (r, w, *(orders or ())):
            os.close(fd)
        raise
    if pid:
        os.close(w)
        if orders is None:
            return _Lane(pid, r, None, first)
        os.close(orders[0])
        return _Lane(pid, r, orders[1], first)
    # The child: run, send, and leave without running any cleanup.
    code = 1  # until every result is sent
    try:
        _Process.in_worker = True
        os.close(r)
        if orders is not None:
            os.close(orders[1])
        for fd in _Process.held:  # its siblings' pipes
            os.close(fd)
        _Process.held = set()
        _die_with(parent)
        if helper and _Process.result_fd is not None:
            # The worker's own result pipe: held open here, the worker's
            # parent would not see it end until this helper did.
            os.close(_Process.result_fd)
        _Process.result_fd = w
        i: int | None = first
        while i is not None:
            try:
                payload = pickle.dumps(("ok", fn(items[i])))
            except BaseException as exc:  # handed to the parent
                try:
                    payload = pickle.dumps(("raised", exc))
                except Exception:  # an unpicklable error must still be said
                    text = f"{type(exc).__name__}: {exc}"
                    payload = pickle.dumps(("raised", HutchError(text)))
            if helper:
                _give_back()
            view = memoryview(_frame(payload))
            while view:
                view = view[os.write(w, view) :]
            i = None if orders is None else _next_order(orders[0])
        # The parent sees the end now, not after this process's memory is
        # torn down (~1-2 ms): it reaps it later.
        os.close(w)
        code = 0
    finally:
        # Whatever happens (the parent gone: EPIPE; Ctrl-C while sending),
        # the child never returns into the parent's copied stack, where
        # it would run the parent's cleanup and go on with its work.
        os._exit(code)


def _next_order(fd: int) -> int | None:
    """The index of the next item the parent gives, or None once it closes the pipe."""
    got = b""
    while len(got) < 4:
        chunk = os.read(fd, 4 - len(got))
        if not chunk:
            return None
        got += chunk
    return int.from_bytes(got, "little")


def spread(
    here: Callable[[range], R],
    there: Callable[[range], T],
    count: int,
    weights: Sequence[float],
    *,
    step: int = 64,
    least: float = 0.0,
    before: Callable[[int], None] | None = None,
) -> tuple[list[R], list[T]]:
    """Items ``range(count)`` in order, by ``here`` in this process, ``step`` at a time;
    whenever a slot is lent (forked(lend=True)), the back half (by weight) of
    what is left goes to a forked child that runs ``there`` on it.

    For the one item of a forked() worker that turns out to be big (a zip of
    thousands of members): alone at the end, it would hold one core while the
    others idle. Only a slot freed by a finished worker is taken, so the
    command runs no more processes than forked() runs workers (a helper gives
    its slot back as soon as its part is done, and dies with the worker).

    Returns the results of ``here`` (covering the front of the range, in
    order) and of ``there`` (the rest, in order); every child has ended before
    this returns or raises. A remainder costing less than twice ``least``
    (the weights' unit) is not split. ``before(cut)`` runs here just before a
    helper is forked for ``range(cut, ...)``: what that part needs from the
    front (an install's directories) is made while nothing else runs.
    """
    total = list(itertools.accumulate(weights, initial=0.0))
    mine: list[R] = []
    helpers: list[_Lane] = []  # each taking the range after the next one's
    i, end = 0, count
    error: BaseException | None = None
    try:
        while i < end:
            if total[end] - total[i] >= 2 * least and end - i > 2 * step and _borrow():
                half = (total[i] + total[end]) / 2
                cut = max(i + step, min(bisect.bisect_left(total, half), end - 1))
                if before is not None:
                    try:
                        before(cut)
                    except BaseException:
                        _give_back()
                        raise
                try:
                    helpers.append(_fork(there, [range(cut, end)], 0, helper=True))
                    end = cut
                except OSError:
                    _give_back()
            j = min(i + step, end)
            mine.append(here(range(i, j)))
            i = j
    except BaseException as exc:  # raised once every helper has ended
        error = exc
    theirs, failure = _collect(reversed(helpers))
    error = error or failure
    if error is not None:
        raise error
    return mine, cast("list[T]", theirs)


def _collect(helpers: Iterable[_Lane]) -> tuple[list[object], BaseException | None]:
    """Each helper's result in turn, and the first error; every helper has ended on return."""
    import pickle

    theirs: list[object] = []
    error: BaseException | None = None
    left = list(helpers)
    try:
        while left:
            helper = left[0]
            while chunk := os.read(helper.results, 1 << 16):
                helper.got += chunk
            helper.close()
            left.pop(0)
            frame = _unframe(helper.got)
            if frame is None:  # cut short: it died, most likely before giving its slot back
                _give_back()
                status = os.waitpid(helper.pid, 0)[1]
                error = error or WorkerDied(f"a helper ended without a result ({_how(status)})")
                continue
            _exiting.append(helper.pid)
            try:
                # Bytes from our own forked child, through a pipe only it could write.
                kind, value = pickle.loads(frame)  # noqa: S301
            except Exception as exc:  # a class that pickles but cannot be rebuilt
                what = f"{type(exc).__name__}: {exc}"
                error = error or WorkerDied(
                    f"a helper sent a result this process could not read ({what})"
                )
                continue
            if kind == "raised":
                error = error or cast("BaseException", value)
            else:
                theirs.append(value)
    finally:
        for helper in left:  # interrupted (Ctrl-C): let them end, then reap them
            helper.close()
            os.waitpid(helper.pid, 0)
        _reap()
    return theirs, error


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when ``parent`` ends (Linux; elsewhere a no-op)."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (AttributeError, OSError):
        return
    if os.getppid() != parent:  # it ended before the request was made
        os._exit(1)


def _borrow() -> bool:
    """Take a slot the forked() parent lent, if one is free (never waits)."""
    if _Process.slots is None or not _Process.in_worker:
        return False
    try:
        return os.read(_Process.slots[0], 1) == b"."
    except BlockingIOError:
        return False


def _give_back() -> None:
    if _Process.slots is not None:
        os.write(_Process.slots[1], b".")


# Children that sent their result and were still exiting when it arrived.
_exiting: list[int] = []


def _reap(*, block: bool = False) -> None:
    """Reap the children in _exiting that have ended (``block``: all of them, waiting)."""
    for pid in list(_exiting):
        try:
            ended = os.waitpid(pid, 0 if block else os.WNOHANG)[0] != 0
        except ChildProcessError:
            ended = True
        if ended:
            _exiting.remove(pid)


# And all of them before this process exits: reaped children count in its CPU
# time (wait4's rusage, as the benchmark reads it), and none is left to init.
atexit.register(_reap, block=True)


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by signal {sig}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
