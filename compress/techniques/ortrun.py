"""ONNX Runtime as a runtime: the compressed model exported to ONNX (torch.onnx's TorchScript exporter, opset 17,
batch and sequence dynamic) and run by an onnxruntime InferenceSession, fp32; with int8 chosen, the float model is
exported and quantized by onnxruntime's own dynamic quantization (int8 weights per channel, activations on the fly;
reduce_range on CPUs without VNNI, as its documentation advises). The module's size is the .onnx file's bytes, and
its latency and quality come from ONNX Runtime's outputs: it is called like any model (adapters.forward).
int4 is stored as int4 and run as int8: the session is built from its unpacked weights (the zip keeps the int4 form
and no model.onnx; a reload builds the same session), so it is int4's size at ONNX Runtime int8's speed. A 2/4-bit
word table is exported packed (its rows unpacked after the lookup). Half precision and FNet's FFT are not exported
(unsupported(): known before exporting): eager runs and the reason says so, as freeze falls back; any other export
failure falls back the same way, with the exporter's message.
"""
import contextlib
import io
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import CompressError
from ..measure import core as measure
from ..serve import sandbox
from ..models.adapters import forward
from . import int4, quantize
from .runtime import _Call, _why, apply_runtime, example, mismatch

QUANTS = ("none", "int8", "int4")  # what this runtime runs (int4 as int8); others fall back to eager


def int8_weight(w: torch.Tensor, rr: bool) -> torch.Tensor:
    """quantize_dynamic's QInt8 weights: per output channel, symmetric, -127 to 127 (rr: -64 to 64)."""
    q = 64 if rr else 127
    s = w.detach().abs().amax(1, keepdim=True).clamp(min=1e-8) / q
    return (w / s).round().clamp(-q, q) * s


def uint8_activation(x: torch.Tensor) -> torch.Tensor:
    """DynamicQuantizeLinear: uint8, one scale and zero point per tensor, the range always holding 0."""
    return quantize.int8_activation(x, 255)


def fake_ort(model: nn.Module, adapter, r):
    """While inside, the Linear layers ONNX Runtime's int8 pass will quantize round as it does (int4: the blocks', on
    int4's own rounding, as the session is built from int4's weights): healing learns what the session runs (the 20x
    model healed with int4's rounding alone ran 0.0026 / 0.0031 fidelity lower in the session than eager)."""
    rr = reduce_range()
    if r.quant == "int4":
        return quantize.fake_quant(int4.block_layers(model, adapter),
                                   lambda w: int8_weight(int4.round_int4(w), rr), uint8_activation)
    return quantize.fake_quant(quantize.linears(model), lambda w: int8_weight(w, rr), uint8_activation)


def reduce_range() -> bool:
    """onnxruntime's advice: 7-bit weights on x86 CPUs without VNNI (saturation in the int8 dot products)."""
    return not any(f.endswith("vnni") for f in measure.cpu_info()["flags"])


class OrtModel(nn.Module):
    """A model as an ONNX Runtime session: forward(ids, mask) -> what adapters.forward returns, on the CPU."""
    runtime = "onnxruntime"

    def __init__(self, onnx: bytes, setting: str, stored: bool = True):
        super().__init__()
        self.onnx, self.setting, self._session, self.stored = onnx, setting, None, stored

    @property
    def file_bytes(self) -> int | None:  # None: built at load from the weights the zip stores (int4), sized as those
        return len(self.onnx) if self.stored else None

    def __getstate__(self):  # a copy opens its own session
        return {**super().__getstate__(), "_session": None}

    def session(self):
        if self._session is None:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # a spinning pool took the CPUs
            #  from whatever ran next (the next model timed: 1.3x slower; another user of a shared server)
            self._session = ort.InferenceSession(self.onnx, opts, providers=["CPUExecutionProvider"])
        return self._session

    def forward(self, ids, mask=None):
        s = self.session()
        names = {i.name for i in s.get_inputs()}
        ids = ids.detach().to("cpu", torch.int64)
        feeds = {"input_ids": ids.numpy()}
        if "attention_mask" in names:
            feeds["attention_mask"] = (torch.ones_like(ids) if mask is None else mask.detach().to("cpu", torch.int64)).numpy()
        return torch.from_numpy(np.asarray(s.run(None, feeds)[0]))


@contextlib.contextmanager
def _quiet_stdout():
    """On a failure the exporter's C++ side prints its whole graph to file descriptor 1 (the CLI's one JSON object
    goes there): fd 1 points at /dev/null meanwhile (other threads' prints are lost for those seconds)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_EXPORTING = threading.Lock()


@contextlib.contextmanager
def _merge_same_tensors_only():
    """torch's exporter, in eval mode, also merges initializers that merely hold equal values (a fresh model's
    LayerNorm ones), so the graph would depend on the weights' values: a healed model's export would differ from its
    replay's, and its zip be refused (onnxcheck). Only one tensor used twice is merged (its training-mode rule)."""
    with _EXPORTING:  # (the patch is the process's: two exports at once would undo each other's)
        real = torch._C._jit_pass_onnx_deduplicate_initializers
        torch._C._jit_pass_onnx_deduplicate_initializers = lambda graph, params, _training: real(graph, params, True)
        try:
            yield
        finally:
            torch._C._jit_pass_onnx_deduplicate_initializers = real


def export(model: nn.Module, adapter, example, path: Path) -> None:
    """model -> ONNX at path: inputs input_ids and attention_mask (B, T), output (B, T, H) or (B, T, V)."""
    ids, mask = example
    with torch.no_grad(), warnings.catch_warnings(), _quiet_stdout(), _merge_same_tensors_only():
        warnings.simplefilter("ignore")  # TracerWarnings from transformers; the legacy exporter's own deprecation
        torch.onnx.export(_Call(adapter.export_ready(model).eval(), adapter), (ids, mask), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["output"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "output")})


def _build(model: nn.Module, adapter, example, d: Path, rr: bool, int8: bool, tables: bool = True) -> None:
    """Export to d/model.onnx; int8: onnxruntime's dynamic quantization of that export (per channel, rr: 7 bits);
    tables False: its MatMuls only (int4's tables are 8-bit already: quantize_dynamic would round the rows' float
    scales and offsets again, one scale for the whole table, as it would a token-type table the recipe keeps)."""
    src = d / ("float.onnx" if int8 else "model.onnx")
    export(model, adapter, example, src)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        quantize_dynamic(str(src), str(d / "model.onnx"), per_channel=True, reduce_range=rr,
                         weight_type=QuantType.QInt8, nodes_to_exclude=_half_gathers(src),
                         op_types_to_quantize=None if tables else ["MatMul"])


def _half_gathers(path: Path) -> list[str]:
    """The Gather nodes that read an fp16 table (a product-quantized table's codebooks): stored in 16 bits already,
    they stay so (ONNX Runtime's int8 pass would round them again, or build an invalid graph)."""
    import onnx
    g = onnx.load(str(path), load_external_data=False).graph
    half = {t.name for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    return [n.name for n in g.node if n.op_type == "Gather" and n.input[0] in half]


def unsupported(recipe) -> str | None:
    """Why this recipe cannot run in ONNX Runtime here (eager runs instead), known before exporting; or None."""
    if recipe.quant not in QUANTS:
        return f"onnxruntime runs fp32, int8 or int4 (as int8) here; {recipe.quant} is not exported"
    if recipe.fnet:
        return "onnxruntime: FNet's FFT (aten::fft_fft) has no ONNX export at opset 17"
    if recipe.attention != "none" or recipe.pool != 1:
        return "onnxruntime: the efficient attention and pooling shape their blocks by the sequence's length in Python, " \
               "which an exported graph would fix to one length"
    return None


def apply(model: nn.Module, adapter, recipe, example) -> tuple[nn.Module | None, str | None]:
    """(OrtModel, None), or (None, why eager runs instead). model: the float model (before any quantization)."""
    if why := unsupported(recipe):
        return None, why
    int8, rr = recipe.quant in ("int8", "int4"), reduce_range()
    setting = f"int8 dynamic, per-channel{', reduce_range' if rr else ''}" if int8 else "fp32"
    if recipe.quant == "int4":
        setting = "int4 stored, run as " + setting + " (quantized from the int4 weights when the session is built)"
    try:
        with tempfile.TemporaryDirectory() as d:
            # the export and the quantization have no checkpoint inside: on a job they run in a child that Cancel kills
            sandbox.call(_build, model, adapter, example, Path(d), int8 and rr, int8,  # (int8 with its tables:
                         recipe.quant == "int8" and recipe.quant_embeddings, what="the ONNX export")  # ONNX Runtime's)
            ort = OrtModel((Path(d) / "model.onnx").read_bytes(), setting, stored=recipe.quant != "int4")
        got, want = ort(*example), forward(model, adapter, *example)
    except CompressError as e:
        return None, f"onnxruntime failed: {e}"
    except Exception as e:  # noqa: BLE001 - a speed option never breaks a compression: eager runs, with the reason
        return None, f"onnxruntime failed: {_why(e)}"
    why = mismatch("onnxruntime", got, want, 0.5 if int8 else 1e-3)  # int8: only a broken graph
    return (None, why) if why else (ort, None)


def runtime_step(ctx, r):
    """The table's runtime step (here, above runtime.py: onnxruntime or a torch runtime); size is measured before it."""
    b = ctx.base
    ctx.sized_model = ctx.model
    batch = example(b)
    if r.runtime == "onnxruntime":  # exported from the float model; int8 by onnxruntime's own quantization
        src = int4.unpacked(ctx.model) if r.quant == "int4" else ctx.unquantized or ctx.model  # int4: what it stores
        ort, why = apply(src, b.adapter, r, batch)
        ctx.model, ctx.applied["runtime_applied"] = (ort, "onnxruntime") if ort is not None else (ctx.model, "eager")
        ctx.applied.update({"runtime_reason": why} if why else {"runtime_setting": ort.setting})
    else:
        ctx.model, ctx.applied["runtime_applied"], why = apply_runtime(ctx.model, b.adapter, r.runtime, batch)
        ctx.applied.update({"runtime_reason": why} if why else {})
    ctx.unquantized = None  # not kept: a whole model
