"""A sweep's search space, from the technique table: which fields vary over which values (`--vary rank=0.1:1:0.1`,
`--vary heads=2,4`), which are fixed (`--fixed "rank_mode=ratio,heads=4,4,2"`), the objectives and constraints, in
one vocabulary of metric names with a direction each (METRICS). Every value is checked by the table's own Field, and
every mistake is one CompressError line naming it. No optuna here: sweep.py runs the study."""
import itertools
import json
import math
import re
from dataclasses import dataclass, field

from ..errors import CompressError
from ..measure import metrics as table
from ..table.recipe import Recipe
from ..table.steps import FIELDS, refusal
from ..table.reasons import field_reason

# name: (direction, what it is): a view of the metrics table (compress/measure/metrics.py), which says which model
# and workload has which metric.
METRICS = {n: (m.direction, m.about) for n, m in table.METRICS.items()}
QUALITY = {n for n, m in table.METRICS.items() if m.kind == "quality"}
MAX_VALUES = 1000  # values the varied fields may list, together (a sweep of more is not one a page can show; Optuna
#  stores every value of every varied field with each trial)
MAX_CHECKS = 5000  # recipes check() may build to find a refused value a partner (each ~0.2 ms: the page waits)
MAX_HEAL_STEPS = 5000  # healing steps per trial
UNFIXED = {"heal_steps": "healing steps per trial are the sweep's own (--heal-steps, at most 5000)",
           "heal_corpus": "a sweep heals on the default healing text"}
TIMED = {n for n, m in table.METRICS.items() if m.timed}
_OPS = {"<=": lambda v, b: v - b, ">=": lambda v, b: b - v}  # <= 0: feasible (Optuna's constraints convention)


def metrics_for(bundle, workload: str = "ids") -> list[str]:
    """The metric names this model has on this workload, in the table's order (a rate only on real sentences)."""
    return table.names_for(bundle, workload)


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def values(name: str, spec: str) -> tuple:
    """The values `--vary name=spec` lists: a:b:s inclusive (rounded to the decimals written), or a,b,c."""
    f = _field(name)
    if f.kind in ("text",) or not f.label:
        raise CompressError(f"{name} cannot be varied (it is set by the app, not a control)")
    spec = spec.strip()
    if ":" in spec:
        if f.kind not in ("count", "counts", "int", "fraction", "float"):
            raise CompressError(f"{name} takes a list of values (a,b,c), not a range: it is a {f.kind}")
        try:
            a, b, s = (float(x) for x in spec.split(":"))
        except ValueError:
            raise CompressError(f"--vary {name}={spec}: a range is a:b:s, three numbers") from None
        if not s > 0 or b < a or not all(map(math.isfinite, (a, b, s))):
            raise CompressError(f"--vary {name}={spec}: needs a <= b and a step s > 0")
        steps = (b - a) / s  # inf for 0:1e308:1e-308: counted as a float first (int() of it raised OverflowError)
        if not steps < MAX_VALUES:
            raise CompressError(f"--vary {name}={spec} lists more than {MAX_VALUES} values")
        n = int(math.floor(steps + 1e-9)) + 1
        dec = max(map(_decimals, spec.split(":")))
        vals = [round(a + i * s, dec) for i in range(n)]
        texts = [f"{v:.{dec}f}" if dec else str(int(round(v))) for v in vals]
    else:
        texts = [t for t in spec.split(",") if t.strip()]
        if len(texts) > MAX_VALUES:
            raise CompressError(f"--vary {name}= lists {len(texts)} values; at most {MAX_VALUES}")
    out = []
    for t in texts:
        try:
            v = f.parse(t)
        except CompressError as e:
            raise CompressError(f"--vary {name}: {e} (outside the technique table's range)") from None
        if isinstance(v, tuple):
            raise CompressError(f"--vary {name}: per-layer head lists only through --fixed")
        if v not in out:
            out.append(v)
    if not out:
        raise CompressError(f"--vary {name}= lists no values")
    return tuple(out)


def variable() -> list[str]:
    """The fields a sweep may vary: every control of the table but healing's own (healing is --heal-steps)."""
    return [k for k, f in FIELDS.items() if f.label and f.kind != "text" and not k.startswith("heal_")]


def default_spec(name: str, bundle) -> str:
    """A field's whole range as `--vary` text, for this model: counts 1..its maximum, fractions in tenths,
    choices all of them."""
    f = FIELDS[name]
    if f.kind in ("count", "counts"):
        return f"1:{bundle.info[f.most]}:1"
    if f.kind == "fraction":
        return f"{max(0.1, round(f.lo, 1)):.1f}:1.0:0.1"
    if f.kind == "bool":
        return "false,true"
    if f.choices:
        return ",".join(map(str, f.choices))
    return f.text(f.default)


# The sweep a newcomer starts from on an encoder: quantization x the word table's bits, a 3 x 3 grid of controls the
# Compress page has, no healing, seconds a trial. BENCHMARKS.md (MiniLM, 2-core Xeon, unhealed): int8 3.87x smaller at
# fidelity 0.978, a 2-bit table + int8 6.14x at 0.935, a 2-bit table + int4 8.65x at 0.892; rank alone (the former
# default) gave 1.48x smaller at fidelity 0.28 (ratio 0.2) and 1.13x at 0.71 (0.5). fp16/bf16 are left out: slower
# than fp32 on most CPUs. Decoders keep rank (tinygpt: ratio 0.5 kept bits/char 1.713 against 1.702, 1.3x smaller).
FIRST = {"quant": "none,int8,int4", "emb_bits": "0,4,2"}
FIRST_WHY = ("The first sweep on an encoder is quantization x the word table's bits (9 recipes, no healing): on "
             "MiniLM (BENCHMARKS.md, 2-core Xeon) int8 gave 3.87x smaller at fidelity 0.978, a 2-bit table + int8 "
             "6.14x at 0.935, + int4 8.65x at 0.892, while rank alone gave 1.48x smaller at fidelity 0.28 (ratio 0.2).")


def first_sweep(bundle) -> dict:
    """{field: values} of the default sweep for this model: FIRST on an encoder that takes both, else rank."""
    if bundle.task == "embedding" and all(field_reason(k, bundle, Recipe().to_dict()) is None for k in FIRST):
        return dict(FIRST)
    return {"rank": default_spec("rank", bundle)}


def fixed(text: str) -> dict:
    """`--fixed "k=v,k=v"` (a per-layer list: heads=4,4,2) as checked field values."""
    out, key = {}, None
    parts = []
    for tok in [t.strip() for t in (text or "").split(",") if t.strip()]:
        if "=" in tok:
            key, v = (x.strip() for x in tok.split("=", 1))
            parts.append([key, v])
        elif parts:
            parts[-1][1] += "," + tok
        else:
            raise CompressError(f"--fixed: {tok!r} is not field=value")
    for key, v in parts:
        out[key] = _field(key).parse(v)
    return out


def _field(name):
    if name not in FIELDS:
        raise CompressError(f"unknown field {name!r}; the fields are: {', '.join(k for k, f in FIELDS.items() if f.label)}")
    return FIELDS[name]


def constraint(text: str) -> tuple:
    """`size_mb<=9` as (metric, op, bound)."""
    m = re.fullmatch(r"\s*([a-z_0-9]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*", text or "")
    if not m:
        raise CompressError(f"a constraint is metric<=number or metric>=number, e.g. size_mb<=9; got {text[:60]!r}")
    if m[1] not in METRICS:
        raise CompressError(f"unknown metric {m[1]!r} in constraint; metrics: {', '.join(METRICS)}")
    try:
        return m[1], m[2], float(m[3])
    except ValueError:
        raise CompressError(f"constraint {text!r}: {m[3]!r} is not a number") from None


@dataclass(frozen=True)
class Space:
    model: str
    vary: dict                  # field -> tuple of values
    objectives: tuple           # metric names, in the order of the trial's values
    fixed: dict = field(default_factory=dict)
    constraints: tuple = ()     # (metric, op, bound)
    heal_steps: int = 0
    workload: str = "ids"
    batch: int = 8
    seq: int = 128

    @property
    def directions(self) -> list[str]:
        return [METRICS[m][0] for m in self.objectives]

    @property
    def timed(self) -> bool:
        return bool(TIMED & ({*self.objectives} | {c[0] for c in self.constraints}))

    @property
    def own(self) -> tuple:
        """The objectives and constraints measured on their own (the metrics table's Metric.measure)."""
        return tuple(m for m in (*self.objectives, *(c[0] for c in self.constraints))
                     if table.METRICS[m].measure is not None)

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.vary.values())

    def recipe(self, params: dict) -> Recipe:
        over = {**self.fixed, **params}
        if self.heal_steps:
            over["heal_steps"] = self.heal_steps
        return Recipe.from_dict({**Recipe().to_dict(), **over})

    def feasibility(self, metrics: dict) -> list[float]:
        return [_OPS[op](metrics[m], b) for m, op, b in self.constraints]

    def to_json(self) -> str:
        """What a study was created for: a worker with another space (or model) is refused."""
        return json.dumps({"model": self.model, "vary": {k: list(v) for k, v in self.vary.items()},
                           "objectives": list(self.objectives), "fixed": {k: FIELDS[k].text(v) for k, v in self.fixed.items()},
                           "constraints": [list(c) for c in self.constraints], "heal_steps": self.heal_steps,
                           "workload": [self.workload, self.batch, self.seq]}, sort_keys=True)

    def cli(self, name: str, trials: int | None = None, grid: bool = False) -> str:
        """The command that runs this study again, each part quoted for a shell (a study's name has spaces)."""
        import shlex
        d = json.loads(self.to_json())
        parts = ["python", "-m", "compress", "sweep", "--model", self.model, "--objectives", ",".join(self.objectives)]
        parts += [x for k, v in d["vary"].items() for x in ("--vary", f"{k}={','.join(map(str, v))}")]
        parts += ["--fixed", ",".join(f"{k}={v}" for k, v in d["fixed"].items())] if d["fixed"] else []
        parts += [x for m, op, b in self.constraints for x in ("--constraint", f"{m}{op}{b:g}")]
        parts += ["--heal-steps", str(self.heal_steps)] if self.heal_steps else []
        parts += ["--workload", self.workload] if self.workload != "ids" else []
        parts += ["--batch", str(self.batch), "--seq", str(self.seq)] if (self.batch, self.seq) != (8, 128) else []
        parts += (["--grid"] if grid else ["--trials", str(trials)] if trials else []) + ["--study", name]
        return " ".join(shlex.quote(p) for p in parts)


def from_json(text: str) -> Space:
    """The Space a study was made for (Space.to_json), to resume it."""
    d = json.loads(text)
    workload, batch, seq = d["workload"]
    return Space(d["model"], {k: tuple(v) for k, v in d["vary"].items()}, tuple(d["objectives"]),
                 {k: FIELDS[k].parse(v) for k, v in d["fixed"].items()}, tuple(tuple(c) for c in d["constraints"]),
                 d["heal_steps"], workload, batch, seq)


def check(space: Space, bundle) -> Space:
    """Every objective and constraint a metric this model has; every varied field does something; the fixed recipe
    possible. Raises one CompressError line."""
    have = metrics_for(bundle, space.workload)
    if not space.objectives:
        raise CompressError("give at least one objective, e.g. --objectives fidelity,size_mb")
    for m in [*space.objectives, *(c[0] for c in space.constraints)]:
        if m not in METRICS:
            raise CompressError(f"unknown metric {m!r}; metrics: {', '.join(METRICS)}")
        if m not in have:
            raise CompressError(f"{bundle.name} has no {m} here ({METRICS[m][1]}); it has: {', '.join(have)}")
    if len(set(space.objectives)) != len(space.objectives):
        raise CompressError("an objective is listed twice")
    if not space.vary:
        raise CompressError("vary at least one field, e.g. --vary rank=0.1:1.0:0.1")
    if bad := sorted(space.vary.keys() - set(variable())):
        raise CompressError(f"{bad[0]} cannot be varied: the fields a sweep varies are {', '.join(variable())}")
    if (n := sum(map(len, space.vary.values()))) > MAX_VALUES:
        raise CompressError(f"the varied fields list {n:,} values together; at most {MAX_VALUES:,}")
    if not 0 <= space.heal_steps <= MAX_HEAL_STEPS:
        raise CompressError(f"healing steps per trial: 0 to {MAX_HEAL_STEPS:,}, got {space.heal_steps:,}")
    if bad := UNFIXED.keys() & space.fixed.keys():
        raise CompressError(f"{min(bad)} is not fixed: {UNFIXED[min(bad)]}")
    base = space.recipe({})
    if why := refusal(bundle, base):
        raise CompressError(f"the fixed recipe is impossible: {why}")
    for name in space.vary:
        f = FIELDS[name]
        if name in space.fixed:
            raise CompressError(f"{name} is both varied and fixed")
        if f.off is None or not (why := f.off(base)):
            continue
        turns_on = any(not f.off(space.recipe({o: v})) for o, vs in space.vary.items() if o != name for v in vs)
        if not turns_on:
            raise CompressError(f"varying {name} does nothing here ({why}): fix or vary the field that turns it on, "
                                f"e.g. --fixed rank_mode=ratio")
    budget = MAX_CHECKS  # recipes built below for all refused values together
    for name, vs in space.vary.items():  # each value possible with some values of the other varied fields
        others = {k: v for k, v in space.vary.items() if k != name}
        for v in vs:
            if not (why := refusal(bundle, space.recipe({name: v}))):
                continue
            for c in itertools.islice(itertools.product(*others.values()), 2000):
                if (budget := budget - 1) < 0:
                    raise CompressError(f"too many refused values to check (over {MAX_CHECKS:,} recipes): vary fewer "
                                        "values, or fix the field that turns them on")
                if _possible(bundle, space, {**dict(zip(others, c)), name: v}):
                    break
            else:
                raise CompressError(f"--vary {name}={FIELDS[name].text(v)}: {why}")
    return space


def _possible(bundle, space: "Space", params: dict) -> bool:
    """Whether these values together make a recipe the model can take (a pair the Recipe itself refuses is not)."""
    try:
        return refusal(bundle, space.recipe(params)) is None
    except CompressError:
        return False
