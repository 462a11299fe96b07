"""Recipe: the one description of a compression. Every slider in the app is one field.

Frozen (so it is a cache key), JSON round-trippable, and validated on construction: checks that
need no model live here; checks against a model (e.g. a rank larger than a layer) run in compress().
"""
import json
from dataclasses import asdict, dataclass, fields

RANK_MODES = ("none", "ratio", "energy", "budget")
QUANT_MODES = ("none", "int8", "fp16", "bf16")
HEAD_SCORES = ("weight", "gradient")
ALLOCATIONS = ("spectral", "sensitivity")
RUNTIMES = ("eager", "freeze", "compile")
EMB_BITS = (0, 4, 2)


class CompressError(ValueError):
    """Every bad input the library rejects: the message is meant for a person."""


def _check(ok: bool, msg: str):
    if not ok:
        raise CompressError(msg)


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class Recipe:
    # in the order they are applied: layers -> heads/FFN -> FNet -> factorize -> heal -> quantize -> runtime
    layers: int = 0               # transformer blocks kept, those that change their input most: 0 = all
    heads: int | tuple = 0        # attention heads kept per layer: 0 = all; k; or one k per layer
    head_score: str = "weight"    # weight (data-free norms) | gradient (Michel et al. 2019, on calibration text)
    ffn: float = 1.0              # fraction of FFN intermediate neurons kept per layer
    fnet: bool = False            # attention replaced by Re(FFT2) token mixing (encoders only)
    emb_rank: float = 1.0         # word-embedding table at rank emb_rank * hidden (1 = dense)
    emb_bits: int = 0             # word-embedding table at 4 or 2 bits per weight (0 = as quant says)
    rank_mode: str = "none"       # none | ratio | energy | budget (see spectrum.select_ranks)
    rank: float = 1.0             # ratio: of min(m, n); energy: of sum(S^2); budget: of dense params
    allocate: str = "spectral"    # budget mode: spectral (energy per param) | sensitivity (measured drop)
    heal_steps: int = 0           # distillation steps from the original after the structural steps; 0 = none
    heal_lr: float = 3e-4          # 3e-4 + hidden-state matching: best of a sweep on MiniLM (heal.py)
    heal_seed: int = 0
    heal_corpus: str = ""         # sha256 of the healing text; "" = the default corpus
    quant: str = "none"           # none | int8 (dynamic, CPU) | fp16 | bf16
    quant_embeddings: bool = True  # with int8: word embeddings weight-only int8 (per-row scales)
    runtime: str = "eager"        # eager | freeze (TorchScript trace + freeze) | compile (torch.compile)

    def __post_init__(self):
        _check(_is_num(self.layers) and self.layers == int(self.layers) and self.layers >= 0,
               f"layers is a count of transformer blocks kept (0 = all), got {self.layers!r}")
        object.__setattr__(self, "layers", int(self.layers))
        heads = tuple(self.heads) if isinstance(self.heads, (list, tuple)) else self.heads
        _check(all(_is_num(h) and h == int(h) and h >= 0 for h in (heads if isinstance(heads, tuple) else [heads]))
               and heads != (), f"heads is a count of heads kept per layer (0 = all) or a list of them, got {self.heads!r}")
        object.__setattr__(self, "heads", tuple(int(h) for h in heads) if isinstance(heads, tuple) else int(heads))
        _check(self.head_score in HEAD_SCORES, f"head_score must be one of {', '.join(HEAD_SCORES)}, got {self.head_score!r}")
        _check(_is_num(self.ffn) and 0.0 < self.ffn <= 1.0, f"ffn is the fraction of FFN neurons kept, in (0, 1], got {self.ffn!r}")
        object.__setattr__(self, "ffn", float(self.ffn))
        _check(isinstance(self.fnet, bool), f"fnet must be true or false, got {self.fnet!r}")
        _check(_is_num(self.emb_rank) and 0.0 < self.emb_rank <= 1.0,
               f"emb_rank is the fraction of the hidden size kept by the embedding table, in (0, 1], got {self.emb_rank!r}")
        object.__setattr__(self, "emb_rank", float(self.emb_rank))
        _check(self.emb_bits in EMB_BITS and not isinstance(self.emb_bits, bool),
               f"emb_bits is 0 (the table as quant says), 4 or 2, got {self.emb_bits!r}")
        object.__setattr__(self, "emb_bits", int(self.emb_bits))
        _check(not (self.emb_bits and self.emb_rank < 1), "choose one way to shrink the word-embedding table: "
               "a lower rank or fewer bits (on MiniLM 2 bits keep more: fidelity 0.95 vs 0.70 at rank 0.25, same size)")
        _check(not (self.fnet and self.heads), "FNet replaces attention, so pruning its heads makes no sense: "
                                              "choose FNet or head pruning")
        _check(self.allocate in ALLOCATIONS, f"allocate must be one of {', '.join(ALLOCATIONS)}, got {self.allocate!r}")
        _check(_is_num(self.heal_steps) and self.heal_steps == int(self.heal_steps) and 0 <= self.heal_steps <= 100_000,
               f"heal_steps is a number of steps in [0, 100000], got {self.heal_steps!r}")
        _check(_is_num(self.heal_lr) and 0 < self.heal_lr < 1, f"heal_lr is a learning rate in (0, 1), got {self.heal_lr!r}")
        _check(_is_num(self.heal_seed) and self.heal_seed == int(self.heal_seed), f"heal_seed is an integer, got {self.heal_seed!r}")
        _check(isinstance(self.heal_corpus, str), f"heal_corpus is a sha256 string, got {self.heal_corpus!r}")
        for k, t in (("heal_steps", int), ("heal_lr", float), ("heal_seed", int)):
            object.__setattr__(self, k, t(getattr(self, k)))
        _check(self.runtime in RUNTIMES, f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.rank_mode not in RANK_MODES:
            raise CompressError(f"rank_mode must be one of {', '.join(RANK_MODES)}, got {self.rank_mode!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, (int, float)):
            raise CompressError(f"rank must be a number in (0, 1], got {self.rank!r}")
        if not 0.0 < float(self.rank) <= 1.0:
            raise CompressError(f"rank is a fraction in (0, 1] (of min(m, n), of energy or of params), got {self.rank}")
        object.__setattr__(self, "rank", float(self.rank))
        if self.quant not in QUANT_MODES:
            raise CompressError(f"quant must be one of {', '.join(QUANT_MODES)}, got {self.quant!r}")
        if not isinstance(self.quant_embeddings, bool):
            raise CompressError(f"quant_embeddings must be true or false, got {self.quant_embeddings!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["heads"] = list(self.heads) if isinstance(self.heads, tuple) else self.heads  # JSON has no tuples
        return d

    @property
    def structural(self) -> bool:
        """Does it change shapes or weights before quantization (so the spectra of the original no longer apply)?"""
        return bool(self.layers or self.heads) or self.ffn < 1 or self.fnet  # (embeddings are not in the spectra)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        if not isinstance(d, dict):
            raise CompressError(f"a recipe is a JSON object, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise CompressError(f"unknown recipe field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise CompressError(f"recipe is not valid JSON: {e}") from None

    def describe(self) -> str:
        parts = [f"{self.layers} layers"] if self.layers else []
        if self.heads:
            parts.append(f"{self.heads if isinstance(self.heads, int) else list(self.heads)} heads"
                         + (" (gradient)" if self.head_score == "gradient" else ""))
        if self.ffn < 1:
            parts.append(f"FFN {self.ffn:g}")
        if self.fnet:
            parts.append("FNet")
        if self.emb_rank < 1:
            parts.append(f"embeddings rank {self.emb_rank:g}")
        if self.emb_bits:
            parts.append(f"embeddings {self.emb_bits}-bit")
        if self.rank_mode != "none":
            parts.append(f"rank {self.rank_mode} {self.rank:g}"
                         + (" (sensitivity)" if self.rank_mode == "budget" and self.allocate == "sensitivity" else ""))
        if self.heal_steps:
            parts.append(f"healed {self.heal_steps} steps")
        if self.quant != "none":
            parts.append(self.quant + ("" if self.quant != "int8" or self.quant_embeddings else " (no emb)"))
        if self.runtime != "eager":
            parts.append(self.runtime)
        return ", ".join(parts) or "original"
