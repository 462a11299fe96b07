"""compress(bundle, recipe): the technique table (steps.py) walked in its order; the JSON report. A saved model
reloads by the same walk (export.py)."""
import copy

import torch

from ..measure.measurement import (STRETCH, WORKLOADS, Measurement, benchmark, measure, numbers, rate_key,  # noqa: F401
                                   row, time_sentences, timing)  # (re-exported: the table's names for them)
from ..serve import membound
from ..models.bundle import ModelBundle
from ..techniques.attention import mb_per_token
from ..techniques.heal import HEAL_TOKENS
from ..serve.cache import LRU
from ..serve.cancel import checkpoint
from ..errors import CompressError
from .recipe import Recipe
from .step import Ctx
from .steps import STEPS, refusal


def walk(base: ModelBundle, recipe: Recipe, load=None, **heal_args) -> Ctx:
    """Every active step in table order on a deep copy of the base. load: a replay (export.load_compressed): healing
    is skipped and load(ctx) puts the saved weights, as the model runs them, in place before the runtime step."""
    why = refusal(base, recipe)
    if why:
        raise CompressError(why)
    heals = recipe.heal_steps and load is None  # (a variant's activations over healing's batches; Apply's over its
    membound.check("heal" if heals else "apply", base.model, base.name,  # workload: measurement.measure)
                   extra_mb=mb_per_token(base.info, recipe) * HEAL_TOKENS if heals else 0.0)
    work = copy.deepcopy(base.model)  # the original is shared: never mutate it
    if any(p.dtype in (torch.bfloat16, torch.float16) for p in work.parameters()):
        work = work.float()  # bf16/fp16 kept at load (uploads' dtype="keep"): every technique runs on float32
    replay = load is not None and recipe.runtime != "onnxruntime"  # an ONNX zip is checked against the steps' model
    ctx = Ctx(base, recipe, work, replay=replay, **heal_args)
    for step in STEPS:
        checkpoint()
        if load is not None and step.name == "runtime":
            load(ctx)
        if step.is_active(recipe) and not (step.trains and load is not None):
            step.apply(ctx, ctx.recipe)
    return ctx


def compress(bundle: ModelBundle, recipe: Recipe, texts=None, minutes=None, progress=None, stop=None) -> ModelBundle:
    """A NEW compressed bundle, the steps applied in the table's order (steps.STEPS). texts, minutes, progress,
    stop: healing text (None = the default corpus), time cap, callback, Event. The input bundle is not touched."""
    if not isinstance(bundle, ModelBundle) or not isinstance(recipe, Recipe):
        raise CompressError("compress() takes a loaded model (load_model, load_upload) and a Recipe")
    if bundle.recipe is not None:
        raise CompressError("compress() takes an original model, not an already compressed one")
    if texts is not None and (isinstance(texts, str) or not all(isinstance(t, str) for t in texts)):
        raise CompressError("texts (the healing text) is a list of strings, one a text")
    if minutes is not None and not (type(minutes) in (int, float) and 0 < minutes < float("inf")):
        raise CompressError(f"minutes (healing's time cap) must be a positive number, got {minutes!r}")
    return finish(walk(bundle, recipe, texts=texts, minutes=minutes, progress=progress, stop=stop))


_COMPRESSED = LRU("compressed models", 6, "compressed models by (model, recipe), shared by every session that asks "
                  "for the same one (healed models are not: they depend on the session's text)")


PEER = Recipe(quant="int8", runtime="onnxruntime")  # what a user would pick instead: ONNX Runtime int8 of the original
_PEERS = LRU("peer models", 2, "the peer of each original (ONNX Runtime's int8 of it), apart from the compressed "
             "models so that trying recipes never evicts it")


def peer_model(bundle: ModelBundle) -> ModelBundle:
    """The original in ONNX Runtime with its own dynamic int8 (per channel), built once per model."""
    return _PEERS.get_or_make((bundle.name, bundle.content_hash), lambda: compress(bundle, PEER))


def compressed_model(bundle: ModelBundle, recipe: Recipe) -> ModelBundle:
    """compress(), kept in the shared cache for recipes without healing."""
    if recipe.heal_steps:
        raise CompressError("a healed model is built by healing (compress with its text), not taken from the cache")
    return _COMPRESSED.get_or_make((bundle.name, bundle.content_hash, recipe.to_json()),
                                   lambda: compress(bundle, recipe))


def finish(ctx: Ctx) -> ModelBundle:
    b, model = ctx.base, ctx.model.eval()
    applied = {"runtime_applied": "eager", **ctx.applied}
    if ctx.recipe.attention != "none":  # what its attention holds per token: measurement.measure's memory check
        applied["attention_mb_per_token"] = mb_per_token(b.info, ctx.recipe)
    info = {**b.info, **({"max_positions": ctx.recipe.positions} if ctx.recipe.positions else {})}  # (positions.py)
    return ModelBundle(model, b.name, b.adapter, b.tokenizer, b.content_hash, info, recipe=ctx.recipe,
                       layers=ctx.layers, sized_model=ctx.sized_model or model,
                       applied=applied)


def report(original: ModelBundle, compressed: ModelBundle, batch=8, seq=128, runs=7, workload="ids",
           progress=None) -> dict:
    """The one JSON object of `python -m compress apply` (and of the app's Apply): measure()'s Measurement as a dict.
    progress(fraction) while timing."""
    return measure(original, compressed, workload, batch, seq, runs, progress=progress).to_dict()
