"""Recipe: the one description of a compression. Every slider in the app is one field.

Frozen (so it is a cache key), JSON round-trippable, and validated on construction: checks that
need no model live here; checks against a model (e.g. a rank larger than a layer) run in compress().
"""
import json
from dataclasses import asdict, dataclass, fields

RANK_MODES = ("none", "ratio", "energy", "budget")
QUANT_MODES = ("none", "int8", "fp16", "bf16")


class CompressError(ValueError):
    """Every bad input the library rejects: the message is meant for a person."""


@dataclass(frozen=True)
class Recipe:
    rank_mode: str = "none"       # none | ratio | energy | budget (see spectrum.select_ranks)
    rank: float = 1.0             # ratio: of min(m, n); energy: of sum(S^2); budget: of dense params
    quant: str = "none"           # none | int8 (dynamic, CPU) | fp16 | bf16
    quant_embeddings: bool = True  # with int8: word embeddings weight-only int8 (per-row scales)

    def __post_init__(self):
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
        return asdict(self)

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
        parts = []
        if self.rank_mode != "none":
            parts.append(f"rank {self.rank_mode} {self.rank:g}")
        if self.quant != "none":
            parts.append(self.quant + ("" if self.quant != "int8" or self.quant_embeddings else " (no emb)"))
        return ", ".join(parts) or "original"
