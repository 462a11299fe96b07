"""Step (one entry of the technique table, steps.py), Ctx (what the steps build, step by step), and the apply
functions of the steps that take more than one call."""
import contextlib
import copy
import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Callable

from ..techniques import heads, layers, ortrun, quantize, runtime, sensitivity
from ..errors import CompressError
from ..measure.evaluate import workload
from ..techniques.factorize import apply_factorize
from ..techniques.heal import calibration_batches, heal
from ..techniques.spectrum import compute_spectra, layer_report, select_ranks, spectra


@dataclass(frozen=True)
class Step:
    name: str
    title: str                      # README's technique column
    fields: tuple = ()              # the Recipe fields it owns, in order
    apply: Callable = None          # (ctx, recipe) -> None: changes ctx.model (a deep copy), fills ctx.layers/applied
    active: Callable = None         # recipe -> bool (default: a selected value, or any owned field off its default)
    refuse: Callable = lambda b, r: None  # (bundle or None, recipe) -> the reason a person reads, or None
    describe: Callable = lambda r: ""     # recipe -> a few words (Recipe.describe)
    simulate: Callable | None = None      # (model, adapter, recipe) -> context manager healing runs inside
    selects: tuple = ()             # (field name, value, ...): active when that field holds one of these values
    examples: tuple = ()            # recipe fragments for the pair tests and the bench
    after_heal: bool = False        # runs after healing: replayed on load from the saved (healed) weights
    trains: bool = False            # healing itself: skipped when a saved model is replayed
    changes_blocks: bool = False    # changes the blocks' weights (the original's spectra no longer apply)
    slow: tuple = ()                # examples that are slow (tests mark them; the bench skips them)
    teach: str = ""                 # what it does, for a person learning it (the control's caption, README)

    def is_active(self, r) -> bool:
        if self.active is not None:
            return self.active(r)
        if self.selects:
            return getattr(r, self.selects[0]) in self.selects[1:]
        return any(getattr(r, f.name) != f.default for f in self.fields)


@dataclass
class Ctx:
    """What the steps build: a copy of the base model, changed step by step."""
    base: object                    # the original ModelBundle (never mutated)
    recipe: object
    model: object
    texts: list | None = None       # healing text (None = the default corpus)
    minutes: float | None = None
    progress: Callable | None = None
    stop: object = None
    layers: list = field(default_factory=list)   # the per-layer factorization report
    applied: dict = field(default_factory=dict)  # what was done: kept_blocks, heal, runtime_applied (+ reason)
    sized_model: object = None      # the model before the runtime step (what size is measured on)
    unquantized: object = None      # the model before a quantization step (onnxruntime quantizes it its own way)


def layers_step(ctx, r):
    b = ctx.base  # Block Influence is measured once per model (on the copy: other sessions may run the original)
    if "block_influence" not in b.cache:
        b.cache["block_influence"] = layers.block_influence(ctx.model, b.adapter, calibration_batches(b))
    layers.drop_layers(ctx.model, b.adapter, layers.choose_layers(b.cache["block_influence"], r.layers))
    ctx.applied["kept_blocks"] = ctx.model.kept_blocks


def heads_step(ctx, r):
    b = ctx.base
    scores = heads.head_scores(ctx.model, b.adapter, "gradient", calibration_batches(b)) \
        if r.head_score == "gradient" else None
    heads.prune_heads(ctx.model, b.adapter, r.heads, scores)


def factorize_step(ctx, r, structural: bool):
    b = ctx.base
    if not structural:
        spec, measured = spectra(b), b
    else:  # shapes or weights changed: the spectra (and sensitivity) of what was built so far
        spec = compute_spectra(ctx.model, b.adapter)
        measured = dataclasses.replace(b, model=ctx.model, cache={})
    if r.rank_mode == "budget" and r.allocate == "sensitivity":
        ranks = sensitivity.allocate(spec, sensitivity.cached(measured, spec, ctx.progress), r.rank)
    else:
        ranks = select_ranks(spec, r.rank_mode, r.rank)
    apply_factorize(ctx.model, ranks, spec)
    ctx.layers = layer_report(spec, ranks)


def heal_step(ctx, r, rounding: list):
    texts = ctx.texts
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest() if texts else ""
    if r.heal_corpus and r.heal_corpus != digest:
        raise CompressError("this recipe was healed on a text that was not given (its sha256 differs); "
                            "give the same text or clear heal_corpus")
    ctx.recipe = dataclasses.replace(r, heal_corpus=digest)
    with contextlib.ExitStack() as stack:  # heal the model that quantization will run
        for s in rounding:
            stack.enter_context(s.simulate(ctx.model, ctx.base.adapter, r))
        res = heal(ctx.model, ctx.base, texts, steps=r.heal_steps, lr=r.heal_lr, seed=r.heal_seed,
                   minutes=ctx.minutes, progress=ctx.progress, stop=ctx.stop)
    ctx.applied["heal"] = res.to_dict()


def replace_model(fn):
    """A quantization step: a new model from the current one (which may be changed in place: a copy is kept as
    ctx.unquantized when onnxruntime will quantize it its own way)."""
    def apply(ctx, r):
        if r.runtime == "onnxruntime" and ctx.unquantized is None:
            ctx.unquantized = copy.deepcopy(ctx.model)
        ctx.model = fn(ctx.model, ctx.base.adapter, r)
    return apply


def quantize_model(model, adapter, r):
    return quantize.apply_quantize(model, adapter, r.quant, r.quant_embeddings)


def example(b):
    """The small batch a runtime is traced / exported on and checked against eager with (2 x at most 16 ids)."""
    return workload(b, 2, min(16, b.info.get("max_positions", 16)))


def runtime_step(ctx, r):
    b = ctx.base
    ctx.sized_model = ctx.model
    batch = example(b)
    if r.runtime == "onnxruntime":  # exported from the float model; int8 by onnxruntime's own quantization
        ort, why = ortrun.apply(ctx.unquantized or ctx.model, b.adapter, r, batch)
        ctx.model, ctx.applied["runtime_applied"] = (ort, "onnxruntime") if ort is not None else (ctx.model, "eager")
        ctx.applied.update({"runtime_reason": why} if why else {"runtime_setting": ort.setting})
    else:
        ctx.model, ctx.applied["runtime_applied"], why = runtime.apply_runtime(ctx.model, b.adapter, r.runtime,
                                                                               batch)
        ctx.applied.update({"runtime_reason": why} if why else {})
    ctx.unquantized = None  # not kept: a whole model

