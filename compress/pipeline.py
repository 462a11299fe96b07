"""compress(bundle, recipe) in the fixed order, the JSON report, and save / reload."""
import contextlib
import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_model as st_load, save_model as st_save

from . import evaluate, fnet, heads, measure, runtime, sensitivity
from .factorize import apply_factorize, factorize_embeddings
from .heal import heal, heal_texts
from .layers import block_influence, choose_layers, drop_layers
from .models import ModelBundle, load_model
from .quantize import apply_quantize, fake_int8, low_bit_embeddings
from .recipe import CompressError, Recipe
from .spectrum import compute_spectra, layer_report, select_ranks, spectra


def _structure(bundle: ModelBundle, recipe: Recipe, progress=None):
    """The steps that change shapes, on a deep copy: layers -> heads/FFN -> FNet -> word table (rank or bits) ->
    factorize the blocks' Linear layers. (model, per-layer report)."""
    model = copy.deepcopy(bundle.model)  # the original is shared by every session: never mutate it
    if recipe.layers:  # measured once per model (on this copy: other sessions may be running the original)
        if "block_influence" not in bundle.cache:
            bundle.cache["block_influence"] = block_influence(model, bundle.adapter, calibration_batches(bundle))
        drop_layers(model, bundle.adapter, choose_layers(bundle.cache["block_influence"], recipe.layers))
    if recipe.heads:
        scores = None
        if recipe.head_score == "gradient":
            scores = heads.head_scores(model, bundle.adapter, "gradient", calibration_batches(bundle))
        heads.prune_heads(model, bundle.adapter, recipe.heads, scores)
    if recipe.ffn < 1:
        heads.narrow_ffn(model, bundle.adapter, recipe.ffn)
    if recipe.fnet:
        fnet.apply_fnet(model, bundle.adapter)
    if recipe.emb_rank < 1:
        factorize_embeddings(model, bundle.adapter, recipe.emb_rank)
    if recipe.emb_bits:  # before healing, so the blocks learn to work with the table they will run with
        low_bit_embeddings(model, bundle.adapter, recipe.emb_bits)
    if recipe.rank_mode == "none":
        return model, []
    spec = spectra(bundle) if not recipe.structural else compute_spectra(model, bundle.adapter)
    if recipe.rank_mode == "budget" and recipe.allocate == "sensitivity":
        sens = layer_sensitivity(bundle if not recipe.structural else _replace_model(bundle, model), spec, progress)
        ranks = sensitivity.allocate(spec, sens, recipe.rank)
    else:
        ranks = select_ranks(spec, recipe.rank_mode, recipe.rank)
    return apply_factorize(model, ranks, spec), layer_report(spec, ranks)


def layer_sensitivity(bundle: ModelBundle, spec=None, progress=None) -> dict[str, float]:
    """Quality drop per factorizable layer cut alone (sensitivity.py); kept with the bundle once measured."""
    if "sensitivity" not in bundle.cache:
        bundle.cache["sensitivity"] = sensitivity.layer_sensitivity(bundle, spec or spectra(bundle), progress=progress)
    return bundle.cache["sensitivity"]


def _replace_model(bundle: ModelBundle, model) -> ModelBundle:
    return dataclasses.replace(bundle, model=model, cache={})


def calibration_batches(bundle: ModelBundle, n: int = 64) -> list[tuple]:
    """A few batches of the healing text (never the evaluation set) for data-driven scores."""
    return evaluate.batches(bundle, heal_texts(bundle)[:n], batch=16)


def compress(bundle: ModelBundle, recipe: Recipe, texts=None, minutes=None, progress=None, stop=None) -> ModelBundle:
    """A NEW compressed bundle; order: layers -> heads/FFN -> FNet -> factorize -> heal -> quantize -> runtime.
    texts, minutes, progress, stop: healing text (None = the default corpus), time cap, callback, Event.
    The input bundle is not touched."""
    if bundle.recipe is not None:
        raise CompressError("compress() takes an original model, not an already compressed one")
    if bundle.adapter.causal and recipe.fnet:
        raise CompressError(f"FNet mixes in future tokens, so it cannot apply to {bundle.name}, a causal (decoder) model")
    applied = {}
    model, layers = _structure(bundle, recipe, progress)
    float_model = None
    if recipe.heal_steps:
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest() if texts else ""
        if recipe.heal_corpus and recipe.heal_corpus != digest:
            raise CompressError("this recipe was healed on a text that was not given (its sha256 differs); "
                                "give the same text or clear heal_corpus")
        recipe = dataclasses.replace(recipe, heal_corpus=digest)
        with fake_int8(model) if recipe.quant == "int8" else contextlib.nullcontext():  # heal what int8 will run
            r = heal(model, bundle, texts, steps=recipe.heal_steps, lr=recipe.heal_lr, seed=recipe.heal_seed,
                     minutes=minutes, progress=progress, stop=stop)
        applied["heal"] = r.to_dict()
        float_model = copy.deepcopy(model) if recipe.quant == "int8" else model
    model = apply_quantize(model, bundle.adapter, recipe.quant, recipe.quant_embeddings).eval()
    return _finish(bundle, model, recipe, layers, float_model, applied)


def _finish(base, model, recipe, layers, float_model=None, applied=None) -> ModelBundle:
    """The last step, runtime (size is measured on the model before it), and the new bundle."""
    applied, sized = dict(applied or {}), model
    if getattr(model, "kept_blocks", None) is not None:  # fewer layers: which original blocks remain
        applied["kept_blocks"] = model.kept_blocks
    model, applied["runtime_applied"], why = runtime.apply_runtime(
        model, base.adapter, recipe.runtime, workload(base, 2, min(16, base.info.get("max_positions", 16))))
    applied.update({"runtime_reason": why} if why else {})
    return ModelBundle(model, base.name, base.adapter, base.task, base.tokenizer, base.content_hash, dict(base.info),
                       recipe=recipe, layers=layers, float_model=float_model, sized_model=sized, applied=applied)


def workload(bundle: ModelBundle, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random token ids (B, T) and an all-ones mask: same input for every model."""
    if batch < 1 or seq < 1 or seq > bundle.info.get("max_positions", 1 << 30):
        raise CompressError(f"batch and seq must be >= 1 and seq <= the model's {bundle.info.get('max_positions')} positions")
    return evaluate.random_batches(bundle, batch, seq, batch, seed=0)[0]


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
    """Size and params, measured before the runtime step (a traced or compiled module holds the same weights)."""
    m = bundle.sized_model if bundle.sized_model is not None else bundle.model
    return {"size_bytes": measure.size_bytes(m), "params": measure.count_params(m),
            "size_breakdown": measure.size_breakdown(m, bundle.adapter)}


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
    out.update(compressed.applied)  # runtime_applied (+ runtime_reason), heal
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
    return _finish(base, model.eval(), recipe, layers)
