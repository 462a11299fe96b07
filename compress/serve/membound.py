"""A memory bound per job kind, checked before the job allocates: its estimate is the model's parameters x 4 bytes
(float32) x the kind's FACTOR, refused in one line when over the budget of one job (COMPRESS_MEM_BUDGET_MB, default
half the machine's memory). An estimate, not a measure: it counts the copies of the weights a kind holds at once and
one more for activations (the workloads are bounded elsewhere: evaluate.MAX_WORKLOAD_TOKENS, healing's batch).
A load is bounded before this, by the upload's header (uploads.MAX_PARAMS)."""
import os

from ..errors import CompressError

FACTOR = {  # copies of the float32 weights a kind holds at its peak
    "sizes": 2,    # the model and its serialized bytes
    "sample": 2,   # the model and one forward's activations
    "apply": 4,    # the shared original, its deep copy being compressed, a step's new layers, activations
    "spectra": 8,  # of the factorizable layers: each in float64 (2), its U and Vh in float64 (4) and float32 (2)
    "heal": 7,     # teacher, student, gradients, AdamW's two moments, the best state so far, activations
}


def budget_mb() -> float:
    """The most one job may need, in MB: COMPRESS_MEM_BUDGET_MB, else half the machine's memory."""
    if "COMPRESS_MEM_BUDGET_MB" in os.environ:
        try:
            mb = float(os.environ["COMPRESS_MEM_BUDGET_MB"])
        except ValueError:
            mb = 0.0
        if not mb > 0:
            raise CompressError(f"COMPRESS_MEM_BUDGET_MB must be a number above 0, got "
                                f"{os.environ['COMPRESS_MEM_BUDGET_MB'][:20]!r}")
        return mb
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 / 1e6


def estimate_mb(kind: str, params: int) -> float:
    """params x 4 bytes x FACTOR[kind], in MB."""
    return params * 4 * FACTOR[kind] / 1e6


def params_of(model) -> int:
    return sum(p.numel() for p in getattr(model, "parameters", list)())  # (an ONNX Runtime session has none)


def check(kind: str, model, what: str = "", params: int | None = None) -> None:
    """Refuse (one CompressError line) a job of this kind on this model (or these params) whose estimate is over the
    budget."""
    params = params_of(model) if params is None else params
    need, have = estimate_mb(kind, params), budget_mb()
    if need > have:
        raise CompressError(f"{kind} of {what or 'this model'} needs about {need:,.0f} MB ({params / 1e6:.1f}M "
                            f"params x 4 bytes x {FACTOR[kind]}) and a job here may use {have:,.0f} MB "
                            "(COMPRESS_MEM_BUDGET_MB); nothing was started")
