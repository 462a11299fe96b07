"""Packed low-bit weights: rows stored at 2, 4 or 8 bits, asymmetric, one fp16 scale and minimum per group of a row,
8 // bits values to a byte (a row whose width is not a multiple of that ends in a zero-padded byte). Used by the word
table at 2/4 bits (LowBitEmbedding, here) and by int4 (int4.py)."""
import contextlib

import torch
import torch.nn as nn

from ..models.adapters import set_module, tied_embeddings
from ..errors import CompressError

TEACH = ("Low-bit table: every row of the token table stored in 4 or 2 bits, with a scale and minimum per 128 weights; "
         "only the rows a text uses are unpacked. On MiniLM 4-bit is nearly lossless (fidelity 0.998) and 2-bit keeps "
         "0.95 at the size where rank factorization keeps 0.70. Applied before healing, so the blocks learn to work "
         "with it.")
GROUP = 128  # one scale and minimum per GROUP weights of a row (smaller powers of two, or the row, if it does not divide)


STATIC_TEACH = ("Static table bits: the static end's table (it is the whole model) at 4 or 2 bits per weight (the "
                "Word-embedding table bits control). Healing trains the float table with that rounding simulated, "
                "then the rows are packed: the blocks' table is packed before healing (the blocks learn around it); "
                "this one is what healing trains.")


def group_size(width: int, largest: int = GROUP) -> int:
    g = largest
    while g >= 32 and width % g:
        g //= 2
    return g if g >= 32 and width % g == 0 else width


def packed_width(width: int, bits: int) -> int:
    """Bytes per packed row: width values, 8 // bits to a byte, the last byte padded."""
    return -(-width * bits // 8)


def round_groups(w: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q (R, C) integers in [0, 2^bits), scale, low (R, C // group)); q * scale + low ~= w."""
    r, c = w.shape
    g = w.float().reshape(r, -1, group)
    low, levels = g.amin(-1, keepdim=True).half().float(), 2 ** bits - 1
    scale = ((g.amax(-1, keepdim=True) - low) / levels).clamp(min=1e-6).half().float()
    q = ((g - low) / scale).round().clamp(0, levels)
    return q.reshape(r, c), scale.squeeze(-1), low.squeeze(-1)


def fake_round(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """w rounded as pack() stores it, in w's dtype (for quantization-aware healing)."""
    q, scale, low = round_groups(w.detach(), bits, group)
    return (q.unflatten(-1, (-1, group)) * scale[..., None] + low[..., None]).flatten(-2).to(w.dtype)


def pack(w: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(packed uint8 (R, packed_width(C, bits)), scale fp16, low fp16 (R, C // group))."""
    q, scale, low = round_groups(w, bits, group)
    q, per = q.to(torch.uint8), 8 // bits
    q = torch.nn.functional.pad(q, (0, packed_width(q.shape[1], bits) * per - q.shape[1]))
    packed = sum(q[:, i::per] << (bits * i) for i in range(per)).to(torch.uint8)
    return packed, scale.half(), low.half()


def unpack(packed, scale, low, bits: int, group: int, dtype) -> torch.Tensor:
    """(..., packed_width(C, bits)) packed rows and their (..., C // group) scales and minimums -> (..., C) in dtype."""
    per, p = 8 // bits, packed.to(torch.int32)  # integer division and remainder, not shifts and masks: these export
    q = torch.stack([torch.div(p, 2 ** (bits * i), rounding_mode="floor") % 2 ** bits for i in range(per)], -1)  # to ONNX
    q, width = q.flatten(-2), scale.shape[-1] * group
    q = q[..., :width] if q.shape[-1] != width else q  # the padding of a row's last byte dropped
    q = q.to(dtype).unflatten(-1, (-1, group))
    return (q * scale[..., None].to(dtype) + low[..., None].to(dtype)).flatten(-2)


class Packed(nn.Module):
    """A module whose weights are packed integers: it declares its logical weights (rows x width) as the params it
    stores (measure.core's StoresPacked)."""
    rows: int
    width: int

    def stored_params(self) -> int:
        return self.rows * self.width


class LowBitEmbedding(Packed):
    """A token table at 2 or 4 bits per weight (8: int4's word and position tables, int4.py). Only the looked-up rows
    are unpacked, so it costs little time. MiniLM's table (11.7M weights, half the model): 4-bit g128 keeps fidelity
    0.998, 2-bit 0.953 at 3.3 MB, where a rank-96 factorization (int8, 3.0 MB) keeps 0.70."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.bits, self.padding_idx = num_embeddings, embedding_dim, bits, padding_idx
        self.rows, self.width = num_embeddings, embedding_dim
        self.group = GROUP if embedding_dim % GROUP == 0 else embedding_dim
        n_groups = embedding_dim // self.group
        packed = torch.zeros(num_embeddings, packed_width(embedding_dim, bits), dtype=torch.uint8)
        self.register_buffer("packed", packed)
        self.register_buffer("scale", torch.ones(num_embeddings, n_groups, dtype=torch.float16))
        self.register_buffer("low", torch.zeros(num_embeddings, n_groups, dtype=torch.float16))
        self.register_buffer("ref", torch.zeros(0), persistent=False)  # follows .to(dtype): the output dtype

    @classmethod
    def from_embedding(cls, table: nn.Embedding, bits: int) -> "LowBitEmbedding":
        w = table.weight.detach()
        new = cls(*w.shape, bits, table.padding_idx).to(w.device)
        with torch.no_grad():
            for buf, value in zip((new.packed, new.scale, new.low), pack(w, bits, new.group)):
                buf.copy_(value)
            new.ref = new.ref.to(w.dtype)
        return new

    def forward(self, ids):  # (B, T) -> (B, T, C): unpack only the rows asked for (the fp16 tables cast before the
        d = self.ref.dtype  # lookup: ONNX Runtime's int8 quantization would take a Gather from an fp16 table for its own)
        return unpack(self.packed[ids], self.scale.to(d)[ids], self.low.to(d)[ids], self.bits, self.group, d)

    def extra_repr(self):
        return f"vocab={self.num_embeddings}, dim={self.embedding_dim}, bits={self.bits}, group={self.group}"


@contextlib.contextmanager
def fake_table(model: nn.Module, adapter, bits: int):
    """While inside, the word table's rows read as LowBitEmbedding will store them, gradients straight through to the
    float table (the static end heals its table this way, then packs it)."""
    emb = model.get_submodule(adapter.word_embeddings)
    group = GROUP if emb.embedding_dim % GROUP == 0 else emb.embedding_dim
    emb.forward = lambda ids: nn.functional.embedding(
        ids, emb.weight + (fake_round(emb.weight, bits, group) - emb.weight).detach(), emb.padding_idx)
    try:
        yield
    finally:
        del emb.forward


def low_bit_embeddings(model: nn.Module, adapter, bits: int) -> nn.Module:
    """The word-embedding table at `bits` (2 or 4) per weight, in place; refused for a tied table."""
    if tied_embeddings(model, adapter):
        raise CompressError("this model's output layer shares the word-embedding table (tied weights), so a "
                            f"{bits}-bit table would change its output layer too")
    set_module(model, adapter.word_embeddings, LowBitEmbedding.from_embedding(model.get_submodule(adapter.word_embeddings), bits))
    return model
