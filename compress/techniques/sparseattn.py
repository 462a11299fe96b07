"""Fixed attention patterns (the survey's first family): a local window, a stride, and both across heads.

Each is computed in blocks, never as a mask over the full T x T scores (a band mask over full attention still
costs T^2): the local window attends each block of W queries to the 3W keys around it (O(T * W)); the stride
attends within each residue class mod s (T/s keys each: O(T^2 / s)). Causal models keep causality: a decoder's
window is the band of the W latest tokens up to and including its own.

All take q, k, v (B, H, T, d), valid (B, T) bool of real keys or None (all real), the score scale and causal,
and return (B, H, T, d). A padded query's output is 0 (it is never read).
"""
import math

import torch
import torch.nn.functional as F



def _softmax_mix(scores, allow, v):
    """softmax over the allowed keys of scores (..., n, m), times v (..., m, d). A masked score is the dtype's
    lowest (not -inf), so a row with every key masked (a padded query) stays finite and gets 0."""
    w = torch.softmax(scores.masked_fill(~allow, torch.finfo(scores.dtype).min), dim=-1) * allow
    return w @ v


def _pad_seq(x, n, value=0.0):
    """x (B, H, T, d) or (B, T) padded at the end of T to length n."""
    t_dim = 2 if x.dim() == 4 else 1
    extra = n - x.shape[t_dim]
    if extra == 0:
        return x
    pad = [0, 0, 0, extra] if x.dim() == 4 else [0, extra]
    return F.pad(x, pad, value=value)


def local(q, k, v, valid, scale, causal, window):
    """Token i sees j with |i - j| < W (encoder) or 0 <= i - j < W (decoder); a window >= T is full attention."""
    B, H, T, d = q.shape
    n = min(window, T)  # block size: a block's queries see at most their own block and its two neighbours
    nb = math.ceil(T / n)
    P = nb * n
    valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if valid is None else valid
    qb = _pad_seq(q, P).view(B, H, nb, n, d)  # (B, H, nb, n, d)
    # keys and values padded by one block on each side, then cut into overlapping windows of 3 blocks
    kw = F.pad(_pad_seq(k, P), [0, 0, n, n]).unfold(2, 3 * n, n).transpose(-1, -2)  # (B, H, nb, 3n, d)
    vw = F.pad(_pad_seq(v, P), [0, 0, n, n]).unfold(2, 3 * n, n).transpose(-1, -2)  # (B, H, nb, 3n, d)
    ok = F.pad(_pad_seq(valid, P, False), [n, n], value=False).unfold(1, 3 * n, n)  # (B, nb, 3n)
    qpos = torch.arange(P, device=q.device).view(nb, n)                              # (nb, n)
    kpos = torch.arange(-n, P + n, device=q.device).unfold(0, 3 * n, n)            # (nb, 3n)
    rel = qpos[:, :, None] - kpos[:, None, :]                                        # (nb, n, 3n): i - j
    band = (rel >= 0) & (rel < window) if causal else rel.abs() < window
    allow = band[None, None] & ok[:, None, :, None, :]                              # (B, 1, nb, n, 3n)
    y = _softmax_mix((qb @ kw.transpose(-1, -2)) * scale, allow, vw)                # (B, H, nb, n, d)
    return y.reshape(B, H, P, -1)[:, :, :T]  # (v's width may differ from q's: the Learn page's v = identity)


def strided(q, k, v, valid, scale, causal, stride):
    """Token i sees j with (i - j) % s == 0 (dilated; j <= i for a decoder); a stride of 1 is full attention."""
    B, H, T, _ = q.shape
    s = min(stride, T)  # a stride >= T leaves each token only itself either way (and pads nothing to length s)
    P = math.ceil(T / s) * s
    valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if valid is None else valid

    def classes(x):  # (B, H, P, d) -> (B, H, s, P/s, d): position c*s + r goes to class r, place c
        return _pad_seq(x, P).view(B, H, P // s, s, x.shape[-1]).transpose(2, 3)

    ok = _pad_seq(valid, P, False).view(B, P // s, s).transpose(1, 2)  # (B, s, P/s)
    allow = ok[:, None, :, None, :]                                      # (B, 1, s, 1, P/s)
    if causal:  # within a class, place c comes before place c' exactly when its position does
        allow = allow & torch.ones(P // s, P // s, dtype=torch.bool, device=q.device).tril()
    y = _softmax_mix((classes(q) @ classes(k).transpose(-1, -2)) * scale, allow, classes(v))  # (B, H, s, P/s, d)
    return y.transpose(2, 3).reshape(B, H, P, -1)[:, :, :T]


def local_strided(q, k, v, valid, scale, causal, window, stride):
    """The first half of the heads local, the rest strided (the survey's fixed patterns combined across heads)."""
    h = math.ceil(q.shape[1] / 2)
    a = local(q[:, :h], k[:, :h], v[:, :h], valid, scale, causal, window)
    b = strided(q[:, h:], k[:, h:], v[:, h:], valid, scale, causal, stride)
    return torch.cat([a, b], dim=1)
