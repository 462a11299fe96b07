"""One queue for the CPU-heavy work of a server process (Apply's measurement, benchmarks, healing, sensitivity,
spectra of a new model): at most `workers` jobs run at a time (1 on a 2-core machine: COMPRESS_WORKERS), the others
wait in order with their position known and can be cancelled. A long job (healing) calls yield_() between its steps,
which runs the short jobs waiting in its own thread while it pauses, so an Apply waits for one step, not a whole run,
and no latency is ever timed while other work of this server runs. A job belongs to its owner (a browser session);
owners that stop sending heartbeats have their long jobs cancelled after a grace period. Every job is recorded in the
results store (store.py) when it is given, started and ended, so a restarted server shows the ones it lost as
interrupted. No streamlit here: the pages only submit, poll and show.
"""
import itertools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .errors import CompressError

LONG = {"heal", "sweep"}  # kinds that yield between their steps (trials) instead of holding the queue
TAB_BOUND = {"heal"}  # long kinds cancelled when their tab is gone (a sweep belongs to its study and goes on)
GRACE_S = 120.0  # an owner silent this long has its tab-bound jobs cancelled (a closed tab sends no heartbeat)


@dataclass(eq=False)
class Job:
    id: int
    kind: str
    owner: str
    label: str
    fn: Callable  # fn(job) -> result; may read job.cancel and write job.progress
    state: str = "queued"  # queued | running | done | failed | cancelled | interrupted
    progress: dict = field(default_factory=dict)
    result: object = None
    error: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.time)


class Queue:
    def __init__(self, workers: int = 1, log=None, keep: int = 200):
        self.workers, self.log, self.keep = max(1, workers), log, keep
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._jobs: dict[int, Job] = {}  # the last `keep` jobs, by id
        self._beats: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._threads: list[threading.Thread] = []

    def submit(self, kind: str, fn: Callable, owner: str = "", label: str = "") -> Job:
        job = Job(next(self._ids), kind, owner, label, fn)
        with self._cv:
            self._waiting.append(job)
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                self._jobs.pop(next(iter(self._jobs)))
            self._beats[owner] = time.time()
            while len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, daemon=True, name=f"compress-job-{len(self._threads)}")
                self._threads.append(t)
                t.start()
            self._cv.notify()
        self._record(job)
        return job

    def position(self, job: Job) -> int:
        """1, 2, ... while waiting; 0 once it runs or has ended."""
        with self._cv:
            return next((i + 1 for i, j in enumerate(self._waiting) if j is job), 0)

    def cancel(self, job: Job) -> None:
        job.cancel.set()
        with self._cv:
            if job in self._waiting:
                self._waiting.remove(job)
                self._end(job, "cancelled")

    def wait(self, job: Job, timeout: float | None = None) -> bool:
        return job.ended.wait(timeout)

    def heartbeat(self, owner: str) -> None:
        self._beats[owner] = time.time()

    def jobs(self, owner: str | None = None) -> list[Job]:
        with self._cv:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def busy(self) -> bool:
        with self._cv:
            return bool(self._waiting) or any(j.state == "running" for j in self._jobs.values())

    def yield_(self, job: Job) -> None:
        """Called by a long job between its steps: run the short jobs waiting, in this thread, while it pauses."""
        self._reap()
        while True:
            with self._cv:
                short = next((j for j in self._waiting if j.kind not in LONG), None)
                if short is None:
                    return
                self._waiting.remove(short)
            self._run(short)

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._waiting:
                    self._cv.wait(timeout=5.0)
                    self._reap()
                job = self._waiting.popleft()
            self._run(job)

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            with self._cv:
                self._end(job, "cancelled")
            return
        job.state = "running"
        self._record(job)
        try:
            job.result = job.fn(job)
            state = "cancelled" if job.cancel.is_set() and job.kind in LONG and job.result is None else "done"
        except CompressError as e:
            job.error, state = str(e), "failed"
        except BaseException as e:  # noqa: BLE001 - a tokenizer's panic is a BaseException: a failure, never silent
            job.error, state = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", "failed"
        with self._cv:
            self._end(job, state)

    def _end(self, job: Job, state: str) -> None:  # (holding the lock)
        job.state = state
        job.ended.set()
        self._record(job)

    def _reap(self) -> None:
        """Cancel the tab-bound jobs of owners that stopped sending heartbeats (their tab is gone)."""
        now = time.time()
        for j in self.jobs():
            if j.kind in TAB_BOUND and not j.ended.is_set() and now - self._beats.get(j.owner, now) > GRACE_S:
                j.cancel.set()

    def _record(self, job: Job) -> None:
        if self.log is not None:
            self.log.record(job)


_QUEUE: Queue | None = None
_LOCK = threading.Lock()


def queue() -> Queue:
    """The server process's one queue (COMPRESS_WORKERS workers, default 1), recording to the default store."""
    global _QUEUE
    with _LOCK:
        if _QUEUE is None:
            from .store import default_store
            store = default_store()
            _QUEUE = Queue(int(os.environ.get("COMPRESS_WORKERS", "1")), store)
            store.interrupt_stale()  # jobs a previous server process gave but never ended
        return _QUEUE
