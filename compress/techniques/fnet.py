"""FNet (Lee-Thorp et al. 2021): self-attention's token mixing replaced by Re(FFT2) over (sequence, hidden).

The q/k/v projections and the attention output projection are dropped (the paper has no output dense);
the residual + LayerNorm that followed attention stays. The mixing has no parameters, so a model loses
exactly the q/k/v/o weights and biases. Encoders only: the DFT mixes every position with every other one.

Padding: the FFT of a padded sequence would mix the pad tokens in, so a sentence's output would depend on
the longest sentence in its batch. Each sequence is transformed over its REAL tokens only (a DFT of its
own length), and padded positions get 0 from the mixing.
"""
import math

import torch
import torch.nn as nn

from ..errors import CompressError


def fourier_mix(x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Re(FFT2(x)) over (sequence, hidden). x: (B, T, C); valid: (B, T) bool of real tokens, or None (all real).

    With padding, the sequence DFT is a (B, T, T) matrix built per sequence from each real token's index
    among the real ones, so any padding layout (right or left) works, in one batched matmul, with no
    data-dependent Python control flow (it can be traced).
    """
    dtype = x.dtype
    x = x.to(torch.promote_types(dtype, torch.float32))  # CPU FFT has no fp16/bf16 kernels
    if valid is None:
        return torch.fft.fft2(x, dim=(-2, -1)).real.to(dtype)
    y = torch.fft.fft(x, dim=-1)  # (B, T, C) hidden dimension: same length for every token
    valid = valid.to(torch.bool)
    pos = torch.cumsum(valid.long(), dim=1) - 1  # (B, T) index of each token among its sequence's real tokens
    n = valid.sum(dim=1).clamp(min=1)[:, None, None]  # (B, 1, 1) real length
    # phase k*j mod n in integers first: k*j itself grows to T^2, too large for an exact float32 angle
    kj = (pos[:, :, None] * pos[:, None, :]) % n  # (B, T, T)
    angle = (2 * math.pi) * kj.to(x.dtype) / n.to(x.dtype)
    keep = (valid[:, :, None] & valid[:, None, :]).to(x.dtype)  # pad rows/columns: no mixing in or out
    # Re(W @ y) with W = exp(-i angle) = cos(angle) - i sin(angle)
    out = (torch.cos(angle) * keep) @ y.real + (torch.sin(angle) * keep) @ y.imag  # (B, T, C)
    return out.to(dtype)


def _valid_tokens(mask) -> torch.Tensor | None:
    """(B, T) bool of real tokens from the mask a transformers 5.x encoder block hands its attention.

    None: no padding (sdpa skips the mask then). 2D: a padding mask (flash-attention style).
    4D (B, 1, Tq, Tk): bool (sdpa, True = attend) or additive float (eager, 0 = attend); in a
    bidirectional mask every real token sees itself (ModernBERT's local blocks: a band), so the diagonal is the
    padding mask.
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise CompressError(f"FNet cannot read the padding from a {type(mask).__name__} attention mask; "
                            "load the model with attn_implementation='sdpa' or 'eager'")
    if mask.dim() == 2:
        return mask.bool()
    row = mask[:, 0, 0, :] if mask.shape[-2] == 1 else mask[:, 0].diagonal(dim1=-2, dim2=-1)
    return row if row.dtype == torch.bool else row == 0


class FourierMixing(nn.Module):
    """Drop-in for an encoder's self-attention module: same call, (mixed, None) back, no parameters."""

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        # BERT calls self.self(hidden_states, encoder_hidden_states=..., attention_mask=..., cache=...);
        # DistilBERT calls self.attention(hidden_states, attention_mask=...); both unpack (output, weights).
        valid = _valid_tokens(attention_mask)
        if valid is not None:
            valid = valid.expand(hidden_states.shape[0], -1)  # a broadcast batch dim of 1
        return fourier_mix(hidden_states, valid), None


def _attention_parent(adapter) -> str:
    """Path (in a block) of the module that owns q, k and v: BERT attention.self, DistilBERT attention, MPNet
    attention.attn, ModernBERT attn (its fused Wqkv)."""
    parents = {p.rpartition(".")[0] for p in (adapter.q, adapter.k, adapter.v)}
    if len(parents) != 1:
        raise CompressError(f"FNet does not know where attention lives in a {adapter.family} model")
    return parents.pop()


def attention_params(model: nn.Module, adapter) -> int:
    """Parameters FNet drops: the q, k, v and o weights and biases of every block."""
    total = 0
    for block in adapter.block_list(model):
        for path in dict.fromkeys((adapter.q, adapter.k, adapter.v, adapter.o)):  # a fused Wqkv once
            try:
                total += sum(p.numel() for p in block.get_submodule(path).parameters())
            except AttributeError:  # already mixed by FNet
                pass
    return total


def apply_fnet(model: nn.Module, adapter) -> nn.Module:
    """Replace every block's self-attention with Fourier mixing, IN PLACE (the caller deep-copies)."""
    if adapter.causal:
        raise CompressError("FNet mixes in future tokens: it only applies to encoders")
    parent = _attention_parent(adapter)
    for block in adapter.block_list(model):
        if isinstance(block.get_submodule(parent), FourierMixing):
            continue  # applying twice changes nothing
        holder, _, name = parent.rpartition(".")
        setattr(block.get_submodule(holder) if holder else block, name, FourierMixing())
        # BERT/RoBERTa: o lives outside attention.self, in attention.output (dense -> dropout -> LayerNorm(x + input)).
        # Identity keeps that module's residual + LayerNorm and drops only the dense. DistilBERT's out_lin went
        # with the attention module; the block itself applies sa_layer_norm(mix + input).
        try:
            block.get_submodule(adapter.o)
        except AttributeError:
            continue
        holder, _, name = adapter.o.rpartition(".")
        setattr(block.get_submodule(holder), name, nn.Identity())
    return model
