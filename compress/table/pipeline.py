"""compress(bundle, recipe): the technique table (steps.py) walked in its order; the JSON report. A saved model
reloads by the same walk (export.py)."""
import copy
import functools
import itertools

from ..measure import evaluate, core as measure
from ..serve import membound
from ..models.adapters import forward
from ..models.bundle import ModelBundle
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
    membound.check("heal" if recipe.heal_steps and load is None else "apply", base.model, base.name)
    ctx = Ctx(base, recipe, copy.deepcopy(base.model), **heal_args)  # the original is shared: never mutate it
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
    if bundle.recipe is not None:
        raise CompressError("compress() takes an original model, not an already compressed one")
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
    return ModelBundle(model, b.name, b.adapter, b.tokenizer, b.content_hash, dict(b.info), recipe=ctx.recipe,
                       layers=ctx.layers, sized_model=ctx.sized_model or model,
                       applied=applied)


WORKLOADS = {"ids": "seeded random token ids, batch x seq",
             "sentences": "both evaluation sets' sentences in batches of 32, dynamic padding, tokenization timed too"}
STRETCH = 8  # sentence batches per timed run: a model is timed as it embeds a stretch of text, not one batch after
#              the other model evicted its table from the caches (a lookup table's first batch after MiniLM: ~10x)


def benchmark(original: ModelBundle, compressed: ModelBundle, batch=8, seq=128, runs=7, device="cpu", progress=None,
              workload="ids"):
    """Latency of both, interleaved (A, B, A, B...), on one workload (WORKLOADS). GPU runs on copies (int8 cannot
    run there). "sentences": STRETCH batches in a row per run (every batch at least once), and the rate:
    sentences_per_s for encoders, tokens_per_s for decoders, over the timed batches."""
    if workload not in WORKLOADS:
        raise CompressError(f"workload must be one of {', '.join(WORKLOADS)}, got {workload!r}")
    models = {"original": original.model, "compressed": compressed.model}
    if device == "cuda":
        if compressed.recipe and compressed.recipe.quant == "int8":
            models.pop("compressed")  # dynamic int8 kernels are CPU-only
        models = {k: copy.deepcopy(m).to("cuda") for k, m in models.items()}
    if workload == "ids":
        ids, mask = (t.to(device) for t in evaluate.workload(original, batch, seq))
        fns = {k: (lambda m=m: forward(m, original.adapter, ids, mask)) for k, m in models.items()}
        return measure.latency(fns, runs=runs, device=device, progress=progress)

    def run(m, texts):  # tokenize and run one batch
        ids, mask = evaluate.batches(original, texts, 32)[0]
        return forward(m, original.adapter, ids.to(device), mask.to(device))
    lat, timed = time_sentences({k: functools.partial(run, m) for k, m in models.items()}, runs, device, progress)
    unit, n = ("tokens_per_s", sum(int(evaluate.batches(original, g, 32)[0][1].sum()) for g in timed)) \
        if original.adapter.causal else ("sentences_per_s", sum(map(len, timed)))
    return {k: {**v, unit: round(n / (v["total_ms"] / 1e3), 1)} for k, v in lat.items()}


def time_sentences(calls: dict, runs=7, device="cpu", progress=None) -> tuple[dict, list]:
    """Each callable(texts) timed on the real sentences: STRETCH batches of 32 in a row per timed call, the same
    batches for every model in a round, every batch at least once; (measure.latency's result, the kept rounds'
    batches)."""
    groups, counters, kept = evaluate.sentence_groups(32), {k: itertools.count() for k in calls}, []

    def stretch(i):  # the batches of round i
        return [groups[(i * STRETCH + j) % len(groups)] for j in range(STRETCH)]

    def run(k):
        for texts in stretch(next(counters[k])):
            out = calls[k](texts)
        return out
    lat = measure.latency({k: functools.partial(run, k) for k in calls}, runs=max(runs, -(-len(groups) // STRETCH)),
                          device=device, progress=progress, kept=kept)
    return lat, [g for i in kept for g in stretch(i)]


def numbers(bundle: ModelBundle) -> dict:
    """Size and params, measured before the runtime step (a traced or compiled module holds the same weights)."""
    m = bundle.sized_model if bundle.sized_model is not None else bundle.model
    membound.check("sizes", m, bundle.name)
    checkpoint()
    size = getattr(bundle.model, "file_bytes", None) or measure.size_bytes(m)  # onnxruntime: the .onnx file's bytes
    checkpoint()  # each part serializes the whole model once
    params = measure.count_params(m)
    checkpoint()
    return {"size_bytes": size, "params": params, "size_breakdown": measure.size_breakdown(m, bundle.adapter)}


def timing(lat: dict, recipe: Recipe | None = None) -> str:
    """How far a speed-up can be trusted: "reliable", "unreliable: ..." (other programs used more than BUSY of the
    CPUs while it was timed) or "no change" (nothing was chosen: the original timed against itself)."""
    if recipe is not None and recipe == Recipe():
        return "no change"
    busy = lat.get("others_busy")
    return f"unreliable: other programs used {busy:.0%} of the CPUs" if busy is not None and busy > measure.BUSY \
        else "reliable"


def row(original: dict, compressed: dict, lat: dict, recipe: Recipe | None = None) -> dict:
    """The one original-vs-compressed summary row (bench table, app history, Learn): numbers() + quality of each,
    benchmark() of both (with the sentences workload, its rate too), and how far the speed-up holds (timing())."""
    o, c, lo, lc = original, compressed, lat["original"], lat["compressed"]
    how = timing(lc, recipe)
    rate = next((k for k in ("sentences_per_s", "tokens_per_s") if k in lc), None)
    speed = {f"{rate} orig": lo[rate], rate: lc[rate], f"x {rate}": round(lc[rate] / lo[rate], 2)} if rate else {}
    return {"size MB": round(c["size_bytes"] / 1e6, 2), "x smaller": round(o["size_bytes"] / c["size_bytes"], 2),
            "params M": round(c["params"] / 1e6, 2), "p50 ms orig": lo["p50"], "p50 ms": lc["p50"],
            "x faster": None if how == "no change" else round(lo["p50"] / lc["p50"], 2), "timing": how,
            **({} if how == "no change" else speed), **c["quality"]}


def report(original: ModelBundle, compressed: ModelBundle, batch=8, seq=128, runs=7, workload="ids",
           progress=None) -> dict:
    """The one JSON object of `python -m compress apply` (and of the app's Apply). progress(fraction) while timing."""
    lat = benchmark(original, compressed, batch, seq, runs, workload=workload, progress=progress)
    shape = {"batch": batch, "seq": seq} if workload == "ids" else {"batch": 32, "texts": evaluate.sentence_count()}
    out = {"recipe": compressed.recipe.to_dict(),
           "workload": {"kind": workload, **shape, "runs": lat["original"]["runs"], **measure.cpu_info(),
                        "gpu": measure.gpu_info()}}
    for name, b in (("original", original), ("compressed", compressed)):
        out[name] = {**numbers(b), "latency_ms": lat[name], "quality": evaluate.quality(b, original)}
    if measure.gpu_info():
        gpu = benchmark(original, compressed, batch, seq, runs, device="cuda", workload=workload)
        for name in ("original", "compressed"):
            out[name]["gpu_latency_ms"] = gpu.get(name)  # None: does not run on the GPU (int8)
    out["layers"] = compressed.layers
    out.update(compressed.applied)  # runtime_applied (+ runtime_reason), heal, kept_blocks
    return out
