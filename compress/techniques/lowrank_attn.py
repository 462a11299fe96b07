"""Low rank along the sequence (Linformer, Wang et al. 2020): keys and values projected from T positions to k.

Each attention module gets two learned (k, n) projections, E for keys and F for values (n = the model's positions,
shared by its heads), initialised by mean pooling: slot r averages the positions of the r-th of k equal segments
of [0, n), so with k = n they start as the identity and the attention is the original's exactly. A sequence of T < n
tokens uses the first T columns; a slot is scaled by its segment's length over its real tokens (a mean over the real
ones at init) and masked when its segment holds none, so short and padded sequences see only real tokens.
Encoders only: a slot mixes positions from across the sequence, future tokens included. n is at most POSITIONS
(a rotary model may declare 10^9 positions, which its weights never pay for): a longer text is refused.
"""
import torch
import torch.nn as nn

from ..errors import CompressError
from .sparseattn import _softmax_mix

POSITIONS = 8192  # the projections' columns, at most (ModernBERT's context)
MAX_ENTRIES = 2**26  # E, F and the segments of every layer together: 3 x layers x k x n, at most (0.8 GB in fp32)


def columns(positions: int) -> int:
    """n: the positions the projections span."""
    return min(positions, POSITIONS)


def segments(k: int, n: int) -> torch.Tensor:
    """(k, n) bool: slot r's segment of positions, k near-equal consecutive runs covering [0, n)."""
    slot = torch.arange(n) * k // n  # (n,) the slot each position belongs to
    return slot[None, :] == torch.arange(k)[:, None]


def add_projections(module: nn.Module, k: int, n: int) -> None:
    """E and F as parameters of the attention module (healing trains them, save/load replays them), pooling-initialised."""
    n = columns(n)
    seg = segments(k, n).float()
    pool = seg / seg.sum(1, keepdim=True)  # (k, n) mean over each segment
    module.attn_E = nn.Parameter(pool.clone())
    module.attn_F = nn.Parameter(pool.clone())
    module.register_buffer("attn_segments", seg, persistent=False)  # (k, n) the slots' supports (not learned)


def lowrank(module, q, k, v, valid, scale):
    """softmax(q (E k)^T * scale) (F v), E and F cut to the sequence's T columns."""
    B, H, T, d = q.shape
    if T > module.attn_segments.shape[1]:
        raise CompressError(f"Linformer's projections span {module.attn_segments.shape[1]:,} positions; this text has "
                            f"{T:,} tokens")
    valid = torch.ones(B, T, dtype=q.dtype, device=q.device) if valid is None else valid.to(q.dtype)
    seg = module.attn_segments[:, :T]                                     # (k, T)
    count = valid @ seg.T                                                  # (B, k) real tokens per slot
    full = module.attn_segments.sum(1)                                     # (k,) each segment's length
    rescale = (full / count.clamp(min=1))[:, None, :, None]                # (B, 1, k, 1)
    E = module.attn_E[:, :T].to(q.dtype) * valid[:, None, :]              # (B, k, T) padded keys drop out
    Fv = module.attn_F[:, :T].to(q.dtype) * valid[:, None, :]
    kp = (E[:, None] @ k) * rescale                                        # (B, H, k, d)
    vp = (Fv[:, None] @ v) * rescale
    allow = (count > 0)[:, None, None, :]                                  # (B, 1, 1, k) slots with a real token
    return _softmax_mix((q @ kp.transpose(-1, -2)) * scale, allow, vp)   # (B, H, T, d)
