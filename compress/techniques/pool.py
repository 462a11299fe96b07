"""Token down-sampling between blocks (the survey's down-sampling; Funnel-Transformer, Dai et al. 2020): after the
first `at` blocks, every `factor` neighbouring tokens are averaged into one, so the blocks after run on T / factor
tokens (attention ~factor^2 and the rest ~factor times cheaper there). After the last block each pooled token is
repeated back to its positions, as Funnel's decoder up-samples, so every token still has an output.

Forward hooks, no new weights: the state dict stays the original's, and a reload replays the hooks. A pooled group
averages its real tokens only, and is real if any of them is (right padding: a sentence's groups are the same
whatever the batch). Encoders only: a group mixes a token with the one after it.
"""
import math

import torch
import torch.nn as nn

from ..errors import CompressError


TEACH = ("Token pooling (Funnel-Transformer, Dai et al. 2020): after the first blocks every 2 (or 4) neighbouring "
         "tokens are averaged into one, so the later blocks run on half the tokens (attention 4x, the rest 2x cheaper "
         "there); the last block's tokens are repeated back to every position. Encoders only. Heal afterwards.")


def refuse(b, r) -> str | None:
    if r.pool == 1:
        return None
    if r.pool_at < 1:
        return "pooling before the first block would average the embeddings themselves: pool after block 1 or later"
    if b is None:
        return None
    if b.adapter.causal:
        return f"pooling averages a token with the next one, a future token, so it cannot apply to {b.name}, " \
               "a causal (decoder) model"
    kept = r.layers or b.info["layers"]
    if r.pool_at >= kept:
        return f"pooling after block {r.pool_at} leaves none of the {kept} blocks to run on fewer tokens: " \
               f"pool after 1 to {kept - 1}"
    return None


def pool_tokens(x: torch.Tensor, valid: torch.Tensor | None, f: int):
    """x (B, T, C), valid (B, T) bool or None -> (B, ceil(T/f), C) means of each group's real tokens, and the
    groups' validity (B, ceil(T/f)) (None stays None)."""
    B, T, C = x.shape
    P = math.ceil(T / f) * f
    w = torch.ones(B, T, dtype=x.dtype, device=x.device) if valid is None else valid.to(x.dtype).expand(B, T)
    xs = nn.functional.pad(x * w[..., None], [0, 0, 0, P - T]).view(B, P // f, f, C).sum(2)  # (B, P/f, C)
    n = nn.functional.pad(w, [0, P - T]).view(B, P // f, f).sum(2)                          # (B, P/f)
    return xs / n.clamp(min=1)[..., None], None if valid is None else n > 0


def _mask_valid(mask) -> torch.Tensor:
    """(B, T) bool of real tokens from an encoder's 4D mask (bool: True = attend; float: 0 = attend) or 2D mask."""
    if mask.dim() == 2:
        return mask.bool()
    row = mask[:, 0, -1, :]
    return row if row.dtype == torch.bool else row == 0


def _like(mask, valid):
    """A mask of mask's kind for the tokens valid (B, T')."""
    if mask.dim() == 2:
        return valid.to(mask.dtype)
    t = valid.shape[1]
    keys = valid[:, None, None, :].expand(valid.shape[0], 1, t, t)
    if mask.dtype == torch.bool:
        return keys
    return torch.zeros(keys.shape, dtype=mask.dtype, device=mask.device).masked_fill(~keys, torch.finfo(mask.dtype).min)


def _before_block(block, args, kwargs):
    """Pool the hidden states (first pooled block) and cut the padding mask to their length (every pooled block)."""
    f, first = block.pool_args["factor"], block.pool_args["first"]
    args = list(args)
    x = args[0]
    in_args = len(args) > 1
    mask = args[1] if in_args else kwargs.get("attention_mask")
    if first:
        x, _ = pool_tokens(x, None if mask is None else _mask_valid(mask), f)
        args[0] = x
    if mask is not None and mask.shape[-1] != x.shape[1]:
        valid = _mask_valid(mask)
        valid = pool_tokens(valid[..., None].float(), None, f)[0][..., 0] > 0  # a group is real if any token is
        mask = _like(mask, valid)
        if in_args:
            args[1] = mask
        else:
            kwargs["attention_mask"] = mask
    return tuple(args), kwargs


def _after_blocks(container, args, kwargs, output):
    """Each pooled token repeated back to its `factor` positions, cut to the input's length."""
    t = (args[0] if args else kwargs["hidden_states"]).shape[1]
    y = output[0] if isinstance(output, tuple) else output.last_hidden_state
    y = y.repeat_interleave(container.pool_factor, dim=1)[:, :t]
    if isinstance(output, tuple):
        return (y, *output[1:])
    output.last_hidden_state = y
    return output


def apply_pool(model: nn.Module, adapter, factor: int, at: int) -> nn.Module:
    """Pool by `factor` after the first `at` blocks, IN PLACE (the caller deep-copies). factor 1: nothing to do."""
    if adapter.causal:
        raise CompressError("pooling averages a token with the next one: encoders only")
    blocks = adapter.block_list(model)
    if not 1 <= at < len(blocks):
        raise CompressError(f"pooling after block {at} of {len(blocks)} leaves no block to run on fewer tokens")
    if factor == 1:
        return model
    for i, block in enumerate(blocks):
        if i >= at:
            block.pool_args = {"factor": factor, "first": i == at}
            block.register_forward_pre_hook(_before_block, with_kwargs=True)
    container = model.get_submodule(adapter.blocks.rpartition(".")[0])
    container.pool_factor = factor
    container.register_forward_hook(_after_blocks, with_kwargs=True)
    return model
