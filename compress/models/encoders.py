"""Encoder families whose positions or layout need more than BERT's facts (registered in adapters.py's ADAPTERS):
RoBERTa (positions read off the ids), MPNet and ModernBERT.

MPNet (all-mpnet-base-v2): BERT's block layout with q, k, v and o inside one attention module, plus a relative position
bias: ONE table (buckets x heads) in the encoder, its (B, H, T, T) bias computed once per call and added to every
block's scores. A block that keeps some heads must read that bias's columns of its own heads: head pruning records
them on the attention module (bias_heads) and a forward pre-hook selects them (the table stays whole: other blocks
keep other heads). Its positions are RoBERTa's, with padding id 1 whatever the config says.

ModernBERT: pre-norm blocks, rotary positions, no biases, alternating global and local (sliding-window) attention,
q, k and v fused in one Wqkv (rows [q | k | v], head h owning rows h*hd:(h+1)*hd of each third: GPT-2's c_attn
layout) and a GeGLU MLP whose Wi is fused too (rows [input | gate], Wo(act(input) * gate)). At load the Wi is split in
two Linears, Wi and Wgate (as GPT-2's Conv1D becomes nn.Linear): FFN narrowing then cuts the same rows of both, and
factorization sees each half. transformers 5.x runs it padded (unpadding lives in flash attention only), so every
technique sees (B, T) batches. Its blocks receive rotary tables of the whole sequence, so token pooling is refused.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn

from .adapter import Adapter, set_module


def _bias_heads(attn, args):
    """MPNet's attention is called (hidden, mask, position_bias): the bias's columns of the heads this block kept."""
    if len(args) > 2 and args[2] is not None:
        args = (*args[:2], args[2][:, attn.bias_heads], *args[3:])
    return args


@dataclass(frozen=True)
class RobertaAdapter(Adapter):
    """Positions start after the padding id and skip padding ids, read off the token ids: they are computed here from
    the ids given, as vocabulary pruning maps the ids to table rows at the model's entrance (positions read off the
    mapped ids would shift wherever a kept row's index is the padding id). MPNet is the same with padding id 1."""
    def padding_id(self, config) -> int:
        return config.pad_token_id or 0

    def position_offset(self, config) -> int:
        return self.padding_id(config) + 1

    def call(self, model, ids, mask):
        config = getattr(model, "config", None)  # (the static table has none: it has no positions either)
        if config is None:
            return super().call(model, ids, mask)
        real = ids.ne(self.padding_id(config)).int()  # transformers' create_position_ids_from_input_ids
        pos = (torch.cumsum(real, dim=1) * real).long() + self.padding_id(config)
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state


@dataclass(frozen=True)
class MPNetAdapter(RobertaAdapter):
    extra_counts = (("relative_attention_num_buckets", 1024),)
    attn_runtimes = ("eager",)  # its attention is its own code (no sdpa, no attention interface)
    refusals = (("attention", "MPNet adds its relative position bias inside its own attention code, which the "
                 "efficient attention variants do not reach (transformers' attention interface is not used there)"),
                ("pool", "MPNet's relative position bias is computed once for the whole sequence, so blocks cannot "
                 "run on fewer tokens"))

    def padding_id(self, config) -> int:
        return 1  # MPNetEmbeddings' padding_idx, whatever the config says

    def set_head_count(self, block, count, head_dim, kept=None):
        super().set_head_count(block, count, head_dim, kept)
        if kept is None:
            return
        attn = block.get_submodule(self.q.rpartition(".")[0])
        before = getattr(attn, "bias_heads", None)
        if before is None:
            attn.register_forward_pre_hook(_bias_heads)
        attn.register_buffer("bias_heads", kept.clone() if before is None else before[kept], persistent=False)

    def set_attn_runtime(self, model, impl):
        pass  # eager only


class GeGLU(nn.Module):
    """ModernBERT's MLP with its fused Wi split: Wo(drop(act(Wi(x)) * Wgate(x))), the same numbers."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        ff, w = mlp.Wi.out_features // 2, mlp.Wi
        self.Wi, self.Wgate = (_part(w, i * ff, (i + 1) * ff) for i in range(2))
        self.act, self.drop, self.Wo = mlp.act, mlp.drop, mlp.Wo

    def forward(self, x):
        return self.Wo(self.drop(self.act(self.Wi(x)) * self.Wgate(x)))


def _part(layer: nn.Linear, a: int, b: int) -> nn.Linear:
    new = nn.Linear(layer.in_features, b - a, bias=layer.bias is not None, device=layer.weight.device,
                    dtype=layer.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(layer.weight[a:b])
        if layer.bias is not None:
            new.bias.copy_(layer.bias[a:b])
    return new


@dataclass(frozen=True)
class ModernBertAdapter(Adapter):
    extra_counts = (("local_attention", 65536), ("global_attn_every_n_layers", 96))
    refusals = (("pool", "ModernBERT's blocks rotate q and k by position tables of the whole sequence, so they "
                 "cannot run on fewer tokens"),)

    def prepare(self, model):
        """Every block's fused GeGLU Wi split in two Linears (module docstring)."""
        for i, block in enumerate(self.block_list(model)):
            if not isinstance(block.mlp, GeGLU):
                set_module(model, f"{self.blocks}.{i}.mlp", GeGLU(block.mlp))
        return model


_MPNET = dict(blocks="encoder.layer", q="attention.attn.q", k="attention.attn.k", v="attention.attn.v",
              o="attention.attn.o", ffn_in="intermediate.dense", ffn_out="output.dense",
              word_embeddings="embeddings.word_embeddings", causal=False, heads_attr="num_attention_heads",
              position_embeddings="embeddings.position_embeddings",
              head_attrs=(("num_attention_heads", "count"), ("all_head_size", "width")), pooler="pooler")
_MODERNBERT = dict(blocks="layers", q="attn.Wqkv", k="attn.Wqkv", v="attn.Wqkv", o="attn.Wo", ffn_in="mlp.Wi",
                   ffn_gate="mlp.Wgate", ffn_out="mlp.Wo", word_embeddings="embeddings.tok_embeddings", causal=False,
                   heads_attr="num_attention_heads", fused_qkv=True)

ENCODERS = {"mpnet": MPNetAdapter("mpnet", **_MPNET), "modernbert": ModernBertAdapter("modernbert", **_MODERNBERT)}
