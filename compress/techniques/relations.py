"""Attention-relation distillation (MiniLM v2, Wang et al. 2021), a healing option (`heal_relations`): the student's
last block learns the original's last block's self-attention relations: for each of the query, key and value
projections' outputs X (split into R relation heads), softmax(X X^T / sqrt(d)) over the real tokens. Relations are
token x token, so a student with fewer heads or a factorized projection is compared with the original all the same
(R divides both widths). Loss: KL(original || student) per real query position, averaged over relation heads, positions
and the three relations. Last block to last block is MiniLM v2's choice for a base-size teacher; with fewer layers
the student's last block is usually the original's last kept (layers.py keeps the blocks that change their input most).
Encoders only, and the blocks must still have their projections and every token (not FNet, not token pooling)."""
import contextlib
import math

import torch
import torch.nn.functional as F

from ..errors import CompressError

MAX_HEADS = 12  # relation heads at most (MiniLM v2: 12 for base-size teachers)
WEIGHT = 1.0  # beside the pooled-output and hidden-state losses


def refuse(bundle, r) -> str | None:
    """Why this recipe cannot heal with attention relations (None: it can)."""
    if not (r.heal_relations and r.heal_steps):
        return None
    if r.static or r.fnet or r.pool > 1:
        return "attention relations need the blocks' attention on every token (not with static, FNet or pooling)"
    if bundle is not None and bundle.task != "embedding":
        return "attention relations are distilled for encoders (sentence embeddings) only"
    return None


@contextlib.contextmanager
def capture(model, adapter):
    """During the forwards inside, the last block's q, k and v outputs: yields a dict filled by the next forward."""
    block, out, hooks = adapter.block_list(model)[-1], {}, []
    try:
        for name in "q" if adapter.fused_qkv else "qkv":
            try:
                mod = block.get_submodule(getattr(adapter, name))
            except AttributeError:
                raise CompressError("attention relations need the blocks' query, key and value projections") from None
            hooks.append(mod.register_forward_hook(  # a fused projection (ModernBERT's Wqkv): [q | k | v]
                lambda _m, _i, o, n=name: out.update(zip("qkv", o.chunk(3, -1)) if adapter.fused_qkv else {n: o})))
        yield out
    finally:
        for h in hooks:
            h.remove()


def heads(width_t: int, width_s: int) -> int:
    """R: the most relation heads (up to MAX_HEADS) that divide both widths."""
    g = math.gcd(width_t, width_s)
    return max(r for r in range(1, MAX_HEADS + 1) if g % r == 0)


def log_relations(x: torch.Tensor, r: int, real: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, r, T, T) log softmax(X X^T / sqrt(D / r)) per relation head, padded keys left out."""
    b, t, d = x.shape
    x = x.float().view(b, t, r, d // r).transpose(1, 2)
    s = x @ x.transpose(-1, -2) / math.sqrt(d // r)
    return s.masked_fill(~real[:, None, None, :], -1e9).log_softmax(-1)


def loss(student: dict, teacher: dict, mask: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student) of the q-q, k-k and v-v relations over real query positions and relation heads."""
    real, terms = mask.bool(), []
    for n in "qkv":
        if n not in student or n not in teacher:
            raise CompressError("attention relations: the last block's projections did not run")
        r = heads(teacher[n].shape[-1], student[n].shape[-1])
        lt, ls = log_relations(teacher[n], r, real), log_relations(student[n], r, real)
        kl = F.kl_div(ls, lt, log_target=True, reduction="none").sum(-1)  # (B, r, T)
        terms.append(kl.mean(1)[real].mean())
    return torch.stack(terms).mean()
