"""One queue for the CPU-heavy work of a server process (Apply's measurement, benchmarks, healing, sensitivity,
spectra of a new model): at most `workers` jobs run at a time (1 on a 2-core machine: COMPRESS_WORKERS), the others
wait in order with their position known and can be cancelled. A long job (healing, a sweep) calls yield_() between
its steps: if anyone waits it goes to the end of the line, so an Apply waits for one step, not a whole run, and two
long jobs take turns; no latency is ever timed while other work of this server runs. A job belongs to its owner (a
browser session); owners that stop sending heartbeats have their long jobs cancelled after a grace period. Every job is
given to the queue's `log` (a callable taking one plain dict row) when it is given, started and ended: the app wires
the results store's record there (store.py), so a restarted server shows the ones it lost as interrupted; the queue
never opens a store. No streamlit here: the pages only submit, poll and show.
"""
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from . import membound
from .cancel import Cancelled, checkpoint, running
from ..errors import CompressError
from .settings import number

_LOG = logging.getLogger("compress.serve.jobs")

LONG = {"heal", "sweep", "spectra", "sensitivity"}  # kinds that yield between their steps (trials, layers: cancel.turn)
#  instead of holding the queue
HOLD = {"heal", "sweep"}  # long kinds that may run for an hour: at most `long` of them started at once
TAB_BOUND = {"heal"}  # long kinds cancelled when their tab is gone (a sweep belongs to its study and goes on)
GRACE_S = 120.0  # an owner silent this long has its tab-bound jobs cancelled (a closed tab sends no heartbeat)


@dataclass(eq=False)
class Job:
    id: int
    kind: str
    owner: str
    label: str
    fn: Callable  # fn(job) -> result; may write job.progress; the library's checkpoints see job.cancel
    state: str = "queued"  # queued | running | done | failed | cancelled | interrupted
    progress: dict = field(default_factory=dict)
    result: object = None
    error: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)  # drop the work at the next checkpoint
    stop: threading.Event = field(default_factory=threading.Event)  # end early and keep what is done (healing)
    ended: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.time)
    started: float | None = None  # when it first held a slot (started - created: how long it waited in line)
    limit_s: float | None = None  # cancelled (with a one-line error) when it has run this long since it started
    checks: int = 0  # the cancel checkpoints it called (cancel.py): after a Cancel, one more at most
    turn: Callable | None = None  # a long job's yield_ (cancel.turn calls it between the units of its work)


class Queue:
    """Every job has a thread of its own, but only `workers` of them hold a slot (run) at a time; the others wait in
    line (FIFO). A long job gives its slot back between steps when anyone waits and goes to the end of the line, so
    short jobs and other long jobs take turns with it; at most `long` healings and sweeps (HOLD: each holds a model for
    up to an hour) are started at once, the others wait for one to end."""

    def __init__(self, workers: int = 1, log=None, keep: int = 200, long: int = 2):
        self.workers, self.log, self.keep, self.long = max(1, workers), log, keep, max(1, long)
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()  # jobs waiting for a slot, in order (new ones and yielding long ones)
        self._running: set[Job] = set()      # jobs holding a slot
        self._started: set[Job] = set()      # long jobs started and not ended (running or yielding)
        self._jobs: dict[int, Job] = {}  # the last `keep` jobs, by id
        self._beats: dict[str, float] = {}
        self._ids = itertools.count(1)

    def submit(self, kind: str, fn: Callable, owner: str = "", label: str = "", limit_s: float | None = None) -> Job:
        job = Job(next(self._ids), kind, owner, label, fn, limit_s=limit_s)
        if kind in LONG:
            job.turn = lambda: self.yield_(job)
        with self._cv:
            self._waiting.append(job)
            self._jobs[job.id] = job
            self._beat(owner)
            live = self._live()  # a job is forgotten once it ended, never while it waits or runs (_reap needs it)
            for old in [j for j in self._jobs.values() if j not in live][:max(0, len(self._jobs) - self.keep)]:
                del self._jobs[old.id]
        self._record(job)
        threading.Thread(target=self._run, args=(job,), daemon=True, name=f"compress-job-{job.id}").start()
        return job

    def position(self, job: Job) -> int:
        """1, 2, ... while waiting to start; 0 once it runs (or yields between its steps) or has ended."""
        with self._cv:
            return next((i + 1 for i, j in enumerate(self._waiting) if j is job), 0) if job.state == "queued" else 0

    def cancel(self, job: Job) -> None:
        job.cancel.set()
        with self._cv:
            if job.state == "queued" and job in self._waiting:
                self._waiting.remove(job)
                self._end(job, "cancelled")
            self._cv.notify_all()

    def wait(self, job: Job, timeout: float | None = None) -> bool:
        return job.ended.wait(timeout)

    def adopt(self, job: Job, owner: str) -> None:
        """The job now belongs to `owner` (a reload of the tab that started it: a new session), who keeps it alive."""
        with self._cv:
            job.owner = owner
            self._beat(owner)

    def heartbeat(self, owner: str) -> None:
        with self._cv:
            self._beat(owner)

    def _beat(self, owner: str) -> None:  # (holding the lock) newest last; the oldest idle owners beyond `keep` go
        self._beats.pop(owner, None)
        self._beats[owner] = time.time()
        if len(self._beats) > self.keep:
            busy = {j.owner for j in self._live()}
            for old in [o for o in self._beats if o not in busy][:len(self._beats) - self.keep]:
                del self._beats[old]

    def _live(self) -> set[Job]:  # (holding the lock) jobs waiting, running or between the steps of a long run
        return {*self._waiting, *self._running, *self._started}

    def jobs(self, owner: str | None = None) -> list[Job]:
        with self._cv:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def busy(self) -> bool:
        with self._cv:
            return bool(self._waiting or self._running)

    def yield_(self, job: Job) -> None:
        """Called by a long job between its steps: if anyone waits, give the slot to them and queue again. A checkpoint
        too: a job cancelled (or whose tab closed) ends here, without waiting for its turn."""
        self._reap()
        with self._cv:
            others = any(self._eligible(j) for j in self._waiting)
            if others:
                self._running.discard(job)
                self._waiting.append(job)
                self._cv.notify_all()
        if others:
            self._acquire(job)
        checkpoint()

    def _eligible(self, job: Job) -> bool:  # (holding the lock) may it take a free slot now?
        return job.kind not in HOLD or job in self._started or sum(j.kind in HOLD for j in self._started) < self.long

    def _acquire(self, job: Job) -> bool:
        """Wait for this job's turn; False if it was cancelled while waiting to start."""
        with self._cv:
            while True:
                if job.ended.is_set():
                    return False
                if job.cancel.is_set():
                    self._waiting.remove(job)
                    if job.state == "queued":  # cancelled (or its tab closed) before it started
                        self._end(job, "cancelled")
                        return False
                    return True  # a long job cancelled between its steps: its next checkpoint ends it, no turn needed
                head = next((j for j in self._waiting if self._eligible(j)), None)
                if head is job and len(self._running) < self.workers:
                    self._waiting.remove(job)
                    self._running.add(job)
                    if job.kind in LONG:
                        self._started.add(job)
                    return True
                if not self._cv.wait(timeout=5.0):
                    self._reap()  # (the lock is re-entrant) closed tabs' jobs are cancelled even when all wait

    def _run(self, job: Job) -> None:
        if not self._acquire(job):
            return
        job.state, job.started = "running", time.time()
        self._record(job)
        timer = threading.Timer(job.limit_s, self._overtime, (job,)) if job.limit_s else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            with running(job):  # the library's checkpoints on this thread see this job's cancel
                job.result = job.fn(job)
            state = "cancelled" if job.cancel.is_set() and job.kind in LONG and job.result is None else "done"
        except Cancelled:
            job.result, state = None, "cancelled"
        except CompressError as e:
            job.error, state = str(e), "failed"
        except BaseException as e:  # noqa: BLE001 - a tokenizer's panic is a BaseException: a failure, never silent
            _LOG.error("job %s (%s) failed", job.id, job.kind, exc_info=e)  # its text may hold paths: the log's only
            job.error, state = f"an unexpected error ({type(e).__name__}); it is in the server's log", "failed"
        if timer is not None:
            timer.cancel()
        with self._cv:
            self._end(job, state)
        _trim()

    def _overtime(self, job: Job) -> None:
        job.error = f"stopped at its time limit of {job.limit_s / 60:g} min"
        self.cancel(job)

    def _end(self, job: Job, state: str) -> None:  # (holding the lock) logged before anyone waiting for it wakes
        job.state = state
        membound.release(job.id)
        self._record(job)
        job.ended.set()
        self._running.discard(job)
        self._started.discard(job)
        self._cv.notify_all()

    def _reap(self) -> None:
        """Cancel the tab-bound jobs of owners that stopped sending heartbeats (their tab is gone), and let go of the
        results nobody will pick up (a healed model of a closed tab)."""
        now = time.time()
        for j in self.jobs():
            if now - self._beats.get(j.owner, now) > GRACE_S:
                if j.ended.is_set():
                    j.result = None
                elif j.kind in TAB_BOUND:
                    j.cancel.set()

    def _record(self, job: Job) -> None:
        if self.log is not None:
            self.log({"id": job.id, "kind": job.kind, "owner": job.owner, "label": job.label, "state": job.state,
                      "error": job.error, "created": job.created, "started": job.started})


def _libc():
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


_LIBC = _libc()


def _trim() -> None:
    """Give the memory freed by a job back to the system (glibc keeps freed heap pages: a server's RSS otherwise
    grows with every model a job built and dropped)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


_QUEUE: Queue | None = None
_LOCK = threading.Lock()


def queue() -> Queue:
    """The server process's one queue (COMPRESS_WORKERS workers, default 1); its `log` is None until the app wires
    one (ui/jobs.py: the results store's record)."""
    global _QUEUE
    with _LOCK:
        if _QUEUE is None:
            if _LIBC is not None:  # one malloc arena per job thread would each keep their freed pages: at most 2
                _LIBC.mallopt(-8, number("MALLOC_ARENA_MAX", 2, whole=True))  # M_ARENA_MAX
            _QUEUE = Queue(number("COMPRESS_WORKERS", 1, whole=True), long=number("COMPRESS_LONG_JOBS", 2, whole=True))
        return _QUEUE
