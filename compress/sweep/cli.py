"""The CLI's `sweep` command (python -m compress sweep ...): run a study as one of its workers, or stop it (--stop NAME:
every worker, the app's included, ends its running trial and stops). Apart from __main__.py, which it would push
over the house's 300 lines."""
import json
import sys

from ..errors import CompressError


def add_args(sp):
    sp.add_argument("--model", default="minilm")
    sp.add_argument("--vary", action="append", default=[], metavar="FIELD=a:b:s|v1,v2",
                    help="a field and its values: an inclusive range a:b:s or a list (repeat for more fields)")
    sp.add_argument("--fixed", default="", help='fields held fixed, "k=v,k=v" (per-layer heads: heads=4,4,2)')
    sp.add_argument("--objectives", default="", help="metrics, comma-separated, e.g. fidelity,size_mb")
    sp.add_argument("--constraint", action="append", default=[], help="e.g. size_mb<=9 (repeatable)")
    sp.add_argument("--trials", type=int, help="the study's total across all workers (NSGA-II / TPE)")
    sp.add_argument("--grid", action="store_true", help="every combination (the default for <= 2 varied fields)")
    sp.add_argument("--heal-steps", type=int, default=0, help="healing steps per trial (0: unhealed)")
    sp.add_argument("--study", help="the study's name (default: from the model and the space)")
    sp.add_argument("--storage", help="a SQLAlchemy URL (default: COMPRESS_STORAGE, else data/results.sqlite)")
    sp.add_argument("--minutes", type=float, help="stop starting trials after this long")
    sp.add_argument("--seed", type=int, help="the sampler's seed (one worker: a reproducible study)")
    sp.add_argument("--batch", type=int, default=8)
    sp.add_argument("--seq", type=int, default=128)
    sp.add_argument("--stop", metavar="NAME", help="stop the study NAME (its running trials end within a healing "
                                                   "step or a trial) and exit; nothing else is read")


def sweep_space(a):
    """The Space a sweep command line describes (checked against the table, not yet against the model)."""
    from .space import Space, constraint, fixed, values
    vary = {}
    for v in a.vary:
        name, _, spec = v.partition("=")
        if not spec:
            raise CompressError(f"--vary {v}: give FIELD=a:b:s or FIELD=v1,v2")
        vary[name.strip()] = values(name.strip(), spec)
    objectives = tuple(o.strip() for o in a.objectives.split(",") if o.strip())
    return Space(a.model, vary, objectives, fixed(a.fixed), tuple(constraint(c) for c in a.constraint),
                 a.heal_steps, a.workload, a.batch, a.seq)


def main(a) -> int:
    import hashlib
    from . import run as sweep
    from ..models.bundled import load_model
    if a.stop:
        sweep.request_stop(a.stop, a.storage)
        print(f"study {a.stop}: stop requested; its workers end their running trials", file=sys.stderr)
        return 0
    space = sweep_space(a)
    name = a.study or f"{a.model}-{'-'.join(space.vary)}-{hashlib.sha256(space.to_json().encode()).hexdigest()[:8]}"
    bundle = load_model(a.model)
    print(f"study {name}: {len(space.vary)} field(s) varied, objectives {', '.join(space.objectives)}",
          file=sys.stderr)
    out = sweep.run(bundle, space, name, a.storage, a.trials, a.grid or None, a.minutes, a.seed,
                    log=lambda line: print(json.dumps(line), flush=True))
    print(json.dumps({"summary": out}), flush=True)
    return 0
