"""Presets: measured recipes a newcomer can start from ("about 4x", "about 10x", "about 20x", "static"), each with the
numbers it gave, on which model and machine, and what its healing cost. One table that later work updates: the
numbers are copied from BENCHMARKS.md's runs (the section named in `source`), never computed here. A preset a model
cannot take is refused by the technique table's own reason (steps.refusal), as any recipe is."""
from dataclasses import dataclass

from ..errors import CompressError
from .recipe import Recipe
from .steps import refusal


@dataclass(frozen=True)
class Preset:
    name: str
    recipe: dict          # Recipe fields off their defaults
    gives: str            # what it gave, in words a stakeholder reads
    measured_on: str      # model and machine
    healing: str          # what its healing took there ("" when it needs none)
    source: str           # BENCHMARKS.md's section
    minutes: float = 0.0  # the healing time cap its steps need here (the app's default cap would stop them early)
    model: str = "minilm"  # the model its numbers are of (measured_on says so in words)

    def build(self, bundle=None) -> Recipe:
        """The recipe; for a model (bundle) with no pooler, or no positions past those kept, without those fields
        (FREE: they change no output, so the preset holds as it did, and the model is not refused for them)."""
        r = dict(self.recipe)
        for f in FREE if bundle is not None else ():
            if f in r and refusal(bundle, Recipe(**{f: r[f]})):
                del r[f]
        return Recipe(**r)


FREE = ("drop_pooler", "positions")  # parts no output here reads (pooler.py, positions.py)


XEON = "MiniLM on the 2-core Xeon (AVX-512 VNNI, AMX)"
EPYC = "MiniLM on a 2-core AMD EPYC (AVX-512 VNNI)"
PRESETS = [
    Preset("about 4x", dict(quant="int8"),
           "23.5 MB, 3.87x smaller, 1.7x faster (8 x 128), fidelity 0.978 / 0.974 (our sentences / Python docs), "
           "no healing", XEON, "", "the technique table"),
    Preset("about 10x", dict(layers=3, drop_pooler=True, positions=256, emb_pq=4, quant="int8", heal_lr=1e-3,
                             heal_steps=4000, heal_text="all"),
           "8.81 MB, 10.31x smaller, 2.8-2.9x faster (8 x 128), fidelity 0.924 / 0.912 (our sentences / Python docs) "
           "after 4,000 healing steps on all the healing texts, 0.879 on prose never tuned on", XEON,
           "4,000 steps: 66 min on one thread beside another healing (the 2-bit-row preset before it: 68 min so, "
           "17 min alone on two threads)", "Fewer positions: 0.10 MB that no text here reads", 60.0),
    Preset("about 20x", dict(layers=3, drop_pooler=True, positions=256, vocab=0.673, vocab_keep="english",
                             vocab_cover="output", emb_pq=8, emb_pq_top=20, emb_pq_heal=True, quant="int4",
                             runtime="onnxruntime", heal_lr=1e-3, heal_steps=6000, heal_text="all"),
           "4.54 MB, 20.02x smaller, 4.7-5.0x faster (8 x 128, ONNX Runtime; 3.8-4.1x on the EPYC of the session "
           "before), fidelity 0.900 / 0.903 after 6,000 healing steps on all the healing texts, the codebooks healed "
           "too, 0.855 on prose never tuned on", EPYC,
           "6,000 steps: 62-71 min alone on two threads (healing simulates ONNX Runtime's int8 rounding); the app's "
           "60-minute cap may end it earlier, its schedule then fitted to the cap",
           "Number tokens ranked by their own frequency", 60.0),
    Preset("static", dict(static=True, vocab=0.49, quant="int8", heal_lr=1e-2, heal_steps=1600, heal_text="all"),
           "5.93 MB, 15.3x smaller, 194x the real sentences per second of fp32 MiniLM, fidelity 0.807 / 0.807, "
           "neighbour agreement 0.485 (encoders only)", EPYC,
           "91,434 texts labeled once (7.5 min on an EPYC beside other work), then 1,600 fit steps (under 1 min)",
           "a computing corpus for the static end", 15.0),
]
BY_NAME = {p.name: p for p in PRESETS}


def reason(name: str, bundle) -> str | None:
    """Why this model cannot take the preset (the technique table's words), or None."""
    if name not in BY_NAME:
        raise CompressError(f"unknown preset {name[:40]!r}; presets: {', '.join(BY_NAME)}")
    try:
        return refusal(bundle, BY_NAME[name].build(bundle))
    except CompressError as e:  # a count the model does not have (heads=10 on a 4-head model) is the Recipe's check
        return str(e)
