"""Runtimes: the same weights, run eagerly, as a frozen TorchScript graph, or through torch.compile.

apply_runtime(model, adapter, mode, example) -> (module, runtime_applied, reason_if_fell_back). The module is
called as module(ids, mask) and returns what adapters.forward returns (hidden states or logits); it has a
`runtime` attribute so adapters.forward can tell it from a transformers model. Any failure falls back to
eager with the reason: a runtime is a speed option and must never break a compression.

Size and params are measured BEFORE this step (the caller's job): the wrapper's state_dict is the eager
model's under a "model." prefix, and the traced/compiled graphs hold the same weight values (freeze folds
them into the graph as constants, possibly repacked for the CPU kernels), they are not new parameters.
"""
import threading
import warnings

import torch
import torch.nn as nn

from ..models.adapters import forward
from ..errors import CompressError
from ..measure.evaluate import workload

RUNTIMES = ("eager", "freeze", "compile")
MAX_GRAPHS = 8  # traced graphs kept per model, one per (batch, seq, padded or not); the oldest goes first
# Calls at one shape before it is traced: a trace costs ~0.15 s (TinyGPT) to ~1.5 s (MiniLM 8x128), so
# generation (a new length every step) and one-off eval batches stay eager; benchmarks repeat a shape.
TRACE_AFTER = 2
_TRACE_LOCK = threading.Lock()  # two sessions hitting a new shape at once trace it once (and evictions are safe)


class _Call(nn.Module):
    """forward(ids, mask) -> adapters.forward(...): a plain tensor in and out, which trace and compile need."""

    def __init__(self, model: nn.Module, adapter):
        super().__init__()
        self.model, self.adapter = model, adapter

    def forward(self, ids, mask=None):
        return forward(self.model, self.adapter, ids, mask)


def _freeze(call: _Call, ids, mask):
    """Trace at one input shape (with a mask, or none), freeze (weights become constants), optimize."""
    args = (ids,) if mask is None else (ids, mask)
    with warnings.catch_warnings():  # torch.jit is deprecated (still works in 2.13); TracerWarnings from transformers
        warnings.simplefilter("ignore")
        with torch.no_grad():
            call(*args)  # eager first: what a module computes once from its weights (a tied int8 table's rows) is
            #              then a constant of the trace, not an op in it
            traced = torch.jit.trace(call, args, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            for _ in range(2):  # the profiling executor profiles on run 1 and optimizes on run 2: pay it here
                frozen(*args)
            return frozen


class Runtime(nn.Module):
    """An eager model behind a frozen or compiled call. self.model is the eager model, weights untouched."""

    def __init__(self, model: nn.Module, adapter, mode: str):
        super().__init__()
        self.model, self.adapter, self.runtime = model, adapter, mode
        # graphs live in a plain dict, not as submodules, so state_dict() stays the eager model's
        self._graphs, self._seen = {}, {}
        self.error = None  # why the last trace failed (that shape then runs eagerly)

    def __getstate__(self):
        # deepcopy / pickle: the graphs are not copied (frozen ones hold THIS model's weights as constants,
        # on its device, and are not picklable); the copy traces / compiles its own on first use
        return {**super().__getstate__(), "_graphs": {}, "_seen": {}}

    def _graph(self, ids, mask):
        if self.runtime == "compile":  # dynamic: one graph for every (batch, seq), no recompile per workload
            if "compiled" not in self._graphs:  # lazy, so a copy compiles for its own weights and device
                try:
                    self._graphs["compiled"] = torch.compile(_Call(self.model, self.adapter), dynamic=True)
                except Exception as e:  # noqa: BLE001
                    self._graphs["compiled"], self.error = None, _why(e)
            return "compiled", self._graphs["compiled"]
        # A trace replays the ops it saw: sizes of views, slices of position ids, etc. are baked in,
        # so each new (batch, seq) gets its own trace (and each device: weights are constants on one).
        # The mask's CONTENT is not baked in: transformers materializes the mask while tracing instead
        # of skipping an all-ones one.
        key = (tuple(ids.shape), ids.dtype, ids.device, mask is None)
        with _TRACE_LOCK:
            if key not in self._graphs:
                if len(self._seen) > 1024:  # bounded: every generation step is a new key
                    self._seen.clear()
                self._seen[key] = self._seen.get(key, 0) + 1
                if self._seen[key] < TRACE_AFTER:
                    return key, None
                if len(self._graphs) >= MAX_GRAPHS:
                    self._graphs.pop(next(iter(self._graphs)))
                try:
                    self._graphs[key] = _freeze(_Call(self.model, self.adapter), ids, mask)
                except Exception as e:  # noqa: BLE001 - a shape it cannot trace at runs eagerly, never crashes
                    self._graphs[key], self.error = None, _why(e)
            return key, self._graphs[key]

    def forward(self, ids, mask=None):
        if mask is not None and bool(mask.all()):
            # no padding: drop the mask, as eager transformers does (sdpa's unmasked kernel, FNet's FFT path).
            # A trace WITH a mask keeps it (transformers materializes it while tracing), so both kinds are right.
            mask = None
        key, graph = self._graph(ids, mask)
        if graph is not None:
            try:
                with torch.no_grad():
                    return graph(ids) if mask is None else graph(ids, mask)
            except Exception as e:  # noqa: BLE001 - e.g. a recompile that fails: this key runs eagerly from now on
                self._graphs[key], self.error = None, _why(e)
        return forward(self.model, self.adapter, ids, mask)  # a genuinely bad input raises here, as in eager


def apply_runtime(model: nn.Module, adapter, mode: str, example) -> tuple[nn.Module, str, str | None]:
    """(module, runtime applied, reason it fell back to eager or None). example = (ids, mask) for a first run."""
    if mode not in RUNTIMES:
        raise CompressError(f"runtime must be one of {', '.join(RUNTIMES)}, got {mode!r}")
    if mode == "eager":
        return model, "eager", None
    ids, mask = example
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # importing dynamo touches deprecated torch.jit
            wrapped = Runtime(model.eval(), adapter, mode)
            for _ in range(TRACE_AFTER):  # trace / compile now, so the cost and any failure land here
                got = wrapped(ids, mask)
            want = forward(model, adapter, ids, mask)
        if why := mismatch(mode, got, want, _tolerance(model, want)):
            return model, "eager", why
        if wrapped.error:
            return model, "eager", f"{mode} failed: {wrapped.error}"
    except Exception as e:  # noqa: BLE001 - any failure of an optional speed-up falls back
        return model, "eager", f"{mode} failed: {_why(e)}"
    return wrapped, mode, None


def _tolerance(model: nn.Module, out: torch.Tensor) -> float:
    """Relative L2 error a correct runtime may show against eager. Float32: the same math in another order.
    int8 activations or half precision: a last-bit float difference can flip an activation's int8 rounding
    and the layers amplify it (compiled int8 MiniLM, 8x128: 25% off eager int8, yet exactly as close to
    fp32 as eager int8 is), so there the check only catches a broken graph."""
    quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
    return 1e-3 if out.dtype == torch.float32 and not quantized else 0.5


def mismatch(mode: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> str | None:
    """Why a runtime's output is not eager's (another shape, or relative L2 error above tol; NaN too), or None."""
    err = ((got.float() - want.float()).norm() / want.float().norm().clamp(min=1e-12)).item()
    if got.shape != want.shape or not err <= tol:  # `not <=`: NaN fails too
        return f"{mode} output differs from eager (relative error {err:.3g})"
    return None


def _why(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def example(b):
    """The small batch a runtime is traced / exported on and checked against eager with (2 x at most 16 ids)."""
    return workload(b, 2, min(16, b.info.get("max_positions", 16)))
