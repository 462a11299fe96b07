"""Cancel that takes effect on a running job: the library's long loops call checkpoint() at most about a second of
work apart (every model forward, every pipeline step, every layer's SVD, every healing step, every timed round, every
trial of a sweep), and the queue (jobs.py) runs each job with itself as its thread's current job. checkpoint() raises
Cancelled once that job's cancel is set; outside a job (the CLI, a test calling the library) it does nothing, so no
function needs a job passed in. Imports nothing of compress: every layer may call it."""
import contextlib
import threading

_local = threading.local()  # each job runs on a thread of its own (jobs.Queue.submit)
HOOK = None  # tests: HOOK(job) after each checkpoint a job passed (to pause it there, as if at work, and cancel it)


class Cancelled(BaseException):
    """A job's work was cancelled. A BaseException, like asyncio.CancelledError, on purpose: the `except Exception`
    on its way up (optuna's catch=, a runtime's fall-back to eager, a loader's one-line wrapper) must not swallow it
    and go on working."""


def current():
    """The job this thread runs, or None."""
    return getattr(_local, "job", None)


@contextlib.contextmanager
def running(job):
    """Make job the current one of this thread while its function runs."""
    _local.job = job
    try:
        yield
    finally:
        _local.job = None


def turn() -> None:
    """Between the units of a long computation (a layer's SVD, a layer's sensitivity): a job of a long kind lets the
    jobs waiting for the queue go first (jobs.Queue.yield_, itself a checkpoint); any other job only checkpoints. Call
    it holding no lock: the job may wait here for its next turn."""
    job = getattr(_local, "job", None)
    if job is not None and getattr(job, "turn", None) is not None:
        job.turn()
    else:
        checkpoint()


def checkpoint() -> None:
    """Raise Cancelled if the current job was cancelled; nothing outside a job. job.checks counts the calls."""
    job = getattr(_local, "job", None)
    if job is None:
        return
    job.checks += 1
    if job.cancel.is_set():
        raise Cancelled(f"{job.label or job.kind}: cancelled")
    if HOOK is not None:
        HOOK(job)
