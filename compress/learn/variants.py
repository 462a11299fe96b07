"""The Learn page's efficient-attention variants on the loaded model: for one layer of a typed sentence, the T x T
matrix each variant of the technique table (techniques/attention.py) applies, next to the original's softmax, and
how far the layer's attention output moves.

Every variant's output is linear in v: out = M v, M built from q and k (a band, stride classes, Linformer's E and F,
Performer's features, elu+1 features). So M is read off by calling the variant's own attend() with v = the identity:
the matrix the compressed model applies at this layer (its E, F and features as Apply initialises them, the same
seeded draw), not a picture of it. local / strided: zeros outside their pattern; lowrank / kernel / linear: dense.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CompressError
from ..table import pipeline
from ..table.recipe import Recipe
from ..techniques import attention
from . import attention as A

SETTINGS = ("window", "stride", "attn_rank", "features", "buckets")  # the Recipe fields the variants read
SLOT = "learn_variants"


def recipe(variant: str, settings: dict) -> Recipe:
    """The Compress page's recipe for a variant with these settings (the fields it does not read at their defaults)."""
    used = {"local": ("window",), "strided": ("stride",), "local+strided": ("window", "stride"),
            "lowrank": ("attn_rank",), "kernel": ("features",), "lsh": ("window", "buckets")}.get(variant, ())
    return Recipe(attention=variant, **{f: int(settings[f]) for f in used})


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative Frobenius error of a against b."""
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


@torch.no_grad()
def _variants(bundle, att: dict, head: int, settings: dict) -> dict:
    q, k, v = att["qkv"]                                                   # each (H, T, hd), float32
    H, T, hd = q.shape
    o = bundle.adapter.block_list(bundle.model)[att["layer"]].get_submodule(bundle.adapter.o)

    def project(y):  # (H, T, hd) -> (T, out): the heads side by side through the layer's output projection
        return F.linear(y.transpose(0, 1).reshape(T, H * hd), o.weight.float(),
                        None if o.bias is None else o.bias.float())

    full = torch.from_numpy(att["maps"])                                    # (H, T, T) rows sum to 1
    want = project(full @ v)
    out = {"original": {"mix": att["maps"][head].copy(), "error": 0.0, "head_error": 0.0, "density": 1.0}}
    for name in attention.VARIANTS[1:]:
        r = recipe(name, settings)
        why = pipeline.refusal(bundle, r)
        if why:
            out[name] = {"refused": why}
            continue
        m = attention.install(nn.Module(), r, bundle.adapter.causal, att["layer"], hd, bundle.info["max_positions"])
        eye = torch.eye(T).repeat(1, H, 1, 1)                              # (1, H, T, T): v = identity, out = M
        mix = attention.attend(m, q[None], k[None], eye, None, hd ** -0.5)[0].float()  # (H, T, T)
        out[name] = {"mix": mix[head].clone().numpy(), "error": _rel(project(mix @ v), want),
                     "head_error": _rel(mix[head], full[head]), "density": float((mix[head] != 0).float().mean()),
                     "recipe": r}
    return out


def variants(bundle, text: str, layer: int, head: int, settings: dict) -> dict:
    """{"original" and each variant: mix (T, T) the matrix applied to the values by head `head` of layer `layer`
    (rows: queries), error (the relative Frobenius error of the layer's attention output, through its output
    projection, against the original's, with this layer alone taking the variant on the original's inputs), head_error (the matrix against the original map), density (its share of
    non-zeros), recipe (Compress's); or {"refused": the one line}}. One forward at most (the layer's q, k, v are
    kept with its maps: learn/attention.layer_attention, bounded there); kept per model within MAX_CACHE_BYTES."""
    settings = {f: int(settings[f]) for f in SETTINGS}
    got = cached(bundle, text, layer, head, settings)
    if got is not None:
        return got
    att = A.layer_attention(bundle, text, layer)
    if not 0 <= head < att["maps"].shape[0]:
        raise CompressError(f"head must be from 0 to {att['maps'].shape[0] - 1}, got {head}")
    got = _variants(bundle, att, head, settings)
    arrays = {f"{n}_mix": v["mix"] for n, v in got.items() if "mix" in v}  # (what the cache's bound counts)
    A.keep(bundle, text, layer, {"variants": got, **arrays}, SLOT, (head, tuple(settings.values())))
    return got


def cached(bundle, text: str, layer: int, head: int, settings: dict) -> dict | None:
    got = A.cached(bundle, text, layer, SLOT, (head, tuple(int(settings[f]) for f in SETTINGS)))
    return None if got is None else got["variants"]


def table(got: dict) -> list[dict]:
    """The rows the page shows under the matrices: one per variant, its errors, or (a row of its own words) why it
    cannot apply here: its numbers stay empty, and "applies" says why."""
    return [{"attention": n, "applies": "yes" if "mix" in v else f"no: {v['refused']}",
             **{k: (round(v[f], d) if "mix" in v else None) for k, f, d in
                (("share non-zero", "density", 3), ("layer output error", "error", 4),
                 ("this head's matrix error", "head_error", 4))}} for n, v in got.items()]
