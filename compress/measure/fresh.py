"""A metric measured in a fresh process (python -m compress.table.child), so that nothing this process allocated
before (other models, caches, the app's sessions) hides or adds to it. The model travels by name and recipe: the
child loads the same original (a bundled model, or an upload's path, checked by content hash) and replays the recipe
without healing (healing changes weights, not shapes). Bounded in time, and a cancelled job ends the child."""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import CompressError
from ..models.bundled import BUNDLED
from ..serve.cancel import checkpoint

ROOT = Path(__file__).resolve().parents[2]
NAMES = frozenset(BUNDLED)  # what a fresh process's BUNDLED holds (not a model registered at run time, e.g. a test's)
LIMIT_S = 300.0  # a child over this is ended, and the metric says so in one line


def reachable(bundle) -> bool:
    """Can a fresh process load this model's original by name (bundled, or an upload still on disk)?"""
    return bundle.name in NAMES or (isinstance(bundle.name, str) and os.path.exists(bundle.name))


def spec(bundle, fn, workload: dict) -> dict:
    recipe = None
    if bundle.recipe is not None:
        r = bundle.recipe.to_dict()
        recipe = json.dumps({**r, "heal_steps": 0, "heal_corpus": ""})
    import torch
    return {"model": bundle.name, "content_hash": bundle.content_hash, "recipe": recipe, "workload": workload,
            "fn": f"{fn.__module__}:{fn.__qualname__}", "threads": torch.get_num_threads()}


def run(bundle, fn, workload: dict, limit_s: float = LIMIT_S, env: dict | None = None):
    """fn(bundle, ids, mask) called in a fresh process on this model (as the child rebuilds it) and the workload's
    first batch; its JSON-able result. Polls for a cancel (checkpoint) while it waits."""
    if not reachable(bundle):
        raise CompressError(f"{bundle.name} cannot be loaded by a fresh process (not bundled, not on disk)")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.json"
        p = subprocess.Popen([sys.executable, "-m", "compress.table.child", json.dumps(spec(bundle, fn, workload)),
                              str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        deadline = time.monotonic() + limit_s
        try:
            while p.poll() is None:
                checkpoint()  # a cancelled job: Cancelled, and the child is ended below
                if time.monotonic() > deadline:
                    raise CompressError(f"measuring {fn.__name__} in a fresh process took over {limit_s:.0f} s")
                time.sleep(0.05)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        err = p.stderr.read().decode(errors="replace").strip().splitlines()
        p.stderr.close()
        if p.returncode != 0 or not out.exists():
            raise CompressError(f"measuring {fn.__name__} in a fresh process failed: "
                                f"{(err or ['exit ' + str(p.returncode)])[-1][:300]}")
        return json.loads(out.read_text())["value"]
