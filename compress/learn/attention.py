"""The Learn page's attention side: every head's attention map for a sentence, the FNet mixing matrix that replaces
it, and the efficient-attention patterns of the survey as masks over the same T x T grid.

Attention maps are recomputed from each block's q and k projections (softmax(q k^T / sqrt(head_dim)), causal for
decoders), read through the adapter, so every family works the same way; the hooks only record the calling thread's
forward, because the model is the shared original other sessions may be running. Rotary families (Llama): the
attention is handed its (cos, sin) position table as position_embeddings and rotates q and k with it, so the maps
do too; grouped-query attention: each k head serves its group of query heads. What the attention module is called
with is added as the model adds it: MPNet's relative position bias (its kept heads' columns), and the mask it is
handed (ModernBERT's local blocks' window, Mistral's sliding window, padding), so the maps are the probabilities the
model applies.
"""
import inspect
import math
import threading

import numpy as np
import torch

from ..models.adapters import forward
from ..errors import CompressError
from . import shown
from ..serve.cancel import checkpoint
from ..measure.evaluate import batches
from ..techniques.heads import head_dim, heads_per_layer

MAX_TOKENS = 128                # evaluate.batches cuts a sentence there: T <= 128, so a head's map is <= 64 KB
MAX_CHARS = 2000                # a longer text is refused before it is tokenized
MAX_LAYER_BYTES = 32 * 2**20    # one layer's maps (heads x T x T float32): above it the figure refuses in one line
MAX_CACHE_BYTES = 64 * 2**20    # the maps a model keeps (bundle.cache, shared by every session), oldest out first
_LOCK = threading.Lock()        # the cache is filled on the queue's worker and read by the pages' threads


def tokens_of(bundle, ids: list[int]) -> list[str]:
    if bundle.tokenizer is None:
        return [f"#{i}" for i in ids]
    return shown([bundle.tokenizer.decode([i]).strip() or repr(bundle.tokenizer.decode([i])) for i in ids])


def layers(bundle) -> int:
    return len(bundle.adapter.block_list(bundle.model))


def layer_bytes(heads: int, t: int) -> int:
    """What one layer's maps hold: heads x T x T float32 (the bound the figure checks before computing)."""
    return heads * t * t * 4


def _check(bundle, layer: int, t: int) -> int:
    """The layer's head count, or one line saying why its maps are not computed (before anything is allocated)."""
    n = layers(bundle)
    if not 0 <= layer < n:
        raise CompressError(f"layer must be from 0 to {n - 1}, got {layer}")
    heads = heads_per_layer(bundle.model, bundle.adapter)[layer]
    if (need := layer_bytes(heads, t)) > MAX_LAYER_BYTES:
        raise CompressError(f"layer {layer}'s {heads} heads over {t} tokens make {need / 2**20:.0f} MB of attention "
                            f"maps; the Learn page draws at most {MAX_LAYER_BYTES // 2**20} MB: type a shorter "
                            "sentence")
    return heads


@torch.no_grad()
def _maps(bundle, text: str, layer: int) -> dict:
    if not text.strip():
        raise CompressError("type a sentence to see its attention")
    if len(text) > MAX_CHARS:  # tokenizing a megabyte to keep 128 tokens would hold the queue for nothing
        raise CompressError(f"the sentence has {len(text):,} characters; the attention figures take at most "
                            f"{MAX_CHARS}")
    model, adapter = bundle.model, bundle.adapter
    ids, mask = batches(bundle, [text], 1)[0]                  # (1, T) real tokens only: no padding for one text
    ids, mask = ids[:, :MAX_TOKENS], mask[:, :MAX_TOKENS]
    t = ids.shape[1]
    n = _check(bundle, layer, t)
    block = adapter.block_list(model)[layer]
    (ql, qr), (kl, kr), (vl, vr) = adapter.qkv(block)
    me, seen = threading.get_ident(), {}

    def grab(module, args, out):
        if threading.get_ident() == me:
            seen[id(module)] = out[0]                          # (T, width)

    def grab_call(module, args, kwargs):  # (after MPNet's own pre-hook has picked its kept heads' bias columns)
        if threading.get_ident() == me:
            try:
                seen["call"] = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
            except TypeError:  # (a forward whose signature does not say its arguments: its keywords only)
                seen["call"] = kwargs

    attn = block.get_submodule(adapter.q.rpartition(".")[0])
    handles = [m.register_forward_hook(grab) for m in {id(ql): ql, id(kl): kl, id(vl): vl}.values()]  # (this layer)
    handles.append(attn.register_forward_pre_hook(grab_call, with_kwargs=True))
    try:
        forward(model, adapter, ids, mask)
    finally:
        for h in handles:
            h.remove()
    hd = head_dim(model, adapter)
    q = seen[id(ql)][:, qr].float().view(t, n, hd).transpose(0, 1)  # (H, T, hd)
    k = seen[id(kl)][:, kr].float().view(t, -1, hd).transpose(0, 1)  # (KV, T, hd)
    call = seen.get("call", {})
    if call.get("position_embeddings") is not None:                    # (cos, sin), each (1, T, hd)
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # (the family's own rotation)
        cos, sin = (x.float() for x in call["position_embeddings"])
        q, k = (x[0] for x in apply_rotary_pos_emb(q[None], k[None], cos, sin))
    v = seen[id(vl)][:, vr].float().view(t, -1, hd).transpose(0, 1)  # (KV, T, hd)
    k, v = (x.repeat_interleave(n // x.shape[0], 0) for x in (k, v))  # (H, T, hd): a k, v head per query group
    s = q @ k.transpose(1, 2) / math.sqrt(hd)                          # (H, T, T)
    if call.get("position_bias") is not None:                          # MPNet: (1, H, T, T), added to the scores
        s = s + call["position_bias"][0].float()
    if adapter.causal:
        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    m = call.get("attention_mask")
    if isinstance(m, torch.Tensor):                                    # (1, 1, T or 1, T): True / 0 where it may look
        s = s.masked_fill(~m[0], float("-inf")) if m.dtype == torch.bool else s + m[0].float()
    return {"tokens": tokens_of(bundle, ids[0].tolist()), "maps": s.softmax(-1).numpy(), "T": t, "layer": layer,
            "text": text, "qkv": torch.stack([q, k, v])}  # (3, H, T, hd): what the efficient variants recompute from


def cached(bundle, text: str, layer: int, slot: str = "learn_attention", key=()) -> dict | None:
    """The maps of (text, layer) if this model keeps them (a page reads them without a job), else None (slot, key:
    another figure's kept data, learn/variants.py's)."""
    with _LOCK:
        return bundle.cache.get(slot, {}).get((text, layer, *key))


def _nbytes(entry: dict) -> int:
    return sum(x.nbytes for x in entry.values() if isinstance(x, np.ndarray)) + \
        sum(x.numel() * x.element_size() for x in entry.values() if isinstance(x, torch.Tensor))


def keep(bundle, text: str, layer: int, got: dict, slot: str = "learn_attention", key=()) -> dict:
    """got kept by the model under (text, layer, *key), its slot's arrays within MAX_CACHE_BYTES (oldest out first)."""
    with _LOCK:
        cache = bundle.cache.setdefault(slot, {})
        cache[text, layer, *key] = got
        while sum(map(_nbytes, cache.values())) > MAX_CACHE_BYTES and len(cache) > 1:
            cache.pop(next(iter(cache)))
    return got


def layer_attention(bundle, text: str, layer: int) -> dict:
    """One layer's maps for a sentence (its first MAX_TOKENS tokens): tokens (T labels), maps (heads, T, T) with
    rows = queries summing to 1, T, layer. Only this layer is kept: a 96-layer upload's every map was 768 MiB a
    sentence. Kept per model by (text, layer) within MAX_CACHE_BYTES."""
    got = cached(bundle, text, layer)
    if got is not None:
        return got
    got = _maps(bundle, text, layer)
    checkpoint()  # a Cancel during the forward: nothing kept
    return keep(bundle, text, layer, got)


def entropy(maps: np.ndarray) -> np.ndarray:
    """(H, T, T) -> (H,) mean entropy of the query rows in bits: low = a head that looks at one token."""
    p = np.clip(maps, 1e-12, 1)
    return -(p * np.log2(p)).sum(-1).mean(-1)


# --------------------------------------------------------------------------- FNet


def dft(t: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) T x T: the DFT over the sequence is cos - i sin of 2 pi j k / T. FNet keeps the real part of the 2D
    transform: cos @ Re(X F_C) + sin @ Im(X F_C), with F_C the DFT along the hidden dimension."""
    jk = np.outer(np.arange(t), np.arange(t)) % t               # integers first: exact angles
    angle = 2 * np.pi * jk / t
    return np.cos(angle), np.sin(angle)


def sign_changes(row: np.ndarray) -> int:
    """How often a row of the mixing matrix crosses zero: frequency k of a length-T row crosses 2k times (k <= T/2)."""
    r = np.where(np.abs(row) < 1e-9, 0.0, row)
    r = r[r != 0]
    return int((np.sign(r[1:]) != np.sign(r[:-1])).sum())


# --------------------------------------------------------------------------- efficient attention (Tay et al. 2020)

PATTERNS = {  # name -> (what it is, an example model, the Compress page's attention choice nearest it, or "")
    "fixed": ("each token attends inside its own block of w tokens", "blockwise / local attention",
              "local (a sliding window of W)"),
    "strided": ("a local window of w plus every w-th token (a dilated pattern)", "Sparse Transformer",
                "strided, local+strided"),
    "learned": ("tokens grouped by similarity; each attends within its group (here: the w keys its head weighs most)",
                "Reformer, Routing Transformer", "lsh (hash buckets)"),
    "low-rank": ("keys and values projected to w rows: the T x T map has rank <= w", "Linformer", "lowrank"),
    "kernel": ("softmax(q k^T) replaced by phi(q) phi(k)^T with w random features: every pair, linear cost",
               "Performer", "kernel"),
}


def patterns(head_map: np.ndarray, w: int, seed: int = 0, causal: bool = False) -> dict:
    """The five patterns over the T x T grid of one head's attention map (rows sum to 1), width / rank / features w:
    masks of who attends to whom (fixed, strided, learned; a decoder's never a later token), and the approximations
    low-rank and kernel methods give of this map. Each with its density (share of the grid computed) and its error
    against the map (rows renormalized)."""
    t = head_map.shape[0]
    if not 1 <= w <= t:
        raise CompressError(f"w must be from 1 to {t} (the sentence's length), got {w}")
    i, j = np.indices((t, t))
    seen = j <= i if causal else np.ones((t, t), dtype=bool)
    masks = {"fixed": (i // w == j // w) & seen, "strided": ((np.abs(i - j) < w) | ((i - j) % w == 0)) & seen}
    top = np.argsort(-head_map, axis=1)[:, :w]
    learned = np.zeros((t, t), dtype=bool)
    np.put_along_axis(learned, top, True, axis=1)
    masks["learned"] = learned & seen
    out = {}
    for name, m in masks.items():
        kept = head_map * m
        approx = kept / np.maximum(kept.sum(1, keepdims=True), 1e-12)
        out[name] = {"grid": m.astype(float), "density": float(m.mean()), "error": _err(approx, head_map)}
    u, s, vh = np.linalg.svd(head_map)
    lr = (u[:, :w] * s[:w]) @ vh[:w]
    out["low-rank"] = {"grid": lr, "density": 1.0, "error": _err(lr, head_map)}
    out["kernel"] = {"grid": (k := _performer(head_map, w, seed)), "density": 1.0, "error": _err(k, head_map)}
    return out


def _err(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def _performer(head_map: np.ndarray, w: int, seed: int) -> np.ndarray:
    """A positive-random-feature estimate of the map: with exp scores S = log(map) (up to a row constant), write the
    rows as points whose kernel is exp(S); we take S's best rank-8 split q k^T and estimate exp(q k^T) with w features."""
    s = np.log(np.clip(head_map, 1e-9, 1))
    s = s - s.max(1, keepdims=True)
    u, sv, vh = np.linalg.svd(s)
    d = min(8, len(sv))
    q, k = u[:, :d] * np.sqrt(sv[:d]), (vh[:d].T * np.sqrt(sv[:d]))
    g = np.random.default_rng(seed).standard_normal((d, w))
    phi = lambda x: np.exp(x @ g - (x ** 2).sum(1, keepdims=True) / 2) / math.sqrt(w)  # noqa: E731
    est = phi(q) @ phi(k).T
    return est / np.maximum(est.sum(1, keepdims=True), 1e-12)
