"""The Learn page's figure data: each technique shown on a real weight of the loaded model, as plain numbers.

Nothing here compresses a model: each function reads one weight (or a score computed once per model) and returns
what a figure draws. Decompositions are computed once per model and kept: the spectra in spectrum.py's cache, the
scores in bundle.cache (next to the Block Influence the fewer-layers step keeps there), so a slider step is a slice.
The attention side (maps of a sentence, the FNet matrix, efficient-attention masks) is in learnattn.py.
"""
import copy
import math

import numpy as np
import torch

from ..techniques import heads as H, pq
from ..errors import CompressError
from ..techniques.heal import calibration_batches
from ..techniques.layers import block_influence, choose_layers
from ..techniques.lowbit import group_size, round_groups
from ..techniques.spectrum import has_spectra, spectra

CORNER = 48  # the heatmaps show W's top-left CORNER x CORNER entries (a 384 x 1536 heatmap is 590k cells)


def _weight(bundle, layer: str) -> torch.Tensor:
    return bundle.model.get_submodule(layer).weight.detach().float()  # (out, in)


def linear_layers(bundle) -> list[str]:
    """The factorizable Linear layers (inside the blocks), in model order."""
    return bundle.adapter.factorizable(bundle.model)


def short(layer: str) -> str:
    """'encoder.layer.3.attention.self.query' -> '3.attention.self.query'."""
    blocks = layer.split(".")
    i = next((k for k, p in enumerate(blocks) if p.isdigit()), 0)
    return ".".join(blocks[i:])


# --------------------------------------------------------------------------- low rank


def lowrank(bundle, layer: str, fraction: float, corner: int = CORNER) -> dict:
    """W and its rank-r reconstruction, r = round(fraction * min(m, n)) as the ratio mode chooses it.
    error: ||W - W_r||_F / ||W||_F over the whole matrix (Eckart-Young: sqrt(1 - energy kept))."""
    s = spectra(bundle)[layer]
    k = len(s.s)
    r = int(min(k, max(1, round(fraction * k))))
    c = min(corner, s.m, s.n)
    w = _weight(bundle, layer)[:c, :c]
    w_r = (s.u[:c, :r].float() * torch.from_numpy(s.s[:r]).float()) @ s.vh[:r, :c].float()
    energy = float(s.energy[r - 1])
    return {"layer": layer, "m": s.m, "n": s.n, "rank": r, "max_rank": k, "fraction": fraction,
            "w": w.numpy(), "w_r": w_r.numpy(), "diff": (w - w_r).numpy(), "s": s.s, "energy": energy,
            "energy_curve": s.energy, "error": math.sqrt(max(0.0, 1.0 - energy)),
            "params_dense": s.m * s.n, "params_rank": r * (s.m + s.n), "break_even": s.m * s.n / (s.m + s.n),
            "saves": r * (s.m + s.n) < s.m * s.n}


# --------------------------------------------------------------------------- quantization


def _symmetric(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    top = 2 ** (bits - 1)
    return (w / scale).round().clamp(-top, top - 1) * scale


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _rounded(w: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """w (rows, n) rounded three ways at `bits`; per-tensor uses the scale of the whole matrix given as w_max."""
    half = 2 ** (bits - 1) - 0.5                                   # 127.5 at 8 bits, as int8_weight divides
    g = group_size(w.shape[1])
    q, scale, low = round_groups(w, bits, g)
    return {"per-channel": _symmetric(w, w.abs().amax(1, keepdim=True).clamp(min=1e-8) / half, bits),
            f"per-group of {g}": (q.unflatten(-1, (-1, g)) * scale[..., None] + low[..., None]).flatten(-2)}


def _matrix_errors(bundle, layer: str, bits: int) -> dict[str, float]:
    """Relative errors of the whole matrix, once per (layer, bits): a bits step is then a dictionary look-up."""
    key = ("learn_matrix_errors", layer, bits)
    if key not in bundle.cache:
        w = _weight(bundle, layer)
        s = w.abs().max().clamp(min=1e-8) / (2 ** (bits - 1) - 0.5)
        bundle.cache[key] = {"per-tensor": _rel(_symmetric(w, s, bits), w),
                             **{k: _rel(v, w) for k, v in _rounded(w, bits).items()}}
    return bundle.cache[key]


def quantize_row(bundle, layer: str, row: int, bits: int = 8) -> dict:
    """One weight row rounded to `bits`: symmetric with one scale for the whole matrix (per-tensor) or one per row
    (per-channel, as int8 stores it: quantize.int8_weight), and asymmetric per group of the row (as int4 and the
    low-bit table store it). Errors are relative Frobenius errors, for the row and the whole matrix."""
    w = _weight(bundle, layer)                                     # (m, n)
    if not 0 <= row < w.shape[0]:
        raise CompressError(f"{short(layer)} has {w.shape[0]} rows: pick a row from 0 to {w.shape[0] - 1}")
    if not 2 <= bits <= 8:
        raise CompressError(f"bits must be from 2 to 8, got {bits}")
    x = w[row:row + 1]                                             # (1, n)
    s_tensor = w.abs().max().clamp(min=1e-8) / (2 ** (bits - 1) - 0.5)
    ways = {"per-tensor": _symmetric(x, s_tensor, bits), **_rounded(x, bits)}
    per_c = ways["per-channel"]
    s_chan = float(x.abs().max().clamp(min=1e-8)) / (2 ** (bits - 1) - 0.5)
    return {"layer": layer, "row": row, "bits": bits, "values": x[0].numpy(), "group": group_size(w.shape[1]),
            "per_tensor": ways["per-tensor"][0].numpy(), "per_channel": per_c[0].numpy(),
            "grouped": list(ways.values())[2][0].numpy(), "scale_tensor": float(s_tensor), "scale_channel": s_chan,
            "grid": np.arange(-2 ** (bits - 1), 2 ** (bits - 1)) * s_chan,
            "row_error": {k: _rel(v, x) for k, v in ways.items()},
            "matrix_error": _matrix_errors(bundle, layer, bits)}


PQ_SAMPLE = 2048  # rows Learn fits the product-quantization codes on, and other rows it measures them on


def table_rounding(bundle, token: int) -> list[dict]:
    """The word table at 8 (int8: symmetric, one scale per row), 4 and 2 bits (one fp16 scale and minimum per group of
    a row, lowbit.py) and product-quantized at 2, 1.33, 1 and 0.67 bits a weight (pq.py, each of its DIMS the width
    takes: codes fitted on PQ_SAMPLE rows, the table error measured on PQ_SAMPLE others): bytes per row (PQ: its codes
    and its share of the codebooks), groups or codes, the error of one token's row and of the whole table (once per
    model)."""
    table = bundle.model.get_submodule(bundle.adapter.word_embeddings).weight.detach().float()  # (V, C)
    if not 0 <= token < table.shape[0]:
        raise CompressError(f"the table has {table.shape[0]} rows: pick a token id from 0 to {table.shape[0] - 1}")
    key = ("learn_table_errors", bundle.content_hash)
    (v, c), dims = table.shape, [d for d in sorted(pq.DIMS) if table.shape[1] % d == 0]
    if key not in bundle.cache:
        order = torch.randperm(v, generator=torch.Generator().manual_seed(0))
        fitted, held = table[order[:PQ_SAMPLE]], table[order[PQ_SAMPLE:2 * PQ_SAMPLE]]
        books = {d: pq.fit(fitted, d)[1] for d in dims}
        errs = {bits: _rel(_table_round(table, bits), table) for bits in (8, 4, 2)}
        held = held if len(held) else fitted  # (a table of PQ_SAMPLE rows or fewer: measured on the rows fitted)
        bundle.cache[key] = errs | {f"pq{d}": _rel(_pq(held, books[d]), held) for d in dims}, books
    errs, books = bundle.cache[key]
    x, out = table[token:token + 1], []
    for bits in (8, 4, 2):
        g = c if bits == 8 else group_size(c)
        size = c * bits // 8 + (4 if bits == 8 else 4 * (c // g))
        out.append({"scheme": "int8, a scale per row" if bits == 8 else f"{bits}-bit rows", "bits": bits,
                    "group": g, "groups per row": c // g, "levels": 2 ** bits, "bytes per row": size,
                    "x smaller than fp32": round(4 * c / size, 2),
                    "row error": round(_rel(_table_round(x, bits), x), 5), "table error": round(errs[bits], 5)})
    for d in dims:  # a group is a code's weights, the levels the codes; the codebooks (fp16) are shared by the rows
        size = c // d + (c // d) * pq.CODES * d * 2 / v
        out.append({"scheme": f"product-quantized, {d} weights a code", "bits": round(8 * size / c, 2), "group": d,
                    "groups per row": c // d, "levels": pq.CODES, "bytes per row": round(size, 2),
                    "x smaller than fp32": round(4 * c / size, 2), "row error": round(_rel(_pq(x, books[d]), x), 5),
                    "table error": round(errs[f"pq{d}"], 5)})
    return out


def _pq(t: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    return pq.PQEmbedding.lookup(pq.encode(t, book).long(), book.float())


def _table_round(t: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:  # torch.ao's weight-only int8 table: per-row scale (float qparams)
        return _symmetric(t, t.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127.5, 8)
    g = group_size(t.shape[1])
    q, scale, low = round_groups(t, bits, g)
    return (q.unflatten(-1, (-1, g)) * scale[..., None] + low[..., None]).flatten(-2)


# --------------------------------------------------------------------------- heads, FFN, layers


def head_importance(bundle, method: str = "weight") -> np.ndarray:
    """(layers, heads) importance, each layer scaled to max 1 so layers compare by rank. gradient: Michel et al. on
    calibration text, computed on a copy (its masks must not touch the shared original) once per model."""
    key = ("learn_head_scores", method)
    if key not in bundle.cache:
        if method == "gradient":
            model = copy.deepcopy(bundle.model)
            scores = H.head_scores(model, bundle.adapter, "gradient", calibration_batches(bundle))
        else:
            scores = H.head_scores(bundle.model, bundle.adapter, method)
        a = torch.stack([s.float().cpu() for s in scores]).numpy()
        bundle.cache[key] = a / np.maximum(a.max(1, keepdims=True), 1e-12)
    return bundle.cache[key]


def heads_removed(scores: np.ndarray, keep: int) -> np.ndarray:
    """(layers, heads) bool: the heads prune_heads deletes when `keep` per layer stay (the top-k by score)."""
    n = scores.shape[1]
    if not 1 <= keep <= n:
        raise CompressError(f"keep must be from 1 to {n} heads, got {keep}")
    kept = torch.from_numpy(scores).topk(keep, dim=1).indices
    out = np.ones_like(scores, dtype=bool)
    np.put_along_axis(out, kept.numpy(), False, axis=1)
    return out


def ffn_cut(bundle, block: int, fraction: float) -> dict:
    """Neuron importance of one block's FFN (||row of ffn_in|| * ||column of ffn_out||) and what `fraction` keeps."""
    key = "learn_ffn_scores"
    if key not in bundle.cache:
        bundle.cache[key] = [s.numpy() for s in H.ffn_scores(bundle.model, bundle.adapter)]
    scores = bundle.cache[key][block]
    k = max(1, round(fraction * len(scores)))
    desc = np.sort(scores)[::-1]
    return {"block": block, "scores": scores, "sorted": desc, "kept": k, "width": len(scores), "threshold": float(desc[k - 1]),
            "mass_kept": float(desc[:k].sum() / desc.sum())}


def influence(bundle) -> list[float]:
    """Block Influence per block (ShortGPT), measured once per model on a copy, kept where the fewer-layers step
    looks for it (bundle.cache["block_influence"])."""
    if "block_influence" not in bundle.cache:
        model = copy.deepcopy(bundle.model)  # its hooks must not see other sessions' calls to the shared original
        bundle.cache["block_influence"] = block_influence(model, bundle.adapter, calibration_batches(bundle))
    return bundle.cache["block_influence"]


def layers_kept(bundle, k: int) -> dict:
    bi = influence(bundle)
    kept = choose_layers(bi, k)
    return {"influence": bi, "kept": kept, "lowest_kept": min(bi[i] for i in kept)}


def block_map(bundle, k: int) -> list[dict]:
    """Which original block each of k kept blocks learns from while healing (its hidden states are matched to that
    block's, weighted by heal_hidden): the blocks Fewer layers keeps (layers_kept)."""
    n = bundle.info.get("layers") or 0
    if bundle.task != "embedding" or not 1 <= k <= n:
        raise CompressError("the block mapping is for an encoder's blocks, 1 to its number of blocks kept")
    d = layers_kept(bundle, k)
    return [{"kept block": i, "learns original block": j, "original block's influence": round(d["influence"][j], 4)}
            for i, j in enumerate(d["kept"])]


def prepare(bundle, progress=None) -> None:
    """Everything the page reads that takes a moment, once per model (for the job queue): spectra, head scores
    (weight and gradient), FFN scores, Block Influence."""
    layer = linear_layers(bundle)[min(4, len(linear_layers(bundle)) - 1)]  # the layer the page shows first
    steps = [lambda: spectra(bundle), lambda: head_importance(bundle, "weight"),
             lambda: head_importance(bundle, "gradient"), lambda: ffn_cut(bundle, 0, 1.0), lambda: influence(bundle),
             lambda: table_rounding(bundle, 0), *(lambda k=k: _matrix_errors(bundle, layer, k) for k in range(2, 9))]
    for i, fn in enumerate(steps):
        fn()
        if progress is not None:
            progress((i + 1) / len(steps))


def prepared(bundle) -> bool:
    return has_spectra(bundle) and all(k in bundle.cache for k in (
        ("learn_head_scores", "weight"), ("learn_head_scores", "gradient"), "learn_ffn_scores", "block_influence",
        ("learn_table_errors", bundle.content_hash)))
