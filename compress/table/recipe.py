"""Recipe: the one description of a compression. Every slider in the app is one field.

Its fields are the technique table's (steps.py), listed here with their types and defaults in the table's order.
Frozen (so it is a cache key), JSON and URL round-trippable, and validated on construction: each field by its kind
and range, then the combinations the steps refuse. Checks against a model (a rank larger than a layer, more heads than it has) run in compress().
"""
import dataclasses
import json

from ..errors import CompressError
from .steps import FIELDS, STEPS, refusal, structural

NO_FACTOR = "no layer factorized: at this rank each would be larger than its dense weights"


def unfactorized(applied: dict) -> bool:
    """Did the low-rank step factorize no layer (applied["factorized"]: [layers, of], a sweep trial's too)?"""
    f = applied.get("factorized")
    return isinstance(f, list) and f[:1] == [0]


class _Recipe:
    def __post_init__(self):
        for f in FIELDS.values():
            object.__setattr__(self, f.name, f.check(getattr(self, f.name)))
        why = refusal(None, self)
        if why:
            raise CompressError(why)

    def to_dict(self) -> dict:
        return {f: list(v) if isinstance(v, tuple) else v for f, v in dataclasses.asdict(self).items()}  # JSON: no tuples

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def structural(self) -> bool:
        """Does it change the blocks before factorization (so the spectra of the original no longer apply)?"""
        return structural(self)

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise CompressError(f"a recipe is a JSON object, got {type(d).__name__}")
        unknown = set(d) - set(FIELDS)
        if unknown:
            raise CompressError(f"unknown recipe field(s): {', '.join(sorted(map(str, unknown)))[:200]}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str):
        try:
            d = json.loads(text)
        except ValueError as e:  # (JSON's, and an integer of 4,301+ digits)
            raise CompressError(f"recipe is not valid JSON: {e}") from None
        except RecursionError:
            raise CompressError("recipe is not valid JSON: nested too deeply") from None
        return cls.from_dict(d)

    def to_params(self) -> dict[str, str]:
        """The recipe as URL query values (every field, as text from_params reads back)."""
        return {k: FIELDS[k].text(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_params(cls, params):
        """A recipe from URL query values (missing fields: defaults), or None when they name no field."""
        d = {k: FIELDS[k].parse(params[k]) for k in FIELDS if k in params}
        return cls.from_dict(d) if d else None

    def to_cli(self) -> list[str]:
        """The apply / heal / report flags that give this recipe (its fields off their defaults)."""
        out = []
        for k, f in FIELDS.items():
            v = getattr(self, k)
            if v != f.default and f.label:
                out += [f.flag] if v is True else ["--no-" + f.flag[2:]] if v is False else [f.flag, f.text(v)]
        return out

    def describe(self) -> str:
        return ", ".join(s.describe(self) for s in STEPS if s.is_active(self)) or "original"

    def ran(self, applied: dict) -> str:
        """describe() as it ran (applied: the compressed bundle's): a healing cut short says how far it got; a rank
        at which no layer is factorized says so (each would store more than its dense weights)."""
        applied, said = applied if isinstance(applied, dict) else {}, self.describe()  # (a card's record: any shape)
        if self.rank_mode != "none" and unfactorized(applied):
            said += f" ({NO_FACTOR})"
        h, asked = applied.get("heal"), f"healed {self.heal_steps} steps"
        run = h.get("steps_run") if isinstance(h, dict) else None
        if type(run) is not int or not 0 <= run < self.heal_steps:
            return said
        ended = h.get("ended") if h.get("ended") in ("time cap", "Stop", "diverged") else "stopped"
        kept = "" if h.get("best_step") else ", the unhealed model kept"
        return said.replace(asked, f"healed {run} of {self.heal_steps} steps ({ended}{kept})")


@dataclasses.dataclass(frozen=True)
class Recipe(_Recipe):
    """One compression: a field per control of the technique table (steps.STEPS), in its order, with the table's
    defaults (tests/test_recipe.py checks them against it: a new step's fields are added here too)."""
    static: bool = False                # static token table
    static_attn: bool = False           # one attention layer over it
    layers: int = 0                     # fewer layers (0 = all)
    heads: int | tuple[int, ...] = 0    # heads kept per block (0 = all), or one count per block
    head_score: str = "weight"
    ffn: float = 1.0                    # FFN width kept
    fnet: bool = False
    attention: str = "none"             # efficient attention and its settings
    window: int = 32
    stride: int = 8
    attn_rank: int = 64
    features: int = 64
    buckets: int = 8                    # lsh: hash buckets (1 or even)
    pool: int = 1                       # token pooling (1 = none)
    pool_at: int = 2
    drop_pooler: bool = False           # the unused pooler dropped (encoders)
    positions: int = 0                  # the position table's first N rows kept (0 = all)
    vocab: float = 1.0                  # vocabulary kept
    vocab_cover: str = "nearest"        # what a dropped token reads
    vocab_keep: str = "text"            # which rows are kept: the healing text's tokens (+ English's)
    emb_rank: float = 1.0               # word-embedding rank
    emb_bits: int = 0                   # word-embedding bits (0 = float)
    emb_pq: int = 0                     # word-table product quantization: weights a code (0 = none)
    emb_pq_top: int = 0                 # ... its most frequent rows, this percent of the vocabulary, at 4 a code
    emb_pq_heal: bool = False           # ... healing trains its codebooks too
    rank_mode: str = "none"             # low rank of the blocks' layers
    rank: float = 1.0
    allocate: str = "spectral"
    heal_steps: int = 0                 # healing
    heal_lr: float = 3e-4
    heal_seed: int = 0
    heal_text: str = "styles"           # the default healing text: styles, general or both
    heal_corpus: str = ""
    heal_relations: bool = False        # also distil the last block's attention relations (MiniLM v2)
    heal_hidden: int = 3                # weight of the kept blocks' hidden states matched to the original's (encoders)
    quant: str = "none"                 # quantization (int8, int4, half)
    quant_embeddings: bool = True
    runtime: str = "eager"
