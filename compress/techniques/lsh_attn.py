"""A learnable pattern (the survey's third family): LSH buckets, as the Reformer (Kitaev et al. 2020) does.

Queries and keys are hashed by the same random rotation R (d x n/2, drawn once per layer, seeded, a buffer saved
with the weights): bucket(x) = argmax([x R, -x R]), angular LSH, so vectors pointing the same way share a bucket.
Queries and keys are each sorted by (bucket, position), cut into chunks of c, and each query chunk attends the keys
of the key chunks around its own (the one before, its own and the one after: 3c keys, O(T c)) that are in its bucket.
The Reformer ties keys to queries so that one sort serves both; a pretrained model has its own q and k, so each is
sorted on its own and a query whose bucket has no key in its window attends every key there instead (never nothing).
With one bucket and c >= T this is full attention exactly. Encoders only: the sort runs over the whole sequence, so
which earlier keys a token's chunk holds would depend on later tokens' buckets.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sparseattn import _pad_seq, _softmax_mix


def add_rotations(module: nn.Module, buckets: int, d: int, seed: int) -> None:
    """R (d, buckets // 2) Gaussian, a persistent buffer (one bucket: no rotation, every token in bucket 0)."""
    g = torch.Generator().manual_seed(seed)
    module.register_buffer("attn_rotations", torch.randn(d, buckets // 2, generator=g))


def bucket(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, H, T) long: argmax over [x R, -x R] (all 0 without rotations)."""
    if rotations.shape[1] == 0:
        return torch.zeros(x.shape[:-1], dtype=torch.long, device=x.device)
    p = x.float() @ rotations.float()                                  # (B, H, T, n/2)
    return torch.cat([p, -p], dim=-1).argmax(-1)


def _windows(x, c, value):
    """(B, H, P, ...) cut into chunks of c, each with the chunk before and after: (B, H, P/c, 3c, ...)."""
    pad = [0, 0] * (x.dim() - 3) + [c, c]
    w = F.pad(x, pad, value=value).unfold(2, 3 * c, c)                # (B, H, P/c, ..., 3c)
    return w.movedim(-1, 3)


def lsh(module, q, k, v, valid, scale, chunk):
    """Each query attends the keys of its bucket among the 3c keys around its place in the sorted order."""
    B, H, T, d = q.shape
    c = min(chunk, T)
    P = math.ceil(T / c) * c
    valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if valid is None else valid
    real = valid[:, None, :].expand(B, H, T)                            # (B, H, T)
    pos = torch.arange(T, device=q.device)
    n = 2 * module.attn_rotations.shape[1] + 1                          # bucket ids < n; padding sorts last
    bq, bk = bucket(q, module.attn_rotations), bucket(k, module.attn_rotations)
    oq = ((bq + n * ~real) * T + pos).argsort(-1)                      # (B, H, T) the queries' sorted order
    ok = ((bk + n * ~real) * T + pos).argsort(-1)

    def take(x, order):                                                 # (B, H, T, w) in that order
        return x.gather(2, order[..., None].expand(-1, -1, -1, x.shape[-1]))

    qs = _pad_seq(take(q, oq), P).view(B, H, P // c, c, d)             # (B, H, nb, c, d)
    kw = _windows(_pad_seq(take(k, ok), P), c, 0.0)                      # (B, H, nb, 3c, d)
    vw = _windows(_pad_seq(take(v, ok), P), c, 0.0)                      # (B, H, nb, 3c, dv)
    bqs = F.pad(bq.gather(-1, oq), [0, P - T], value=-1).view(B, H, P // c, c)          # (B, H, nb, c)
    bkw = _windows(F.pad(bk.gather(-1, ok), [0, P - T], value=-2), c, -2)                # (B, H, nb, 3c)
    okw = _windows(F.pad(real.gather(-1, ok), [0, P - T], value=False), c, False)        # (B, H, nb, 3c)
    allow = (bqs[..., :, None] == bkw[..., None, :]) & okw[..., None, :]                # (B, H, nb, c, 3c)
    allow = torch.where(allow.any(-1, keepdim=True), allow, okw[..., None, :])           # an empty bucket: all
    y = _softmax_mix((qs @ kw.transpose(-1, -2)) * scale, allow, vw)                   # (B, H, nb, c, dv)
    y = y.reshape(B, H, P, -1)[:, :, :T]
    out = torch.zeros_like(y).scatter(2, oq[..., None].expand_as(y), y)               # back to positions
    return out * real[..., None]                                                       # a padded query: 0
