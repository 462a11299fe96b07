"""Fewer layers (depth pruning): keep the k transformer blocks that change their input most.

Which blocks: ShortGPT's Block Influence (Men et al. 2024), BI = 1 - cos(block input, block output), averaged
over the real tokens of calibration text; a block that barely changes its input is the first to go. The kept
blocks stay whole (every head, the full FFN), so healing starts from intact layers and matches each kept block
to the original block it came from. On MiniLM (a 2-bit table, 800 healing steps) BI keeps blocks [0, 4, 5]:
fidelity 0.704 before healing and 0.898 after, where every other block [1, 3, 5] gave 0.516 and 0.885, and
6 of 12 heads + FFN 0.45 in every block (the same size) 0.506 and 0.866.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.adapters import Adapter, forward, set_module
from ..errors import CompressError
from .heal import calibration_batches


@torch.no_grad()
def block_influence(model: nn.Module, adapter: Adapter, batches) -> list[float]:
    """Per block, the mean over real tokens of 1 - cos(input, output), on [(ids, mask)] batches."""
    blocks, total, count = adapter.block_list(model), None, 0
    seen = {}

    def hook(i):
        def grab(module, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            seen[i] = (x, out[0] if isinstance(out, tuple) else out)
        return grab

    handles = [b.register_forward_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        for ids, mask in batches:
            forward(model, adapter, ids, mask)
            real = mask.bool()
            bi = torch.stack([(1 - F.cosine_similarity(x[real], y[real], dim=-1)).sum() for x, y in
                              (seen[i] for i in range(len(blocks)))])
            total, count = (bi if total is None else total + bi), count + int(real.sum())
    finally:
        for h in handles:
            h.remove()
    return (total / max(1, count)).tolist()


def choose_layers(scores: list[float], k: int) -> list[int]:
    """The k blocks with the highest influence, in model order."""
    n = len(scores)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise CompressError(f"the model has {n} blocks: keep a whole number from 1 to {n}, got {k!r}")
    return sorted(torch.tensor(scores).topk(k).indices.tolist())


def drop_layers(model: nn.Module, adapter: Adapter, keep: list[int]) -> nn.Module:
    """Keep the blocks at indices `keep`, in place; the config's layer count, each block's cache index
    (layer_idx) follow, and model.kept_blocks records them (healing maps student to teacher blocks by it)."""
    blocks = adapter.block_list(model)
    set_module(model, adapter.blocks, nn.ModuleList(blocks[i] for i in keep))
    model.kept_blocks = [int(i) for i in keep]
    adapter.set_depth(model, model.kept_blocks)
    return model


def layers_step(ctx, r):
    """The table's fewer-layers step: the blocks of least influence dropped from ctx.model."""
    b = ctx.base  # Block Influence is measured once per model (on the copy: other sessions may run the original)
    if "block_influence" not in b.cache:
        b.cache["block_influence"] = block_influence(ctx.model, b.adapter, calibration_batches(b))
    drop_layers(ctx.model, b.adapter, choose_layers(b.cache["block_influence"], r.layers))
    ctx.applied["kept_blocks"] = ctx.model.kept_blocks
