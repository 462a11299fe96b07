"""Step (one entry of the technique table, steps.py) and Ctx (what the steps build, step by step). The steps'
apply functions live with their techniques (compress/techniques/)."""
import time
from dataclasses import dataclass, field, replace
from typing import Callable


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


def family_refusals(step: Step) -> Step:
    """The step refusing first, in one line, what a model's family cannot do (its adapter's `refusals`: step name,
    why), then as its own refuse says."""
    def refuse(b, r):
        why = b is not None and step.is_active(r) and dict(b.adapter.refusals).get(step.name)
        return f"{b.name}: {why}" if why else step.refuse(b, r)
    return replace(step, refuse=refuse)


@dataclass
class Ctx:
    """What the steps build: a copy of the base model, changed step by step."""
    base: object                    # the original ModelBundle (never mutated)
    recipe: object
    model: object
    texts: list | None = None       # healing text (None = the default corpus)
    minutes: float | None = None   # healing's time cap, counted from `started` (the steps before it spend it too)
    started: float = field(default_factory=time.perf_counter)
    progress: Callable | None = None
    stop: object = None
    replay: bool = False            # an eager zip rebuilt (pipeline.walk's load): its saved weights replace the steps'
    layers: list = field(default_factory=list)   # the per-layer factorization report
    applied: dict = field(default_factory=dict)  # what was done: kept_blocks, heal, runtime_applied (+ reason)
    sized_model: object = None      # the model before the runtime step (what size is measured on)
    unquantized: object = None      # the model before a quantization step (onnxruntime quantizes it its own way)
