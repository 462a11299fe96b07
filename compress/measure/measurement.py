"""One Measurement of a compressed model against its original (and, where asked, the peer and the model before
healing): size, params, latency per workload with its reliability, quality per evaluation set, rates, the machine and
the versions; made by ONE call, measure(). Its to_dict() is the JSON of `python -m compress apply` (pipeline.report),
which the app's Apply, the downloaded card and the stored rows read; row() is the stored summary row."""
import copy
import dataclasses
import functools
import itertools
import platform
from dataclasses import dataclass, field

from . import core, evaluate, metrics
from ..serve import membound
from ..models.adapters import forward
from ..models.bundle import ModelBundle, common
from ..serve.cancel import checkpoint
from ..errors import CompressError

WORKLOADS = {"ids": "seeded random token ids, batch x seq",
             "passages": "real text, both evaluation sets' sentences joined and cut into batch x seq tokens",
             "sentences": "both evaluation sets' sentences in batches of 32, dynamic padding, tokenization timed too"}
STRETCH = 8  # sentence batches per timed run: a model is timed as it embeds a stretch of text, not one batch after
#              the other model evicted its table from the caches (a lookup table's first batch after MiniLM: ~10x)


def rate_key(bundle: ModelBundle) -> str:
    """The real-sentences rate of this model (the metrics table's: metrics.rate_for)."""
    return metrics.rate_for(bundle).name


def benchmark(original: ModelBundle, compressed: ModelBundle, batch=8, seq=128, runs=7, device="cpu", progress=None,
              workload="ids"):
    """Latency of both, interleaved (A, B, A, B...), on one workload (WORKLOADS). GPU runs on copies (int8 cannot
    run there). "sentences": STRETCH batches in a row per run (every batch at least once), and the rate (rate_key):
    sentences_per_s for encoders, tokens_per_s for decoders, over the timed batches."""
    if workload not in WORKLOADS:
        raise CompressError(f"workload must be one of {', '.join(WORKLOADS)}, got {workload!r}")
    original = common(original, compressed)  # (inputs both can read: a cut position table, positions.py)
    models = {"original": original.model, "compressed": compressed.model}
    if device == "cuda":
        if compressed.recipe and compressed.recipe.quant == "int8":
            models.pop("compressed")  # dynamic int8 kernels are CPU-only
        models = {k: copy.deepcopy(m).to("cuda") for k, m in models.items()}
    if workload != "sentences":  # batch x seq: random ids or real text in windows
        ids, mask = (t.to(device) for t in evaluate.shaped(original, workload, batch, seq))
        fns = {k: (lambda m=m: forward(m, original.adapter, ids, mask)) for k, m in models.items()}
        return core.latency(fns, runs=runs, device=device, progress=progress)

    def run(m, texts):  # tokenize and run one batch
        ids, mask = evaluate.batches(original, texts, 32)[0]
        return forward(m, original.adapter, ids.to(device), mask.to(device))
    lat, timed = time_sentences({k: functools.partial(run, m) for k, m in models.items()}, runs, device, progress)
    rate = metrics.rate_for(original)
    n = rate.count(original, timed)
    return {k: {**v, rate.name: round(n / (v["total_ms"] / 1e3), 1)} for k, v in lat.items()}


def time_sentences(calls: dict, runs=7, device="cpu", progress=None) -> tuple[dict, list]:
    """Each callable(texts) timed on the real sentences: STRETCH batches of 32 in a row per timed call, the same
    batches for every model in a round, every batch at least once; (core.latency's result, the kept rounds'
    batches)."""
    groups, counters, kept = evaluate.sentence_groups(32), {k: itertools.count() for k in calls}, []

    def stretch(i):  # the batches of round i
        return [groups[(i * STRETCH + j) % len(groups)] for j in range(STRETCH)]

    def run(k):
        for texts in stretch(next(counters[k])):
            out = calls[k](texts)
        return out
    lat = core.latency({k: functools.partial(run, k) for k in calls}, runs=max(runs, -(-len(groups) // STRETCH)),
                          device=device, progress=progress, kept=kept)
    return lat, [g for i in kept for g in stretch(i)]


def numbers(bundle: ModelBundle, progress=None) -> dict:
    """Size and params, measured before the runtime step (a traced or compiled module holds the same weights).
    progress(fraction): the two serializations (the whole, then each part) as they are counted."""
    m = bundle.sized_model if bundle.sized_model is not None else bundle.model
    membound.check("sizes", m, bundle.name)
    checkpoint()
    total = 2 * core.tensor_bytes(m.state_dict())  # each weight is serialized twice: in the whole, in its part
    size = getattr(bundle.model, "file_bytes", None) or core.size_bytes(m, progress, total)  # onnxruntime: the file
    params = core.count_params(m)
    parts = core.size_breakdown(m, bundle.adapter, progress, total, start=total // 2)
    if progress is not None:
        progress(1.0)
    return {"size_bytes": size, "params": params, "size_breakdown": parts}


def timing(lat: dict, recipe=None) -> str:
    """How far a speed-up can be trusted: "reliable", "unreliable: ..." (other programs used more than BUSY of the
    CPUs while it was timed) or "no change" (nothing was chosen: the original timed against itself)."""
    if recipe is not None and recipe == type(recipe)():  # the table's defaults: nothing chosen
        return "no change"
    busy = lat.get("others_busy")
    return f"unreliable: other programs used {busy:.0%} of the CPUs" if busy is not None and busy > core.BUSY \
        else "reliable"


def row(original: dict, compressed: dict, lat: dict, recipe=None) -> dict:
    """The one original-vs-compressed summary row (bench table, app history, Learn): numbers() + quality of each,
    benchmark() of both (with the sentences workload, its rate too), and how far the speed-up holds (timing())."""
    o, c, lo, lc = original, compressed, lat["original"], lat["compressed"]
    how = timing(lc, recipe)
    rate = next((k for k in metrics.RATES if k in lc), None)
    speed = {f"{rate} orig": lo[rate], rate: lc[rate], f"x {rate}": round(lc[rate] / lo[rate], 2)} if rate else {}
    return {"size MB": round(c["size_bytes"] / 1e6, 2), "x smaller": round(o["size_bytes"] / c["size_bytes"], 2),
            "params M": round(c["params"] / 1e6, 2), "p50 ms orig": lo["p50"], "p50 ms": lc["p50"],
            "x faster": None if how == "no change" else round(lo["p50"] / lc["p50"], 2), "timing": how,
            **({} if how == "no change" else speed), **c["quality"],
            **{m.name: c[m.name] for m in metrics.own("all") if m.name in c}}  # metrics measured on their own


@dataclass
class Side:
    """One model's numbers: numbers() and quality always; latency where timed (CPU, and GPU where there is one)."""
    size_bytes: int
    params: int
    size_breakdown: dict
    quality: dict
    latency_ms: dict | None = None
    gpu_latency_ms: dict | None = None  # None: no GPU here, or it does not run there (int8)
    extra: dict = field(default_factory=dict)  # metrics measured on their own, by name

    def to_dict(self, gpu: bool = False) -> dict:
        out = {"size_bytes": self.size_bytes, "params": self.params, "size_breakdown": self.size_breakdown}
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
        out["quality"] = self.quality
        if gpu:
            out["gpu_latency_ms"] = self.gpu_latency_ms
        return {**out, **self.extra}


@dataclass
class Measurement:
    """Original vs compressed, measured together (measure()); the peer and the unhealed model where asked."""
    recipe: object  # a table.recipe.Recipe: the table sits above the measurements (tests/test_structure.py)
    workload: dict  # kind, its shape, runs, the machine (cpu_info) and the GPU (None: none)
    original: Side
    compressed: Side
    layers: list = field(default_factory=list)
    applied: dict = field(default_factory=dict)  # runtime_applied (+ runtime_reason / setting), heal, kept_blocks
    unhealed: Side | None = None
    peer: "Measurement | None" = None
    rate: str | None = None  # the rate key of the sentences workload (rate_key)
    versions: dict = field(default_factory=dict)

    @property
    def machine(self) -> str:
        return core.machine_line(self.workload)

    @property
    def lat(self) -> dict:
        return {"original": self.original.latency_ms, "compressed": self.compressed.latency_ms}

    def to_dict(self) -> dict:
        """The JSON of `python -m compress apply` (pipeline.report's): the same keys as ever."""
        gpu = bool(self.workload.get("gpu"))
        out = {"recipe": self.recipe.to_dict(), "workload": dict(self.workload),
               "original": self.original.to_dict(gpu), "compressed": self.compressed.to_dict(gpu),
               "layers": self.layers, **self.applied}
        if self.unhealed is not None:
            out["unhealed"] = self.unhealed.to_dict()
        return out

    def values(self, names=None) -> dict:
        """The compressed side's metrics by name (the metrics table's values: a sweep trial's numbers)."""
        return metrics.values(self.compressed.to_dict(), self.original.to_dict(), names)

    def row(self) -> dict:
        """The stored summary row (row())."""
        return row(self.original.to_dict(), self.compressed.to_dict(), self.lat, self.recipe)


def side(bundle: ModelBundle, original: ModelBundle, lat: dict | None = None) -> Side:
    return Side(**numbers(bundle), quality=evaluate.quality(bundle, original), latency_ms=lat)


def _own(metric, bundle: ModelBundle, workload: dict, asked: bool):
    """A metric measured on its own; where it was not asked for by name (every metric: the CLI's), one that cannot be
    measured here is None (not measured) instead of failing the whole measurement."""
    try:
        return metric.measure(bundle, workload)
    except CompressError:
        if asked:
            raise
        return None


def versions() -> dict:
    import torch
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def measure(original: ModelBundle, compressed: ModelBundle, workload: str = "ids", batch: int = 8, seq: int = 128,
            runs: int = 7, peer: ModelBundle | None = None, unhealed: ModelBundle | None = None, progress=None,
            base: Side | None = None, timed: bool = True, own=None, gpu: bool = True) -> Measurement:
    """The one measurement: latency of both interleaved on the workload (WORKLOADS; timed=False: none), size, params
    and quality of each (base: the original's, already measured), the GPU's latency where there is one; with peer
    (pipeline.peer_model) the same for it, interleaved with its own run of the original; with unhealed (the recipe
    without healing) its numbers and quality; own: the metrics measured on their own (metrics.own: None = those every
    measurement takes, "all", or names) for both, where this model has them; gpu=False: no GPU timing even where
    there is a GPU. progress(fraction) while timing."""
    if original.recipe is not None or compressed.recipe is None or compressed.content_hash != original.content_hash:
        raise CompressError(f"measure takes an original model and a compressed copy of it (compress or "
                            f"load_compressed of it); {compressed.name} is not a compressed copy of {original.name}")
    metrics.own(own)  # (an unknown metric name: one line, before anything runs)
    per = compressed.applied.get("attention_mb_per_token", 0.0)  # an attention variant's activations, over this
    if per:  # workload or the quality sets' batches (64 x 128), checked before either runs
        membound.check("apply", original.model, compressed.name,
                       extra_mb=per * max(batch * seq if metrics.has_shape(workload) else 0, 64 * 128))
    share = 0.5 if peer is not None else 1.0
    lat = benchmark(original, compressed, batch, seq, runs, workload=workload,
                    progress=progress and (lambda f: progress(f * share))) if timed else None
    shape = {"batch": batch, "seq": seq} if metrics.has_shape(workload) else \
        {"batch": 32, "texts": evaluate.sentence_count()}
    card = core.gpu_info()  # the machine's GPU (None: none), in the workload even where gpu=False skips its timing
    w = {"kind": workload, **shape, "runs": lat["original"]["runs"] if lat else 0, **core.cpu_info(), "gpu": card}
    o = dataclasses.replace(base, latency_ms=lat and lat["original"]) if base is not None \
        else side(original, original, lat and lat["original"])
    c = side(compressed, original, lat and lat["compressed"])
    if gpu and card and timed:
        g = benchmark(original, compressed, batch, seq, runs, device="cuda", workload=workload)
        o.gpu_latency_ms, c.gpu_latency_ms = g.get("original"), g.get("compressed")
    m = Measurement(compressed.recipe, w, o, c, compressed.layers, dict(compressed.applied),
                    rate=None if metrics.has_shape(workload) else rate_key(original), versions=versions())
    for x in metrics.own(own):
        if x.available(original, workload):
            for s, b in ((o, original), (c, compressed)):
                if x.name not in s.extra:
                    s.extra = {**s.extra, x.name: _own(x, b, {"kind": workload, "batch": batch, "seq": seq},
                                                       asked=own not in (None, "all"))}
    if unhealed is not None:
        m.unhealed = Side(**numbers(unhealed), quality=evaluate.quality(unhealed, original))
    if peer is not None:
        m.peer = measure(original, peer, workload, batch, seq, runs, base=o, timed=timed,
                         progress=progress and (lambda f: progress(0.5 + f / 2)), own=own, gpu=gpu)
    return m
