"""Efficient attention (the survey's fixed patterns, low rank and kernels) on a pretrained model: the same q, k and v
projections, the scores computed another way. One function, attend(), serves every family: the adapter installs it
(transformers: their attention interface; TinyGPT: its attention's `attend` hook). What a variant needs lives on
each attention module: `attn_args` (its settings), Linformer's projections (parameters: healing trains them) and
Performer's random features (a buffer: saved with the weights, so a reload runs the same features).
"""
import torch.nn as nn

from . import kernel_attn, lowrank_attn, lsh_attn, sparseattn

VARIANTS = ("none", "local", "strided", "local+strided", "lowrank", "kernel", "linear", "lsh")
MAX_FEATURES = MAX_BUCKETS = 1024  # whatever positions a config declares (Performer's m: 64 to 256; Reformer's n: 8-64)
WINDOWED = ("local", "local+strided", "lsh")  # (lsh: W is its chunk length)
ENCODER_ONLY = ("lowrank", "lsh")  # they mix in positions from the whole sequence
STRIDED = ("strided", "local+strided")


def attend(module, q, k, v, valid, scale):
    """q, k, v (B, H, T, d), valid (B, T) bool of real keys or None -> (B, H, T, d) by the module's variant."""
    a = module.attn_args
    kind, causal = a["variant"], a["causal"]
    if kind == "local":
        return sparseattn.local(q, k, v, valid, scale, causal, a["window"])
    if kind == "strided":
        return sparseattn.strided(q, k, v, valid, scale, causal, a["stride"])
    if kind == "local+strided":
        return sparseattn.local_strided(q, k, v, valid, scale, causal, a["window"], a["stride"])
    if kind == "lowrank":
        return lowrank_attn.lowrank(module, q, k, v, valid, scale)
    if kind == "kernel":
        return kernel_attn.kernel(module, q, k, v, valid, scale, causal)
    if kind == "lsh":
        return lsh_attn.lsh(module, q, k, v, valid, scale, a["window"])
    return kernel_attn.linear(module, q, k, v, valid, scale, causal)


def attention_modules(model: nn.Module, adapter) -> list[nn.Module]:
    """The module of each block that owns q, k and v (the one its family's attention function receives)."""
    parent = adapter.q.rpartition(".")[0]
    return [b.get_submodule(parent) for b in adapter.block_list(model)]


def apply_attention(model: nn.Module, adapter, r, info: dict) -> nn.Module:
    """Every block's attention computed by the recipe's variant, IN PLACE (the caller deep-copies)."""
    for i, m in enumerate(attention_modules(model, adapter)):
        install(m, r, adapter.causal, i, info["hidden"] // info["heads"], r.positions or info["max_positions"])
    adapter.use_attention(model, attend)
    return model


def install(m: nn.Module, r, causal: bool, layer: int, head_dim: int, positions: int) -> nn.Module:
    """One attention module set up for the recipe's variant: its settings, Linformer's E and F, Performer's features
    (one draw per layer, seeded by its index: the same on every replay, and on the Learn page's drawing)."""
    m.attn_args = {"variant": r.attention, "causal": causal, "window": r.window, "stride": r.stride}
    if r.attention == "lowrank":
        lowrank_attn.add_projections(m, r.attn_rank, positions)
    if r.attention == "kernel":
        kernel_attn.add_features(m, r.features, head_dim, seed=layer)
    if r.attention == "lsh":
        lsh_attn.add_rotations(m, r.buckets, head_dim, seed=layer)
    return m


def refuse(b, r) -> str | None:
    """The one line why this variant cannot apply (b None: the recipe alone)."""
    v = r.attention
    if v == "none":
        return None
    if r.fnet:
        return "FNet replaced attention with Fourier mixing, so there is no attention left to compute another way: " \
               "choose FNet or an attention variant"
    if v in WINDOWED and r.window < 1:
        return f"a local window of {r.window} tokens lets a token see nothing, not even itself: W must be 1 or more"
    if v in STRIDED and r.stride < 1:
        return f"a stride of {r.stride} is no pattern: 1 (every token) or more"
    if v == "lowrank" and r.attn_rank < 1:
        return f"a projection to {r.attn_rank} positions leaves no key to attend to: k must be 1 or more"
    if v == "kernel" and r.features < 1:
        return f"{r.features} random features estimate nothing: m must be 1 or more"
    if v == "lsh" and (r.buckets < 1 or r.buckets > 1 and r.buckets % 2):
        return f"the Reformer's hash has n/2 rotations and their opposites, so {r.buckets} buckets cannot be: n must " \
               "be 1 or even"
    if v == "local+strided" and (r.heads == 1 or isinstance(r.heads, tuple) and min(r.heads) < 2):
        return "local+strided gives half of each block's heads to each pattern: keep 2 or more heads per block"
    if b is None:
        return None
    n = min(b.info["max_positions"], r.positions or b.info["max_positions"])  # (a cut position table: positions.py)
    if v == "lowrank" and b.adapter.causal:
        return f"Linformer's projection mixes positions from the whole sequence, future ones too, so it cannot apply " \
               f"to {b.name}, a causal (decoder) model"
    if v == "lsh" and b.adapter.causal:
        return f"LSH attention sorts the whole sequence by bucket, so which earlier keys a token sees would depend on " \
               f"later tokens: it cannot apply to {b.name}, a causal (decoder) model"
    if v == "lsh" and r.buckets > min(n, MAX_BUCKETS):
        return f"{b.name} takes at most {n} positions: {r.buckets} buckets would leave most empty (n from 1 to " \
               f"{min(n, MAX_BUCKETS)})"
    cols, most = lowrank_attn.columns(n), lowrank_attn.MAX_ENTRIES  # Linformer's positions, its numbers at most
    if v == "lowrank" and r.attn_rank > cols:
        return f"{b.name} takes at most {cols} positions{'' if cols == n else ' under Linformer'}: a projection to " \
               f"k = {r.attn_rank} would not shorten any sequence (k from 1 to {cols})"
    entries = 3 * b.info["layers"] * r.attn_rank * cols
    if v == "lowrank" and entries > most:
        return f"Linformer's projections of k = {r.attn_rank} over {cols:,} positions in {b.info['layers']} blocks " \
               f"would hold {entries:,} numbers; at most {most:,} (k up to {most // (3 * b.info['layers'] * cols)})"
    if v == "kernel" and r.features > min(n, MAX_FEATURES):
        return f"with m = {r.features} features per head a kernel costs more than full attention at every length " \
               f"{b.name} takes (at most {n} positions): m from 1 to {n}" if r.features > n else \
               f"m = {r.features} random features per head; at most {MAX_FEATURES} here (Performer's: 64 to 256)"
    if v == "local+strided" and b.info["heads"] < 2:
        return f"local+strided gives half of each block's heads to each pattern; {b.name} has 1 head per block"
    return None


def mb_per_token(info: dict, r, t: int | None = None) -> float:
    """What one block's attention of this variant may hold at once per token of a batch, in MB: a query's keys,
    slots or features (the variant's width, at the longest text the model takes) x heads x 4 bytes, x 4 for the
    intermediates. The memory checks of Apply and healing add it, times their tokens, to the weights' copies, which
    know nothing of a variant's m or k (m = 65,536 on a 50K-param model with 2^31 declared positions took 414 s and
    17 GB). t: the longest text (default: the model's positions; the curve over T extends them)."""
    t = info["max_positions"] if t is None else t
    width = {"none": 0, "kernel": 3 * r.features, "lowrank": r.attn_rank, "local": 3 * min(r.window, t),
             "lsh": 3 * min(r.window, t) + r.buckets, "strided": t // max(1, r.stride) + 1,
             "local+strided": 3 * min(r.window, t) + t // max(1, r.stride)}.get(r.attention, t)  # linear: its T x d
    return info["heads"] * width * 4 * 4 / 1e6


def describe(r) -> str:
    extra = {"local": f" W={r.window}", "strided": f" stride {r.stride}", "local+strided": f" W={r.window}, stride "
             f"{r.stride}", "lowrank": f" k={r.attn_rank}", "kernel": f" m={r.features}",
             "lsh": f" {r.buckets} buckets, chunks of {r.window}"}.get(r.attention, "")
    return f"{r.attention} attention{extra}"


TEACH = ("Efficient attention (the survey of Tay et al. 2022): the same q, k and v, the T x T scores computed another "
         "way. local: each token sees a window of W (Longformer's sliding window), in blocks, O(T W); strided: every "
         "s-th token (dilated), O(T^2 / s); local+strided: half of the heads each (Sparse Transformer); lowrank: keys "
         "and values projected along the sequence to k positions, learned, initialised by pooling (Linformer; encoders "
         "only); kernel: Performer's FAVOR+ random features, m per head, O(T m d); linear: elu+1 features; lsh: queries "
         "and keys hashed into n buckets by a random rotation, sorted, each query attending the keys of its bucket in "
         "its chunk of W and the two beside it (Reformer; encoders only). Decoders keep causality (a causal band; "
         "prefix sums). The rest of the model was trained with full attention: heal it.")
