"""Kernel attention (the survey's kernel family): softmax(q k^T) replaced by phi(q) phi(k)^T, computed right to left
so that no T x T matrix is formed: O(T * m * d) instead of O(T^2 * d).

kernel: Performer's FAVOR+ (Choromanski et al. 2021), positive random features phi(x) = exp(w.x - |x|^2 / 2) / sqrt(m)
of x = q * scale^0.5 with m orthogonal Gaussian rows w, an unbiased estimate of exp(q.k * scale), the softmax kernel.
The rows are a buffer of the attention module, drawn once (seeded) and saved with the weights.
linear: elu(x) + 1 (Katharopoulos et al. 2020), no parameters.
Decoders: the causal sums run as prefix sums over chunks (a running m x d state plus a small causal block per chunk).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

CHUNK = 64  # causal chunk: quadratic inside a chunk, a running state across chunks
TINY = 1e-30  # a denominator's floor: only a row with no real key (a padded query) reaches it


def orthogonal_features(m: int, d: int, seed: int) -> torch.Tensor:
    """(m, d) rows drawn as Performer does: blocks of d orthogonal directions, each row scaled to a Gaussian norm."""
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(m / d)):
        qm, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
        blocks.append(qm.T)
    w = torch.cat(blocks)[:m]                                     # (m, d) orthonormal within each block of d
    return w * torch.randn(m, d, generator=g).norm(dim=1, keepdim=True)  # norms of Gaussian rows


def add_features(module: nn.Module, m: int, d: int, seed: int) -> None:
    module.register_buffer("attn_features", orthogonal_features(m, d, seed))  # persistent: saved and reloaded


def favor_features(x, w, scale, is_query):
    """(B, H, T, d) -> (B, H, T, m) positive features, in float32 (they span many orders of magnitude). A query's
    row is divided by its own largest (it cancels in its output); keys by exp(max |w|^2 / 2), their bound whatever
    x is (w.x - |x|^2/2 <= |w|^2/2), a constant: a decoder's early keys never depend on a later one."""
    x = x.float() * scale ** 0.5
    w = w.float()
    proj = x @ w.T - (x * x).sum(-1, keepdim=True) / 2            # (B, H, T, m)
    stab = proj.amax(-1, keepdim=True) if is_query else (w * w).sum(-1).max() / 2
    return torch.exp(proj - stab) / math.sqrt(w.shape[0])


def elu_features(x):
    return F.elu(x) + 1


def linear_mix(qf, kf, v, causal):
    """sum_j (qf_i . kf_j) v_j / sum_j qf_i . kf_j over all j (encoder) or j <= i (decoder). qf, kf (B, H, T, m)
    non-negative (kf 0 at padded keys); v (B, H, T, d) -> (B, H, T, d)."""
    if not causal:
        num = qf @ (kf.transpose(-1, -2) @ v)                     # (B, H, T, d) via an (m, d) summary
        den = qf @ kf.sum(2).unsqueeze(-1)                        # (B, H, T, 1)
        return num / den.clamp(min=TINY)
    B, H, T, m = qf.shape
    state = qf.new_zeros(B, H, m, v.shape[-1])                    # sum of kf_j v_j^T over the chunks before
    ksum = qf.new_zeros(B, H, m, 1)
    out = []
    for a in range(0, T, CHUNK):
        qc, kc, vc = qf[:, :, a:a + CHUNK], kf[:, :, a:a + CHUNK], v[:, :, a:a + CHUNK]
        inner = (qc @ kc.transpose(-1, -2)).tril()                # (B, H, c, c) j <= i inside the chunk
        num = qc @ state + inner @ vc
        den = qc @ ksum + inner.sum(-1, keepdim=True)
        out.append(num / den.clamp(min=TINY))
        state = state + kc.transpose(-1, -2) @ vc
        ksum = ksum + kc.sum(2).unsqueeze(-1)
    return torch.cat(out, dim=2)


def kernel(module, q, k, v, valid, scale, causal):
    w = module.attn_features
    qf, kf = favor_features(q, w, scale, True), favor_features(k, w, scale, False)
    return linear_mix(qf, _drop_pads(kf, valid), v.float(), causal).to(v.dtype)


def linear(module, q, k, v, valid, scale, causal):
    return linear_mix(elu_features(q), _drop_pads(elu_features(k), valid), v, causal)


def _drop_pads(kf, valid):
    return kf if valid is None else kf * valid[:, None, :, None].to(kf.dtype)
