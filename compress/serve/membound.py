"""A memory bound per job kind, checked before the job allocates: its estimate is the model's parameters x the bytes
of a weight (4: float32; 2: bf16/fp16 kept) x the kind's FACTOR, refused in one line when over the budget of one job
(COMPRESS_MEM_BUDGET_MB, default half the machine's memory). An estimate, not a measure: it counts the copies of the
weights a kind holds at once and one more for activations (the workloads are bounded elsewhere:
evaluate.MAX_WORKLOAD_TOKENS, healing's batch). The server's total is bounded too: a job of the queue holds what its
checks estimated until it ends, and a check that would take the jobs' sum over COMPRESS_MEM_SERVER_MB (default three
quarters of the memory) is refused the same way (two healings between their steps and an Apply are alive at once). A
load is bounded by the upload's parameter limit (limits.max_params) and by this, from the config and the weights'
headers before it allocates (a 1.1B model: 4.4 GB estimated kept in bf16, 8.8 GB widened; RSS peaks 2.86, 6.83 GB).
These bound the jobs; what stays loaded after them is bounded by counts (README: the server's memory, measured by
tests/rssbench.py: a base of 0.6 GB, about 1.3x each bundled model's float32 weights and 2.6x each upload's, whose zip
Streamlit keeps while it is in the widget: the app's own copy, outside the load's estimate of 2)."""
import os
import threading

from ..errors import CompressError
from .settings import number
from .cancel import current

FACTOR = {  # copies of the weights a kind holds at its peak
    "load": 2,     # the model built, and the safetensors pages read into memory while it is filled
    "sizes": 1,    # the model: its serialization is counted as it is written, never held (measure/core.py)
    "sample": 2,   # the model and one forward's activations
    "apply": 4,    # the shared original, its deep copy being compressed, a step's new layers, activations
    "spectra": 8,  # of the factorizable layers: each in float64 (2), its U and Vh in float64 (4) and float32 (2)
    "heal": 7,     # teacher, student, gradients, AdamW's two moments, the best state so far, activations
    "seqlen": 2,   # of each model timed over T: it and its copy with positions extended (activations: extra_mb)
    "sensitivity": 2,  # the copy whose layers are swapped one at a time, and one forward's activations
    "distill": 1,  # one forward's activations over the shared original (its vocab x hidden table: extra_mb)
}


_HELD: dict[int, float] = {}  # queue job id -> the MB its checks estimated, until the job ends (release)
_LOCK = threading.Lock()


def _setting(name: str, share: float) -> float:
    """os.environ[name] in MB (a number above 0), else this share of the machine's memory."""
    return number(name, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * share / 1e6)


def budget_mb() -> float:
    """The most one job may need, in MB: COMPRESS_MEM_BUDGET_MB, else half the machine's memory."""
    return _setting("COMPRESS_MEM_BUDGET_MB", 0.5)


def server_mb() -> float:
    """The most the jobs alive at once may need together, in MB: COMPRESS_MEM_SERVER_MB, else 3/4 of the memory."""
    return _setting("COMPRESS_MEM_SERVER_MB", 0.75)


def held_mb() -> float:
    """What the jobs alive now hold by their estimates, in MB."""
    with _LOCK:
        return sum(_HELD.values())


def release(job_id: int) -> None:
    """The job ended: what it held is free (the queue calls this)."""
    with _LOCK:
        _HELD.pop(job_id, None)


def estimate_mb(kind: str, params: int, per: int = 4) -> float:
    """params x `per` bytes x FACTOR[kind], in MB."""
    return params * per * FACTOR[kind] / 1e6


def params_of(model) -> int:
    return sum(p.numel() for p in getattr(model, "parameters", list)())  # (an ONNX Runtime session has none)


def check(kind: str, model, what: str = "", params: int | None = None, extra_mb: float = 0.0, per: int = 4) -> None:
    """Refuse (one CompressError line) a job of this kind on this model (or these params) whose estimate (plus
    extra_mb: activations the kind sizes itself) is over the budget of one job, or, on the queue, would take the
    server's jobs together over theirs; else the queue's job holds the estimate until it ends. per: bytes of a
    weight."""
    params = params_of(model) if params is None else params
    need, have = estimate_mb(kind, params, per) + extra_mb, budget_mb()
    if need > have:
        more = f" + {extra_mb:,.0f} MB of activations" if extra_mb else ""
        raise CompressError(f"{kind} of {what or 'this model'} needs about {need:,.0f} MB ({params / 1e6:,.1f}M "
                            f"params x {per} bytes x {FACTOR[kind]}{more}) and a job here may use {have:,.0f} MB "
                            "(COMPRESS_MEM_BUDGET_MB); nothing was started")
    job = current()
    if job is None:  # the CLI or a test calling the library: one job, the per-job bound is the bound
        return
    with _LOCK:
        others, total = sum(v for k, v in _HELD.items() if k != job.id), server_mb()
        if others + need > total:
            raise CompressError(f"{kind} of {what or 'this model'} needs about {need:,.0f} MB and the jobs alive on "
                                f"this server hold about {others:,.0f} MB of the {total:,.0f} MB they may share "
                                "(COMPRESS_MEM_SERVER_MB): try again when one ends; nothing was started")
        _HELD[job.id] = max(_HELD.get(job.id, 0.0), need)
