"""Weight-only int4 for the Linear layers inside the blocks: group-wise asymmetric 4-bit weights (lowbit.pack),
two to a byte, dequantized to float on every call, biases in fp16; activations stay float, so it runs on any device. With
quant_embeddings everything else is stored in 8 bits, as int8 stores it: the word and position tables (LowBitEmbedding
at 8 bits: only the rows looked up are unpacked, on any device) and the Linear layers outside the blocks (a pooler, an
untied LM head: LowBitLinear at 8 bits); a 2/4-bit table (emb_bits), a table tied to an output layer and that layer stay
as they are. Healing simulates the rounding of the blocks (fake_int4), so a healed model learns the weights int4
stores (what lies outside the blocks does not heal)."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.adapters import set_module, tied_embeddings
from .lowbit import LowBitEmbedding, Packed, fake_round, group_size, pack, packed_width, unpack
from .quantize import fake_quant, tied_head

BITS = 4


TEACH = ("int4 (weight-only): every Linear in the blocks in 4 bits, one fp16 scale and minimum per group of 128 "
         "inputs (64 or 32 where 128 does not divide), unpacked to float per call; activations stay float; "
         "tables and other Linears (a pooler) in 8 bits. ~6x smaller blocks, more loss than int8 (heal with it "
         "on: it trains with int4 rounding). Runs on: any device; with onnxruntime stored int4, run as int8.")


class LowBitLinear(Packed):
    """A Linear whose weight is packed at `bits` (4 inside the blocks, 8 outside them) per weight."""
    def __init__(self, in_features: int, out_features: int, bias: bool = True, group: int | None = None,
                 bits: int = BITS):
        super().__init__()
        self.in_features, self.out_features, self.bits = in_features, out_features, bits
        self.rows, self.width = out_features, in_features
        self.group = group or group_size(in_features)
        n = in_features // self.group
        self.register_buffer("packed", torch.zeros(out_features, packed_width(in_features, bits), dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features, n, dtype=torch.float16))
        self.register_buffer("low", torch.zeros(out_features, n, dtype=torch.float16))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=torch.float16)) if bias else None  # (fp32: 2x, no gain)

    def stored_params(self) -> int:
        return self.rows * self.width + (self.out_features if self.bias is not None else 0)

    @classmethod
    def from_linear(cls, layer: nn.Linear, bits: int = BITS) -> "LowBitLinear":
        w = layer.weight.detach()
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, bits=bits).to(w.device)
        with torch.no_grad():
            for buf, value in zip((new.packed, new.scale, new.low), pack(w, bits, new.group)):
                buf.copy_(value)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def weight(self, dtype) -> torch.Tensor:  # (out, in), unpacked on every call: only the packed form is kept
        return unpack(self.packed, self.scale, self.low, self.bits, self.group, dtype)

    def forward(self, x):  # (..., in) -> (..., out)
        return F.linear(x, self.weight(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}, group={self.group}"


def _block_linears(model: nn.Module, adapter) -> list[str]:
    return [f"{adapter.blocks}.{n}" for n, m in adapter.block_list(model).named_modules() if type(m) is nn.Linear]


def apply_int4(model: nn.Module, adapter, tables: bool = True) -> nn.Module:
    """Every nn.Linear inside the blocks (factorized ones' two halves too) as a 4-bit LowBitLinear, in place; tables:
    the plain word and position tables and the Linear layers outside the blocks in 8 bits (not a tied table or
    head)."""
    bits, head = dict.fromkeys(_block_linears(model, adapter), BITS), tied_head(model, adapter)
    if tables:
        bits |= {n: 8 for n, m in model.named_modules() if type(m) is nn.Linear and n not in bits and n != head}
    for name, b in bits.items():
        set_module(model, name, LowBitLinear.from_linear(model.get_submodule(name), b))
    present = dict(model.named_modules())
    for path in (adapter.word_embeddings, adapter.position_embeddings) if tables else ():
        if type(present.get(path)) is nn.Embedding and not (path == adapter.word_embeddings and
                                                            tied_embeddings(model, adapter)):
            set_module(model, path, LowBitEmbedding.from_embedding(present[path], 8))
    return model


def saved_float(model: nn.Module, head: dict) -> None:
    """A zip saved before int4 stored the Linears outside the blocks in 8 bits holds them in float: those layers
    become float Linears again; one saved before it stored biases in fp16 holds them in fp32: those biases become
    fp32 again; so its weights load as they were saved (tensors.load_state's fit, given the file's header)."""
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, LowBitLinear)]:
        if m.bits == 8 and f"{name}.weight" in head and f"{name}.packed" not in head:
            set_module(model, name, nn.Linear(m.in_features, m.out_features, m.bias is not None))
        elif m.bias is not None and (head.get(f"{name}.bias") or {}).get("dtype") == "F32":
            m.bias = nn.Parameter(m.bias.float())


def int4_model(model: nn.Module, adapter, r) -> nn.Module:  # the table's int4 step
    return apply_int4(model, adapter, r.quant_embeddings)


def block_layers(model: nn.Module, adapter) -> list[nn.Linear]:
    return [model.get_submodule(n) for n in _block_linears(model, adapter)]


def round_int4(w: torch.Tensor) -> torch.Tensor:  # (out, in) rounded as LowBitLinear stores it
    return fake_round(w, BITS, group_size(w.shape[1]))


def fake_int4(model: nn.Module, adapter):
    """While inside, the blocks' Linear layers round their weights as LowBitLinear stores them (straight-through)."""
    return fake_quant(block_layers(model, adapter), round_int4)


def unpacked(model: nn.Module) -> nn.Module:
    """A copy whose LowBitLinear layers are nn.Linear layers of the weights they store (what ONNX Runtime is given:
    it quantizes them to int8 once, when the session is built; the zip keeps the packed form)."""
    model = copy.deepcopy(model)
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, LowBitLinear)]:
        layer = nn.Linear(m.in_features, m.out_features, m.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(m.weight(torch.float32))
            if m.bias is not None:
                layer.bias.copy_(m.bias)
        set_module(model, name, layer)
    return model
