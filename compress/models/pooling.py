"""sentence-transformers' own settings, where an encoder's folder has them: modules.json (the module list: a Normalize
module L2-normalizes the sentence embedding) and its Pooling module's config.json (1_Pooling/config.json: mean over the
real tokens, the first token's state, or the max). The evaluation's and search's sentence embeddings are then pooled
as the folder says (normalized always: cosine and top-5 do not change with it; the metric's words say the pooling);
without them, mean pooling, as before. Healing's own loss stays on mean-pooled states. Both files are untrusted: sized before they
are read (staging), parsed as JSON objects, every mode a boolean, exactly one mode on and that one a mode this project
computes; anything else is refused in one line.
"""
import json
import re
from pathlib import Path

import torch

from ..errors import CompressError

MODULES, POOLING = "modules.json", "pooling_config.json"  # flat names in the staged folder
MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
OTHER = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")
MAX_MODULES = 16


def _json(path: Path, want: type, what: str):
    try:
        d = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # (a 4,301-digit int too)
        raise CompressError(f"{what} is not valid JSON") from None
    if not isinstance(d, want):
        raise CompressError(f"{what} must hold a JSON {'object' if want is dict else 'list'}")
    return d


def read(d: Path, hidden: int) -> dict:
    """{"pooling": mean | cls | max, "normalize": bool} from a staged folder's sentence-transformers files, or {}."""
    out = {}
    if (d / MODULES).exists():
        mods = _json(d / MODULES, list, MODULES)
        if len(mods) > MAX_MODULES or not all(isinstance(m, dict) and isinstance(m.get("type", ""), str) for m in mods):
            raise CompressError(f"{MODULES} must list at most {MAX_MODULES} modules, each an object with a type name")
        out["normalize"] = any(m.get("type", "").endswith(".Normalize") for m in mods)
        skipped = [re.sub(r"\W", "", m.get("type", "").rpartition(".")[2])[:40] or "?" for m in mods  # a class name
                   if not m.get("type", "").endswith((".Transformer", ".Pooling", ".Normalize"))]
        if skipped:  # (a Dense projection: the embedding measured here is the pooled state, before it)
            out["skipped_modules"] = ", ".join(skipped)
    if (d / POOLING).exists():
        cfg = _json(d / POOLING, dict, "1_Pooling/config.json")
        modes = {k: v for k, v in cfg.items() if k.startswith("pooling_mode_")}
        bad = next((k for k, v in modes.items() if not isinstance(v, bool)), None)
        if bad:
            raise CompressError(f"1_Pooling/config.json: {bad[:60]} must be true or false, got {str(modes[bad])[:40]}")
        on = [k for k, v in modes.items() if v]
        if len(on) != 1 or on[0] not in MODES:
            raise CompressError(f"1_Pooling/config.json turns on {', '.join(k[:60] for k in on[:3]) or 'no mode'}; "
                                f"one of {', '.join(MODES)} is supported here")
        dim = cfg.get("word_embedding_dimension", hidden)
        if dim != hidden:
            raise CompressError(f"1_Pooling/config.json: word_embedding_dimension {str(dim)[:20]} but the model's hidden "
                                f"size is {hidden}")
        out["pooling"] = MODES[on[0]]
    return out


def pool(h: torch.Tensor, mask: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """(B, T, C), (B, T) -> (B, C): the mean over real tokens, the first token's state, or the max over real tokens."""
    if how == "cls":
        return h[:, 0]
    if how == "max":
        return h.masked_fill(~mask.bool()[..., None], torch.finfo(h.dtype).min).amax(1)
    m = mask.to(h.dtype)
    return torch.bmm(m.unsqueeze(1), h).squeeze(1) / m.sum(1, keepdim=True).clamp(min=1)
