"""Healing curves: the dev metric against healing steps for one recipe, as the Learn page draws them.

The project ships one curve per bundled model in assets/heal/curve_<model>.json (made by
`python -m compress.bench.healcurve MODEL`), with its recipe, learning rate, seed and the machine that made it, so a
class sees healing work without waiting minutes; a healing run of the session (HealResult.history) replaces it."""
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from ..errors import CompressError
from ..techniques.heal import heal
from ..measure.core import cpu_info
from ..models.bundled import load_model
from ..table.pipeline import compress
from ..table.recipe import Recipe

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "heal"
SHIPPED = {"minilm": Recipe(rank_mode="ratio", rank=0.5), "tinygpt": Recipe(rank_mode="ratio", rank=0.25)}
STEPS, EVERY = 300, 20


def path(model: str) -> Path:
    return ASSETS / f"curve_{model}.json"


def shipped(model: str) -> dict | None:
    """The curve shipped for a bundled model, or None (an upload, or no file)."""
    p = path(model)
    return json.loads(p.read_text()) if p.exists() else None


def from_result(model: str, recipe: Recipe, heal_dict: dict) -> dict:
    """A session's healing run (HealResult.to_dict()) in the curve's shape."""
    return {"model": model, "recipe": recipe.to_json(), "metric": heal_dict["metric"], "history": heal_dict["history"],
            "steps": heal_dict["steps_run"], "source": "a healing run of this session"}


def make(model: str, recipe: Recipe, steps: int = STEPS, every: int = EVERY, lr: float = 3e-4, seed: int = 0) -> dict:
    """Heal the recipe's unhealed model for `steps` steps, the dev metric every `every` steps."""
    base = load_model(model)
    student = compress(base, dataclasses.replace(recipe, heal_steps=0))
    if student.recipe.quant != "none" or student.recipe.runtime != "eager":
        raise CompressError("a healing curve is drawn for float recipes (no quantization, eager runtime)")
    t0 = time.perf_counter()
    res = heal(student.model, base, steps=steps, lr=lr, seed=seed, eval_every=every)
    cpu = cpu_info()
    return {"model": model, "recipe": dataclasses.replace(recipe, heal_steps=steps, heal_lr=lr, heal_seed=seed).to_json(),
            "metric": res.metric, "history": res.history, "steps": res.steps_run, "lr": lr, "seed": seed,
            "machine": f"{cpu['cpu']}, {torch.get_num_threads()} torch thread(s)",
            "seconds": round(time.perf_counter() - t0, 1),
            "source": f"shipped in assets/heal/{path(model).name} (python -m compress.bench.healcurve {model})"}


if __name__ == "__main__":
    for name in sys.argv[1:] or list(SHIPPED):
        curve = make(name, SHIPPED[name])
        path(name).write_text(json.dumps(curve, indent=1) + "\n")
        print(name, curve["seconds"], "s", [round(h["dev"], 4) for h in curve["history"]])
