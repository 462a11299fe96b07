"""Quantization: dynamic int8 (torch.ao, CPU) with weight-only int8 word embeddings, fp16/bf16 casts, and the
quantization-aware rounding healing runs inside (fake_quant)."""
import contextlib
import copy
import warnings

import torch
import torch.nn as nn
from torch.ao import quantization as tq

from ..models.adapters import set_module
from .lowbit import Packed

# Per-channel weight scales: one outlier row no longer crushes the precision of the others.
INT8_LINEAR = tq.per_channel_dynamic_qconfig


HALF_TEACH = ("fp16 / bf16: every weight in 16 bits, 2x smaller. Runs on: GPUs; on a CPU fp16 is usually slower "
              "than fp32, bf16 is fast only with AVX512-BF16 or AMX.")


def apply_quantize(model: nn.Module, adapter, mode: str, embeddings: bool = True) -> nn.Module:
    """Return the quantized model (int8 builds new modules; casts happen in place)."""
    if mode in ("fp16", "bf16"):
        return model.to(torch.float16 if mode == "fp16" else torch.bfloat16)
    if mode != "int8":
        return model
    spec = {nn.Linear: INT8_LINEAR}
    head = tied_head(model, adapter) if embeddings else None
    if embeddings:  # weight-only, per-row scales: word and position tables (not BERT's token types: their
        # default ids are an expanded, non-contiguous buffer the quantized kernel refuses)
        present = dict(model.named_modules())  # (the static table has no position table)
        for path in (p for p in (adapter.word_embeddings, adapter.position_embeddings) if p in present):
            tied = head is not None and path == adapter.word_embeddings  # (read from the int8 head instead)
            if not isinstance(model.get_submodule(path), Packed) and not tied:  # (low-bit, PQ: already smaller)
                spec[path] = tq.float_qparams_weight_only_qconfig
    with warnings.catch_warnings():  # torch.ao is deprecated in favour of torchao, but still the fastest eager path here
        warnings.simplefilter("ignore")
        model = tq.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    if head and callable(getattr(model.get_submodule(head), "weight", None)):  # the head is int8: the table reads it
        set_module(model, adapter.word_embeddings, TiedInt8Embedding(model.get_submodule(head)))
    return model


def tied_head(model: nn.Module, adapter) -> str | None:
    """The name of the Linear (an LM head: GPT-2, SmolLM, TinyLlama) whose weight IS the word table, or None."""
    table = model.get_submodule(adapter.word_embeddings)
    if type(table) is not nn.Embedding:
        return None
    return next((n for n, m in model.named_modules() if type(m) is nn.Linear and m.weight is table.weight), None)


class TiedInt8Embedding(nn.Module):
    """A word table tied to the LM head, after int8: the rows of the head's int8 weight (symmetric, one scale per
    row), so the table is stored once, in the head. (Quantized apart, the table and the head were two int8 copies:
    ~28 MB more on SmolLM-135M.) The head is not a submodule here: its weights are saved under its own name only.
    The unpacked rows are kept in memory (not saved) for the packed weights they came from: a load or a copy gives
    the head new packed weights, and the rows are unpacked again; a trace (the freeze runtime) sees them as constants."""

    def __init__(self, head: nn.Module):
        super().__init__()
        object.__setattr__(self, "head", head)
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self.rows()

    def rows(self) -> tuple:
        """(int8 rows (V, C), scales (V,), zero points (V,)) of the head's packed weights as they are now."""
        packed = self.head._packed_params._packed_params
        if getattr(self, "_rows", (None,))[0] is not packed:
            w = self.head.weight()                                        # (V, C) qint8, per-row scales
            self._rows = (packed, w.int_repr(), w.q_per_channel_scales().float(), w.q_per_channel_zero_points())
        return self._rows[1:]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ints, scale, zero = self.rows()
        return (ints[ids].float() - zero[ids][..., None]) * scale[ids][..., None]  # (*ids.shape, C)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows of the tied LM head"


def _ste(x, q):  # forward: q; backward: straight through to x
    return x + (q - x).detach()


def int8_activation(x, top: int = 127):
    """fbgemm's dynamic activations: 7-bit, asymmetric, one scale per tensor, the range always holding 0 (top 255:
    ONNX Runtime's DynamicQuantizeLinear, uint8)."""
    lo, hi = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
    s = ((hi - lo) / top).clamp(min=1e-8)
    z = (-lo / s).round()
    return (((x / s).round() + z).clamp(0, top) - z) * s


def int8_weight(w):
    """Per-channel symmetric int8, as INT8_LINEAR stores it."""
    sw = w.detach().abs().amax(1, keepdim=True).clamp(min=1e-8) / 127.5
    return (w / sw).round().clamp(-128, 127) * sw


@contextlib.contextmanager
def fake_quant(layers: list[nn.Linear], weight, activation=None):
    """While inside, each layer rounds its weight by weight(w) (and its input by activation(x)), gradients straight
    through: healing then learns the model that quantization will run (quantization-aware training)."""
    def fake(layer):
        def forward(x):
            x = x if activation is None else _ste(x, activation(x))
            return nn.functional.linear(x, _ste(layer.weight, weight(layer.weight)), layer.bias)
        return forward
    for m in layers:
        m.forward = fake(m)
    try:
        yield
    finally:
        for m in layers:
            del m.forward


def linears(model: nn.Module) -> list[nn.Linear]:
    """Every plain nn.Linear of the model: what dynamic int8 (ours or ONNX Runtime's) quantizes."""
    return [m for m in model.modules() if type(m) is nn.Linear]


def fake_int8(model: nn.Module):
    """Every nn.Linear rounded like dynamic int8 (per-channel weights, fbgemm's per-tensor 7-bit activations)."""
    return fake_quant(linears(model), int8_weight, int8_activation)


def replace_model(fn):
    """A quantization step: a new model from the current one (which may be changed in place: a copy is kept as
    ctx.unquantized when onnxruntime will quantize it its own way)."""
    def apply(ctx, r):
        if r.runtime == "onnxruntime" and ctx.unquantized is None:
            ctx.unquantized = copy.deepcopy(ctx.model)
        ctx.model = fn(ctx.model, ctx.base.adapter, r)
    return apply


def quantize_model(model, adapter, r):
    return apply_quantize(model, adapter, r.quant, r.quant_embeddings)
