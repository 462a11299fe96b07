"""python -m compress.table.child SPEC OUT: the fresh process of fresh.py. Loads the original by name (checked by
content hash), replays the recipe, builds the workload's first batch, calls the metric's function on it and writes
{"value": ...} to OUT. Run only as a process: nothing imports it."""
import importlib
import json
import sys

import torch

from ..errors import CompressError
from ..models.bundled import load_model
from . import pipeline
from .recipe import Recipe
from ..measure import evaluate
from ..measure.metrics import has_shape


def inputs(bundle, workload: dict):
    """The workload's first batch: seeded random ids or real text (batch x seq), or the first 32 evaluation
    sentences."""
    if has_shape(workload["kind"]):
        return evaluate.shaped(bundle, workload["kind"], workload["batch"], workload["seq"])
    return evaluate.batches(bundle, evaluate.sentence_groups(32)[0], 32)[0]


def main(spec: dict, out: str) -> None:
    torch.set_num_threads(spec["threads"])
    base = load_model(spec["model"])
    if base.content_hash != spec["content_hash"]:
        raise CompressError(f"{spec['model']} here has other weights than the model measured")
    recipe = spec["recipe"] and Recipe.from_json(spec["recipe"])
    # a replay, as export.load_compressed's: the steps' shapes without their fits' values (a clustered table's codes
    # stay zero), which a call's memory does not depend on (MiniLM's 2-bit table was clustered here again: 30 s)
    b = base if recipe is None else pipeline.finish(pipeline.walk(base, recipe, load=lambda ctx: None))
    ids, mask = inputs(base, spec["workload"])
    mod, _, name = spec["fn"].partition(":")
    fn = getattr(importlib.import_module(mod), name)
    value = fn(b, ids, mask)
    with open(out, "w") as f:
        json.dump({"value": value}, f)


if __name__ == "__main__":
    try:
        main(json.loads(sys.argv[1]), sys.argv[2])
    except CompressError as e:
        sys.exit(f"error: {e}")
