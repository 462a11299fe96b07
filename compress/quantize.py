"""Quantization: dynamic int8 (torch.ao, CPU), weight-only int8 word embeddings, fp16/bf16 casts, and a
2- or 4-bit word-embedding table (LowBitEmbedding, any device)."""
import contextlib
import warnings

import torch
import torch.nn as nn
from torch.ao import quantization as tq

from .adapters import set_module, tied_embeddings
from .recipe import CompressError

# Where each option runs: shown next to the control, and used to skip GPU timing where it cannot apply.
DEVICES = {
    "none": "any device",
    "int8": "CPU only (torch.ao dynamic int8 kernels: fbgemm on x86, qnnpack on ARM)",
    "fp16": "GPU; on CPU it runs but is usually slower than fp32 (no native fp16 matmul)",
    "bf16": "GPU, or CPUs with AVX512-BF16/AMX; elsewhere emulated and slower than fp32",
}

# Per-channel weight scales: one outlier row no longer crushes the precision of the others.
INT8_LINEAR = tq.per_channel_dynamic_qconfig


def apply_quantize(model: nn.Module, adapter, mode: str, embeddings: bool = True) -> nn.Module:
    """Return the quantized model (int8 builds new modules; casts happen in place)."""
    if mode in ("fp16", "bf16"):
        return model.to(torch.float16 if mode == "fp16" else torch.bfloat16)
    if mode != "int8":
        return model
    spec = {nn.Linear: INT8_LINEAR}
    if embeddings:  # weight-only, per-row scales: word and position tables (not BERT's token types: their
        # default ids are an expanded, non-contiguous buffer the quantized kernel refuses)
        for path in filter(None, (adapter.word_embeddings, adapter.position_embeddings)):
            if not isinstance(model.get_submodule(path), LowBitEmbedding):  # (already smaller than int8)
                spec[path] = tq.float_qparams_weight_only_qconfig
    with warnings.catch_warnings():  # torch.ao is deprecated in favour of torchao, but still the fastest eager path here
        warnings.simplefilter("ignore")
        return tq.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


GROUP = 128  # LowBitEmbedding: one scale and minimum per GROUP weights of a row (a row, if it does not divide)


class LowBitEmbedding(nn.Module):
    """A token table at 2 or 4 bits per weight: asymmetric, one fp16 scale and minimum per group of a row,
    packed 8 // bits to a byte. Only the looked-up rows are unpacked, so it costs little time. MiniLM's
    table (11.7M weights, half the model): 4-bit g128 keeps fidelity 0.998, 2-bit 0.953 at 3.3 MB, where
    a rank-96 factorization (int8, 3.0 MB) keeps 0.70."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.bits, self.padding_idx = num_embeddings, embedding_dim, bits, padding_idx
        self.group = GROUP if embedding_dim % GROUP == 0 else embedding_dim
        n_groups = embedding_dim // self.group
        self.register_buffer("packed", torch.zeros(num_embeddings, embedding_dim * bits // 8, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(num_embeddings, n_groups, dtype=torch.float16))
        self.register_buffer("low", torch.zeros(num_embeddings, n_groups, dtype=torch.float16))
        self.register_buffer("ref", torch.zeros(0), persistent=False)  # follows .to(dtype): the output dtype

    @classmethod
    def from_embedding(cls, table: nn.Embedding, bits: int) -> "LowBitEmbedding":
        w = table.weight.detach().float()
        v, c = w.shape
        new = cls(v, c, bits, table.padding_idx).to(table.weight.device)
        g = w.reshape(v, -1, new.group)
        low, levels = g.amin(-1, keepdim=True).half().float(), 2 ** bits - 1
        scale = ((g.amax(-1, keepdim=True) - low) / levels).clamp(min=1e-6).half().float()
        q = ((g - low) / scale).round().clamp(0, levels).to(torch.uint8).reshape(v, c)
        per = 8 // bits
        with torch.no_grad():
            new.packed.copy_(sum(q[:, i::per] << (bits * i) for i in range(per)).to(torch.uint8))
            new.scale.copy_(scale.squeeze(-1))
            new.low.copy_(low.squeeze(-1))
            new.ref = new.ref.to(table.weight.dtype)
        return new

    def forward(self, ids):  # (B, T) -> (B, T, C): unpack only the rows asked for
        p, per = self.packed[ids], 8 // self.bits
        q = torch.stack([(p >> (self.bits * i)) & (2 ** self.bits - 1) for i in range(per)], -1).flatten(-2)
        q = q.to(self.ref.dtype).unflatten(-1, (-1, self.group))
        return (q * self.scale[ids, :, None].to(q.dtype) + self.low[ids, :, None].to(q.dtype)).flatten(-2)

    def extra_repr(self):
        return f"vocab={self.num_embeddings}, dim={self.embedding_dim}, bits={self.bits}, group={self.group}"


def low_bit_embeddings(model: nn.Module, adapter, bits: int) -> nn.Module:
    """The word-embedding table at `bits` (2 or 4) per weight, in place; refused for a tied table."""
    if tied_embeddings(model, adapter):
        raise CompressError("this model's output layer shares the word-embedding table (tied weights), so a "
                            f"{bits}-bit table would change its output layer too")
    set_module(model, adapter.word_embeddings, LowBitEmbedding.from_embedding(model.get_submodule(adapter.word_embeddings), bits))
    return model


def _ste(x, q):  # forward: q; backward: straight through to x
    return x + (q - x).detach()


def _fake_linear(layer: nn.Linear):
    def forward(x):
        lo, hi = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)  # fbgemm: 7-bit, per tensor
        s = ((hi - lo) / 127).clamp(min=1e-8)
        z = (-lo / s).round()
        x = _ste(x, (((x / s).round() + z).clamp(0, 127) - z) * s)
        w = layer.weight
        sw = w.detach().abs().amax(1, keepdim=True).clamp(min=1e-8) / 127.5  # per-channel symmetric int8
        return nn.functional.linear(x, _ste(w, (w / sw).round().clamp(-128, 127) * sw), layer.bias)
    return forward


@contextlib.contextmanager
def fake_int8(model: nn.Module):
    """While inside, every nn.Linear rounds its weight like per-channel int8 and its input like fbgemm's
    dynamic activations (per tensor, 7-bit), gradients straight through: healing then learns the model
    that int8 will run (quantization-aware training)."""
    layers = [m for m in model.modules() if type(m) is nn.Linear]
    for m in layers:
        m.forward = _fake_linear(m)
    try:
        yield model
    finally:
        for m in layers:
            del m.forward
