"""compress(bundle, recipe) in the fixed order, the JSON report, and save / reload."""
import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_model as st_load, save_model as st_save

from . import evaluate, measure
from .factorize import apply_factorize
from .models import ModelBundle, load_model
from .quantize import apply_quantize
from .recipe import CompressError, Recipe
from .spectrum import compute_spectra, layer_report, select_ranks, spectra


def _structure(bundle: ModelBundle, recipe: Recipe):
    """The steps that change shapes (factorization) on a deep copy: (model, per-layer report)."""
    model = copy.deepcopy(bundle.model)  # the original is shared by every session: never mutate it
    if recipe.rank_mode == "none":
        return model, []
    spec = spectra(bundle) if bundle.recipe is None else compute_spectra(model, bundle.adapter)
    ranks = select_ranks(spec, recipe.rank_mode, recipe.rank)
    return apply_factorize(model, ranks, spec), layer_report(spec, ranks)


def compress(bundle: ModelBundle, recipe: Recipe) -> ModelBundle:
    """A NEW compressed bundle; order: factorize -> quantize. The input bundle is not touched."""
    if bundle.recipe is not None:
        raise CompressError("compress() takes an original model, not an already compressed one")
    model, layers = _structure(bundle, recipe)
    model = apply_quantize(model, bundle.adapter, recipe.quant, recipe.quant_embeddings).eval()
    return ModelBundle(model, bundle.name, bundle.adapter, bundle.task, bundle.tokenizer, bundle.content_hash,
                       dict(bundle.info), recipe=recipe, layers=layers)


def workload(bundle: ModelBundle, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random token ids (B, T) and an all-ones mask: same input for every model."""
    if batch < 1 or seq < 1 or seq > bundle.info.get("max_positions", 1 << 30):
        raise CompressError(f"batch and seq must be >= 1 and seq <= the model's {bundle.info.get('max_positions')} positions")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, bundle.vocab_size // 2), bundle.vocab_size, (batch, seq), generator=g)
    return ids, torch.ones_like(ids)


def benchmark(original: ModelBundle, compressed: ModelBundle, batch=8, seq=128, runs=7, device="cpu", progress=None):
    """Latency of both, interleaved, on one workload. GPU runs on copies (int8 cannot run there)."""
    from .adapters import forward
    ids, mask = workload(original, batch, seq)
    models = {"original": original.model, "compressed": compressed.model}
    if device == "cuda":
        if compressed.recipe and compressed.recipe.quant == "int8":
            models.pop("compressed")  # dynamic int8 kernels are CPU-only
        models = {k: copy.deepcopy(m).to("cuda") for k, m in models.items()}
        ids, mask = ids.cuda(), mask.cuda()
    fns = {k: (lambda m=m: forward(m, original.adapter, ids, mask)) for k, m in models.items()}
    return measure.latency(fns, runs=runs, device=device, progress=progress)


def numbers(bundle: ModelBundle) -> dict:
    return {"size_bytes": measure.size_bytes(bundle.model), "params": measure.count_params(bundle.model),
            "size_breakdown": measure.size_breakdown(bundle.model, bundle.adapter)}


def report(original: ModelBundle, compressed: ModelBundle, batch=8, seq=128, runs=7) -> dict:
    """The one JSON object of `python -m compress apply`."""
    lat = benchmark(original, compressed, batch, seq, runs)
    out = {"recipe": compressed.recipe.to_dict(),
           "workload": {"batch": batch, "seq": seq, "runs": runs, **measure.cpu_info(), "gpu": measure.gpu_info()}}
    for name, b in (("original", original), ("compressed", compressed)):
        out[name] = {**numbers(b), "latency_ms": lat[name], "quality": evaluate.quality(b, original)}
    if measure.gpu_info():
        gpu = benchmark(original, compressed, batch, seq, runs, device="cuda")
        for name in ("original", "compressed"):
            out[name]["gpu_latency_ms"] = gpu.get(name)  # None: does not run on the GPU (int8)
    out["layers"] = compressed.layers
    return out


def save_compressed(bundle: ModelBundle, out_dir) -> Path:
    """recipe.json + base.json (model id, content hash) + weights.safetensors (the weights before
    quantization; int8 is deterministic, so reloading replays it and gives identical outputs)."""
    if bundle.recipe is None:
        raise CompressError("only a compressed bundle can be saved")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    float_model = bundle.float_model
    if float_model is None:  # not healed: the pre-quantization weights are a replay of the structure
        float_model = _structure(load_model(bundle.name), bundle.recipe)[0]
        if bundle.recipe.quant in ("fp16", "bf16"):
            float_model = apply_quantize(float_model, bundle.adapter, bundle.recipe.quant)
    st_save(float_model, str(out / "weights.safetensors"))
    (out / "recipe.json").write_text(bundle.recipe.to_json() + "\n")
    (out / "base.json").write_text(json.dumps({"model": bundle.name, "content_hash": bundle.content_hash}) + "\n")
    return out


def load_compressed(path) -> ModelBundle:
    """Rebuild a saved model: replay the recipe's structure on the base model, load the weights, quantize."""
    path = Path(path)
    try:
        base_meta = json.loads((path / "base.json").read_text())
        recipe = Recipe.from_json((path / "recipe.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CompressError(f"{path} is not a saved compressed model: {e}") from None
    base = load_model(base_meta["model"])
    if base.content_hash != base_meta["content_hash"]:
        raise CompressError(f"the base model {base.name} differs from the one this was saved from (content hash)")
    model, layers = _structure(base, recipe)
    if recipe.quant in ("fp16", "bf16"):
        model = apply_quantize(model, base.adapter, recipe.quant)
    st_load(model, str(path / "weights.safetensors"))
    if recipe.quant == "int8":
        model = apply_quantize(model, base.adapter, "int8", recipe.quant_embeddings)
    return ModelBundle(model.eval(), base.name, base.adapter, base.task, base.tokenizer, base.content_hash,
                       dict(base.info), recipe=recipe, layers=layers)
