"""Attention-head pruning and FFN narrowing: heads and neurons are physically removed, ranked by importance.

transformers 5.x has no prune_heads, so we slice the layers ourselves. Head h owns rows h*hd:(h+1)*hd of q, k
and v (of each third of GPT-2's fused c_attn) and the same input columns of o; FFN neuron i owns row i of ffn_in
(and of the SwiGLU gate) and input column i of ffn_out. Attention reshapes with view(..., -1, hd), so narrower
layers just work; the few head-count attributes a family keeps are updated. The model config is left alone: it keeps
the ORIGINAL head count, so head_dim = hidden / config heads stays readable (and a per-layer count could not live
there anyway).
Grouped-query attention (Llama family): n_kv key/value heads, each shared by a group of g = H / n_kv consecutive
query heads (transformers' repeat_kv). A kept count k must leave every group the same size, so: k a multiple of
n_kv keeps every k/v head and the k / n_kv most important query heads of each group; otherwise k a multiple of g
keeps the k / g most important whole groups, their k/v rows with them. Without GQA (g = 1) that is plain head
pruning, every count allowed.
Everything works in place on the model given: callers deep-copy first (compress() does).
"""
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.adapters import Adapter, forward, set_module
from ..measure.evaluate import mean_pool
from ..errors import CompressError
from .heal import calibration_batches


def head_dim(model: nn.Module, adapter: Adapter) -> int:
    """hidden / original head count; o's output width is the hidden size in every family."""
    hidden = adapter.block_list(model)[0].get_submodule(adapter.o).out_features
    return hidden // getattr(model.config, adapter.heads_attr)


def heads_per_layer(model: nn.Module, adapter: Adapter) -> list[int]:
    """Heads each block has now, read off the q width (so it is right after pruning, even per layer)."""
    hd, n = head_dim(model, adapter), 3 if adapter.fused_qkv else 1
    return [block.get_submodule(adapter.q).out_features // n // hd for block in adapter.block_list(model)]


def kv_heads_per_layer(model: nn.Module, adapter: Adapter) -> list[int]:
    """Key/value heads each block has now (k's width; one per query head without GQA or with a fused c_attn)."""
    if adapter.fused_qkv:
        return heads_per_layer(model, adapter)
    hd = head_dim(model, adapter)
    return [block.get_submodule(adapter.k).out_features // hd for block in adapter.block_list(model)]


def allowed_heads(h: int, kv: int) -> list[int]:
    """The query-head counts a block of h query heads over kv key/value heads can keep (module docstring)."""
    g = h // kv
    return [k for k in range(1, h + 1) if k % kv == 0 or k % g == 0]


def _plan(s: torch.Tensor, k: int, h: int, kv: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(query heads kept, key/value heads kept), each sorted, from one block's (H,) query-head scores."""
    g = h // kv
    if k % kv == 0:  # every group keeps its k / kv best query heads
        per = s.view(kv, g).topk(k // kv, dim=1).indices + torch.arange(kv)[:, None] * g   # (kv, k / kv)
        return per.flatten().sort().values, torch.arange(kv)
    groups = s.view(kv, g).sum(1).topk(k // g).indices.sort().values                        # whole groups
    return (groups[:, None] * g + torch.arange(g)).flatten(), groups


def _rows_of(heads: torch.Tensor, hd: int) -> torch.Tensor:
    return (heads[:, None] * hd + torch.arange(hd)).flatten()


# --------------------------------------------------------------------------- importance scores


@contextmanager
def head_mask(model: nn.Module, adapter: Adapter, masks: list[torch.Tensor]):
    """Scale head h's output by masks[layer][..., h] on its way into o (Michel et al.'s xi); shape (H,) or (B, H)."""
    def hook_for(xi):
        def hook(module, args):
            x = args[0]                                       # (B, T, H*hd)
            h = xi.shape[-1]
            x = (x.unflatten(-1, (h, -1)) * xi.reshape(-1, 1, h, 1)).flatten(-2)  # (B, T, H, hd) * (B, 1, H, 1)
            return (x, *args[1:])
        return hook
    handles = [block.get_submodule(adapter.o).register_forward_pre_hook(hook_for(xi))
               for block, xi in zip(adapter.block_list(model), masks)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def _weight_scores(model: nn.Module, adapter: Adapter) -> list[torch.Tensor]:
    # Score = ||W_o[:, h] W_v[h]||_F, the norm of the head's OV circuit. Attention weights sum to 1, so a head writes
    # W_o,h W_v,h (a convex mix of the token vectors) into the residual stream: OV sets how much it can write, while
    # q/k only choose where to look. Computed without the (C, C) product: ||AB||_F^2 = sum((A^T A) * (B B^T)).
    # Under GQA query head h reads the v of its group, h // g.
    hd, out = head_dim(model, adapter), []
    for block in adapter.block_list(model):
        v, rows = adapter.qkv(block)[2]
        wv = v.weight[rows]                                   # (kv*hd, C)
        wo = block.get_submodule(adapter.o).weight            # (C, H*hd)
        h, kv = wo.shape[1] // hd, wv.shape[0] // hd
        a = wo.unflatten(1, (h, hd)).transpose(0, 1)          # (H, C, hd)
        b = wv.unflatten(0, (kv, hd))[torch.arange(h) // (h // kv)]  # (H, hd, C)
        out.append(((a.mT @ a) * (b @ b.mT)).sum((-2, -1)).clamp(min=0).sqrt().float())
    return out


def _lm_loss(logits, ids, mask):
    """Sum over examples of each one's mean next-token cross-entropy on real tokens (per-example xi stays separable)."""
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
    m = mask[:, 1:].float()                                   # (B, T-1)
    return ((ce.view_as(m) * m).sum(1) / m.sum(1).clamp(min=1)).sum()


def _contrastive_loss(hidden, mask):
    # Encoders come without labels or an MLM head (MiniLM is a sentence-embedding model), and distilling to the
    # unmasked model has zero gradient at xi = 1. So: in-batch InfoNCE on mean-pooled embeddings, each sentence's
    # (detached) own embedding the positive and the other sentences the negatives, scale 20 as in sentence-transformers'
    # MultipleNegativesRankingLoss. Its gradient asks which heads keep sentences apart: the retrieval task itself.
    e = F.normalize(mean_pool(hidden, mask), dim=-1)          # (B, C)
    logits = 20.0 * e @ e.detach().T                          # (B, B)
    return F.cross_entropy(logits.float(), torch.arange(len(e), device=e.device), reduction="sum")


def _gradient_scores(model, adapter, batches, causal):
    # Michel et al. 2019: I_h = mean over examples of |dL/dxi_h|, then L2-normalized per layer. xi is (B, H) per
    # batch, so one backward gives every example's own gradient.
    if not batches:
        raise CompressError("gradient head scores need calibration batches: a list of (ids, mask) tensors")
    counts, dtype = heads_per_layer(model, adapter), next(model.parameters()).dtype
    total, n, was_training = [torch.zeros(h) for h in counts], 0, model.training
    model.eval()  # no dropout: the scores are a property of the model, not of a random mask
    try:
        for ids, mask in batches:
            mask = torch.ones_like(ids) if mask is None else mask
            if not causal and len(ids) < 2:
                raise CompressError("gradient head scores for encoders need batches of at least 2 sentences "
                                    "(the loss contrasts sentences within a batch)")
            xis = [torch.ones(len(ids), h, dtype=dtype, device=ids.device, requires_grad=True) for h in counts]
            with head_mask(model, adapter, xis):
                out = forward(model, adapter, ids, mask)
            loss = _lm_loss(out, ids, mask) if causal else _contrastive_loss(out, mask)
            for t, g in zip(total, torch.autograd.grad(loss, xis)):
                t += g.detach().abs().sum(0).float().cpu()
            n += len(ids)
    finally:
        model.train(was_training)
    return [F.normalize(t / n, dim=0) for t in total]


def head_scores(model: nn.Module, adapter: Adapter, method: str = "weight", batches=None,
                causal_lm: bool | None = None) -> list[torch.Tensor]:
    """One (H,) importance tensor per block, higher = more important.
    method "weight": data-free OV-circuit norm. "gradient": Michel et al. 2019 on batches [(ids, mask)], with a
    next-token loss (decoders) or an in-batch contrastive loss (encoders); causal_lm overrides adapter.causal."""
    if method == "weight":
        return _weight_scores(model, adapter)
    if method == "gradient":
        return _gradient_scores(model, adapter, batches, adapter.causal if causal_lm is None else causal_lm)
    raise CompressError(f"unknown head score method {method!r}; use 'weight' or 'gradient'")


@torch.no_grad()
def ffn_scores(model: nn.Module, adapter: Adapter) -> list[torch.Tensor]:
    """Per intermediate neuron: ||ffn_in row|| * ||ffn_out column|| (how much it reads times how much it writes);
    SwiGLU: times ||gate row|| too (the neuron's output is the product of both reads)."""
    def score(block):
        s = block.get_submodule(adapter.ffn_in).weight.norm(dim=1) * block.get_submodule(adapter.ffn_out).weight.norm(dim=0)
        return (s * block.get_submodule(adapter.ffn_gate).weight.norm(dim=1) if adapter.ffn_gate else s).float()
    return [score(block) for block in adapter.block_list(model)]


# --------------------------------------------------------------------------- physical removal


def _linear(block, path):
    layer = block.get_submodule(path)
    if not isinstance(layer, nn.Linear):
        raise CompressError(f"{path} is a {type(layer).__name__}, not nn.Linear: prune heads and narrow the FFN "
                            "before factorization or quantization")
    return layer


def _rows(layer: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """The layer keeping only output rows idx."""
    new = nn.Linear(layer.in_features, len(idx), bias=layer.bias is not None,
                    device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(layer.weight[idx])
        if layer.bias is not None:
            new.bias.copy_(layer.bias[idx])
    return new


def _cols(layer: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """The layer keeping only input columns idx (same outputs, same bias)."""
    new = nn.Linear(len(idx), layer.out_features, bias=layer.bias is not None,
                    device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(layer.weight[:, idx])
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new


def prune_heads(model: nn.Module, adapter: Adapter, keep, scores: list[torch.Tensor] | None = None) -> nn.Module:
    """Keep the top-k heads by score (default: weight scores) in every block, in their original order; keep is one
    int for all blocks or one int per block; under GQA within each group, or whole groups (module docstring). In
    place."""
    blocks, counts = adapter.block_list(model), heads_per_layer(model, adapter)
    kvs = kv_heads_per_layer(model, adapter)
    ks = [keep] * len(counts) if isinstance(keep, (int, float)) else list(keep)
    if len(ks) != len(counts):
        raise CompressError(f"keep lists {len(ks)} head counts but the model has {len(counts)} blocks")
    for i, (k, h, kv) in enumerate(zip(ks, counts, kvs)):
        if not isinstance(k, int) or not 1 <= k <= h:
            raise CompressError(f"block {i} has {h} heads: keep must be a whole number from 1 to {h}, got {k!r}")
        if k not in allowed_heads(h, kv):
            raise CompressError(gqa_refusal(h, kv, k))
    scores = head_scores(model, adapter) if scores is None else scores
    if len(scores) != len(counts):
        raise CompressError(f"{len(scores)} head score tensors for {len(counts)} blocks")
    hd = head_dim(model, adapter)
    for i, (block, k, h, kv, s) in enumerate(zip(blocks, ks, counts, kvs, scores)):
        if len(s) != h:
            raise CompressError(f"block {i} has {h} heads but {len(s)} scores")
        heads, groups = _plan(s.detach().float().cpu(), k, h, kv)
        rows, kv_rows = _rows_of(heads, hd), _rows_of(groups, hd)   # kept rows of q / of k, v (and cols of o)
        gone = torch.ones(h * hd, dtype=torch.bool)
        gone[rows] = False
        o, (v, v_rows) = _linear(block, adapter.o), adapter.qkv(block)[2]
        new_o = _cols(o, rows)
        if gone.any() and v.bias is not None and o.bias is not None:
            # Attention weights sum to 1, so v's bias reaches o as the constant W_o,h b_v,h: fold it into o's bias
            # and the removed heads' bias part stays exact (b_v,h: the bias of head h's group under GQA).
            with torch.no_grad():
                bv = v.bias[v_rows].view(kv, hd)[torch.arange(h) // (h // kv)].flatten()  # (H*hd,) per query head
                new_o.bias += o.weight[:, gone] @ bv[gone]
        set_module(block, adapter.o, new_o)
        if adapter.fused_qkv:  # the same rows in each third of c_attn
            thirds = torch.cat([rows + j * h * hd for j in range(3)])
            set_module(block, adapter.q, _rows(_linear(block, adapter.q), thirds))
        else:
            for path, keep_rows in ((adapter.q, rows), (adapter.k, kv_rows), (adapter.v, kv_rows)):
                set_module(block, path, _rows(_linear(block, path), keep_rows))
        adapter.set_head_count(block, k, hd, heads)  # the head-count attributes the family keeps (TinyGPT: none)
    return model


def gqa_refusal(h: int, kv: int, k) -> str:
    """The one line refusing a query-head count that would leave k/v groups of different sizes."""
    return (f"{h} query heads share {kv} key/value heads ({h // kv} a group), so every group must keep the same "
            f"number: keep {', '.join(map(str, allowed_heads(h, kv)))} heads per block, got {k}")


def narrow_ffn(model: nn.Module, adapter: Adapter, fraction: float,
               scores: list[torch.Tensor] | None = None) -> nn.Module:
    """Keep round(fraction * d_ff) neurons (at least 1) per block, highest score first, original order. In place."""
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise CompressError(f"FFN fraction must be in (0, 1], got {fraction!r}")
    scores = ffn_scores(model, adapter) if scores is None else scores
    if len(scores) != len(adapter.block_list(model)):
        raise CompressError(f"{len(scores)} FFN score tensors for {len(adapter.block_list(model))} blocks")
    for block, s in zip(adapter.block_list(model), scores):
        fc_in, fc_out = _linear(block, adapter.ffn_in), _linear(block, adapter.ffn_out)
        idx = s.topk(max(1, round(fraction * fc_in.out_features))).indices.sort().values.cpu()
        for path in filter(None, (adapter.ffn_in, adapter.ffn_gate)):  # SwiGLU: gate and up lose the same rows
            set_module(block, path, _rows(_linear(block, path), idx))
        set_module(block, adapter.ffn_out, _cols(fc_out, idx))
    return model


def heads_step(ctx, r):
    """The table's head-pruning step (its gradient scores on the calibration text when the recipe asks)."""
    b = ctx.base
    scores = head_scores(ctx.model, b.adapter, "gradient", calibration_batches(b)) \
        if r.head_score == "gradient" else None
    prune_heads(ctx.model, b.adapter, r.heads, scores)


def refuse(b, r) -> str | None:
    """A per-block list's length and maxima, and grouped-query attention's equal groups, for a model (the table's)."""
    ks = (r.heads,) if isinstance(r.heads, int) else r.heads
    if not isinstance(r.heads, int):
        n, h = r.layers or b.info["layers"], b.info["heads"]
        if len(r.heads) != n:
            return f"the per-layer head list has {len(r.heads)} entries but the model keeps {n} blocks"
        if max(r.heads) > h:
            return f"{b.name} has {h} heads per block: keep a whole number from 1 to {h} in each, got {max(r.heads)}"
    h, kv = b.info["heads"], b.info.get("kv_heads", b.info["heads"])  # grouped-query attention: equal groups
    bad = next((k for k in ks if k not in allowed_heads(h, kv)), None)
    return None if bad is None else f"{b.name}: {gqa_refusal(h, kv, bad)}"
