"""ModelBundle: a model plus what the rest of the library needs to know about it (no registry, no loading)."""
import hashlib
from dataclasses import dataclass, field, replace

import torch.nn as nn

from .adapters import Adapter


@dataclass
class ModelBundle:
    model: nn.Module
    name: str                 # registry id or upload name
    adapter: Adapter          # per-family facts, the task included
    tokenizer: object | None
    content_hash: str         # sha256 of the weight files: identifies the base model
    info: dict                # model card facts: architecture, layers, heads, hidden, source
    recipe: object | None = None           # the Recipe, on compressed bundles
    layers: list = field(default_factory=list)  # per-layer factorization report
    sized_model: nn.Module | None = None   # the model before the runtime step: what size is measured on
    applied: dict = field(default_factory=dict)  # what compress() did: runtime_applied (+ reason), heal result
    cache: dict = field(default_factory=dict, repr=False)  # per-bundle results (eval embeddings, scores)

    @property
    def task(self) -> str:
        return self.adapter.task

    @property
    def vocab_size(self) -> int:
        return self.info["vocab_size"]


def file_sha256(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def hf_info(config, source: str) -> dict:
    return {"architecture": type(config).__name__.replace("Config", ""), "model_type": config.model_type,
            "layers": config.num_hidden_layers, "heads": config.num_attention_heads,
            # grouped-query attention (Llama family): key/value heads, each shared by heads / kv_heads query heads
            "kv_heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            "hidden": config.hidden_size, "vocab_size": config.vocab_size,
            "max_positions": config.max_position_embeddings, "source": source}


def with_positions(b: ModelBundle, n: int | None) -> ModelBundle:
    """This bundle as a model of n positions reads it: its texts and windows cut at n (techniques/positions.py);
    a view with a cache of its own, or the bundle itself where n is unset or no fewer than its own."""
    if not n or n >= b.info.get("max_positions", n):
        return b
    return replace(b, info={**b.info, "max_positions": n}, cache={})


def common(original: ModelBundle, compressed: ModelBundle) -> ModelBundle:
    """The original as both read the same inputs: cut at the compressed model's positions where those are fewer."""
    return with_positions(original, compressed.info.get("max_positions"))
