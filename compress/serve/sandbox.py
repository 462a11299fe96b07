"""One uncuttable library call (the ONNX export and ONNX Runtime's quantization: seconds to minutes of C++ on a
large model, with no checkpoint inside) run in a forked child process while the job's thread watches it: a Cancel
kills the child at the next poll (POLL_S), and so does the time limit; the child's new memory is bounded by the
budget of one job (RLIMIT_AS over what it inherits). The call passes its results through files it writes; its
failure comes back as one line. Outside a job (the CLI, a test calling the library) it runs in this process.
Forked, not spawned: the model is already in memory (nothing pickled, no second import of torch); the child runs one
thread (torch.set_num_threads(1): OpenMP's pool is not safe across a fork) and leaves by os._exit.
No streamlit here."""
import os
import resource
import signal
import time

from ..errors import CompressError
from . import cancel
from .cancel import checkpoint, current
from .membound import budget_mb

POLL_S = 0.2
LIMIT_S = 900.0  # a guard: an ONNX export of the largest model an upload may be takes minutes, not this


def _vm_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _child(fn, args, w: int) -> None:
    """In the child: bound its memory, run fn, report a failure as one line on w; never returns."""
    code = 1
    cancel._local.job = None  # the parent watches the Cancel; the child's checkpoints (a traced forward) do nothing
    try:
        null = os.open(os.devnull, os.O_WRONLY)  # its prints are not the server's (nor a test runner's channel)
        os.dup2(null, 1)
        os.dup2(null, 2)
        import torch
        torch.set_num_threads(1)
        limit = _vm_bytes() + int(budget_mb() * 1e6)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        fn(*args)
        code = 0
    except BaseException as e:  # noqa: BLE001 - told to the parent, which raises it as one line
        first = (str(e).strip().splitlines() or [''])[0]  # as runtime._why says it; the library's own error as it is
        text = (first if isinstance(e, CompressError) else f"{type(e).__name__}: {first}")[:300]
        os.write(w, text.encode("utf-8", "replace"))
    finally:
        os._exit(code)


def call(fn, *args, what: str = "the call", limit_s: float = LIMIT_S) -> None:
    """fn(*args) in a child process when this thread runs a queue job (Cancel and limit_s kill it; a failure is a
    CompressError of one line: the exception's type and first words), else here. fn's return value is not passed
    back: it writes files."""
    if current() is None or getattr(os, "fork", None) is None:  # (no fork: Windows)
        fn(*args)
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(fn, args, w)
    os.close(w)
    status, start = None, time.monotonic()
    try:
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            checkpoint()  # a Cancel raises here: the child is killed below
            if time.monotonic() - start > limit_s:
                raise CompressError(f"{what} ran past its limit of {limit_s:g} s and was stopped")
            time.sleep(POLL_S)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        message = os.read(r, 400).decode("utf-8", "replace")
        os.close(r)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:  # the child's own one line (as the call would have raised it here), or how it ended
        raise CompressError(message or f"{what}'s process ended with {code} (a memory bound of "
                                       f"{budget_mb():,.0f} MB: COMPRESS_MEM_BUDGET_MB)")
