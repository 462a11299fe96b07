"""Cost over sequence length (`python -m compress bench --seqlen 128,256,...`): latency and peak memory of one
forward call at batch 1 and T tokens, for the original under eager and SDPA attention and for each efficient-attention
variant, and the crossover T from which a variant is faster than SDPA.

Positions are extended for timing only: the position table is tiled to T rows (and the position-id buffers and
Linformer's projections follow), so quality means nothing beyond the trained length. Memory: the rise of the peak
RSS during one call (metrics.peak_rss_rise_mb), in this process; run it with MALLOC_MMAP_THRESHOLD_=131072 so freed
large buffers leave the process instead of hiding the next call's rise.
"""
import copy
import math
import types

import torch
import torch.nn as nn

from ..models.adapters import forward, set_module
from ..table import pipeline
from ..table.recipe import Recipe
from ..table.steps import STEPS
from ..techniques import lowrank_attn
from ..techniques.attention import attention_modules, mb_per_token
from ..measure import core
from ..measure.metrics import peak_rss_rise_mb
from ..outputs.plots import busiest
from ..errors import CompressError
from ..serve import membound
from ..serve.cancel import checkpoint

LENGTHS = (128, 256, 512, 1024, 2048, 4096)
VARIANTS = {"local W=64": Recipe(attention="local", window=64), "strided s=8": Recipe(attention="strided", stride=8),
            "local+strided": Recipe(attention="local+strided", window=64, stride=8),
            "lowrank k=64": Recipe(attention="lowrank", attn_rank=64),
            "kernel m=64": Recipe(attention="kernel", features=64), "linear": Recipe(attention="linear"),
            "lsh n=8 c=64": Recipe(attention="lsh", buckets=8, window=64)}


def extend_positions(model: nn.Module, adapter, T: int) -> nn.Module:
    """A copy that takes T tokens: the learned position table tiled to T rows, position-id buffers counted to T,
    Linformer's projections pooled over T positions. For timing: nothing past the trained length was learned."""
    model = copy.deepcopy(model)
    if not adapter.position_embeddings:  # rotary positions (Llama, ModernBERT): computed for any T
        return _extend_projections(model, adapter, T)
    table = model.get_submodule(adapter.position_embeddings)
    n = table.weight.shape[0]
    if T <= n:
        return model
    big = nn.Embedding(T, table.weight.shape[1]).to(table.weight.dtype)
    big.weight.data.copy_(table.weight.data.repeat(math.ceil(T / n), 1)[:T])
    set_module(model, adapter.position_embeddings, big)
    for name, buf in list(model.named_buffers()):
        if name.endswith(("position_ids", "token_type_ids")) and buf.shape[-1] == n:
            holder, _, leaf = name.rpartition(".")
            new = torch.arange(T)[None] if name.endswith("position_ids") else torch.zeros(1, T, dtype=buf.dtype)
            setattr(model.get_submodule(holder) if holder else model, leaf, new)
    return _extend_projections(model, adapter, T)


def _extend_projections(model: nn.Module, adapter, T: int) -> nn.Module:
    for m in attention_modules(model, adapter):
        if getattr(m, "attn_E", None) is not None and m.attn_E.shape[1] < T:
            lowrank_attn.add_projections(m, m.attn_E.shape[0], T)
    return model


def models(bundle, variants: dict | None = None) -> dict:
    """{name: model}: the original under eager and SDPA attention, then each variant ({name: Recipe}, default
    VARIANTS) it takes."""
    out = {}
    for impl in bundle.adapter.attn_runtimes:  # (TinyGPT calls SDPA itself: it has one)
        out[impl] = copy.deepcopy(bundle.model)
        bundle.adapter.set_attn_runtime(out[impl], impl)
    for name, r in (VARIANTS if variants is None else variants).items():
        if pipeline.refusal(bundle, r) is None:
            out[name] = pipeline.compress(bundle, r).model
    return out


def activations_mb(bundle, T: int) -> float:
    """One forward's peak at batch 1 and T tokens, bounded from above as eager attention's: a layer's scores, their
    softmax and its dropout's copy (heads x T x T float32 each), and T rows of hidden and FFN activations."""
    heads, hidden = bundle.info.get("heads", 12), bundle.info.get("hidden", 768)
    return (3 * heads * T * T + 16 * T * hidden) * 4 / 1e6


def _peak_mb(m, adapter, ids, mask, device: str) -> float:
    """One call's memory: the rise of the peak RSS (CPU), or of the peak CUDA allocation over what the model holds."""
    if device == "cpu":
        return peak_rss_rise_mb(types.SimpleNamespace(model=m, adapter=adapter), ids, mask)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    held = torch.cuda.memory_allocated()
    with torch.no_grad():
        forward(m, adapter, ids, mask)
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - held) / 1e6, 1)


def curve(bundle, lengths=LENGTHS, runs=7, log=print, variants: dict | None = None, device: str = "cpu") -> list[dict]:
    """A row per (model, T): median ms of one call at batch 1 and the memory of one call (the peak-RSS rise, MB; on
    a GPU the peak CUDA allocation's rise). Each length is checked against the memory bound first (each model, its
    copy with positions extended, one forward's activations): the first length over it ends the curve there (said by
    log; refused if it is the first). Cancel: between lengths and between timed rounds. device="cuda": timed with
    CUDA events on copies moved to the GPU (where one is)."""
    if device not in ("cpu", "cuda"):
        raise CompressError(f"device must be cpu or cuda, got {str(device)[:40]!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise CompressError("no CUDA GPU on this machine: time the curve on the cpu")
    todo = {n: r for n, r in (VARIANTS if variants is None else variants).items() if pipeline.refusal(bundle, r) is None}
    params = membound.params_of(bundle.model) * (len(bundle.adapter.attn_runtimes) + len(todo))

    def need(T):  # full attention's forward, or a variant's at T when it holds more (a local window of 3T keys)
        return activations_mb(bundle, T) + max((mb_per_token(bundle.info, r, T) * T for r in todo.values()), default=0)
    membound.check("seqlen", None, f"{bundle.name} at T={lengths[0]}", params, need(lengths[0]))
    rows, base = [], models(bundle, todo)  # (checked before a copy is made)
    for T in lengths:
        checkpoint()
        try:
            membound.check("seqlen", None, f"{bundle.name} at T={T}", params, need(T))
        except CompressError as e:
            if not rows:
                raise
            log(f"stopped before T={T}: {e}")
            break
        ms = {k: extend_positions(m, bundle.adapter, T).to(device) for k, m in base.items()}
        ids = torch.randint(1000 % bundle.vocab_size, bundle.vocab_size, (1, T), generator=torch.Generator().manual_seed(T))
        ids = ids.to(device)
        mask = torch.ones_like(ids)
        lat = core.latency({k: (lambda m=m: forward(m, bundle.adapter, ids, mask)) for k, m in ms.items()}, runs=runs,
                           device=device)
        for k, m in ms.items():
            mb = _peak_mb(m, bundle.adapter, ids, mask, device)
            rows.append({"model": k, "T": T, "ms": round(lat[k]["p50"], 2), "peak_mb": mb,
                         "others_busy": lat[k]["others_busy"]})
            log(f"T={T} {k}: {lat[k]['p50']:.1f} ms, {mb} MB")
    return rows


def crossover(rows: list[dict], name: str, against: str = "sdpa") -> int | None:
    """The smallest T from which `name` is faster than `against` at every longer T measured, or None."""
    ts = sorted({r["T"] for r in rows})
    ms = {(r["model"], r["T"]): r["ms"] for r in rows}
    faster = [ms[(name, t)] < ms[(against, t)] for t in ts]
    for i, t in enumerate(ts):
        if all(faster[i:]):
            return t
    return None


def slope(rows: list[dict], name: str) -> float:
    """The fitted exponent b of ms ~ T^b (least squares on log-log): ~1 linear, ~2 quadratic."""
    pts = [(math.log(r["T"]), math.log(r["ms"])) for r in rows if r["model"] == name]
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def markdown(model: str, rows: list[dict], device: str = "cpu") -> str:
    """Latency (ms) and peak memory (MB) per model and T, with the crossover against SDPA and the slope."""
    ts = sorted({r["T"] for r in rows})
    names = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["model"], r["T"]): r for r in rows}
    head = "| " + " | ".join(["attention"] + [f"T={t} ms / MB" for t in ts] + ["slope", "faster than SDPA from"]) + " |"
    where = core.machine_line() if device == "cpu" else f"GPU {core.gpu_info()['gpu']} (peak CUDA allocation)"
    out = [f"{model}, batch 1, one forward call, {where}", "", head,
           "|" + "---|" * (len(ts) + 3)]
    for n in names:
        cx = "" if n in ("eager", "sdpa") else (f"T={c}" if (c := crossover(rows, n)) else f"none up to {ts[-1]}")
        out.append("| " + " | ".join([n] + [f"{cell[(n, t)]['ms']:g} / {cell[(n, t)]['peak_mb']:g}" for t in ts]
                                     + [f"{slope(rows, n):.2f}", cx]) + " |")
    if (busy := busiest(rows)) is not None:
        out.append(f"\nOther programs used up to {busy:.0%} of the CPUs while a length was timed"
                   + (f" (over {core.BUSY:.0%}: these timings are unreliable)." if busy > core.BUSY else "."))
    return "\n".join(out)


def attention_only(r) -> Recipe:
    """The recipe's attention variant alone, every field of the table's attention step (window, buckets...): the curve
    over T compares attention, not the rest of the recipe."""
    step = next(s for s in STEPS if s.name == "attention")
    return Recipe(**{f.name: getattr(r, f.name) for f in step.fields})


def of_recipe(bundle, r, longest: int = 2048, runs: int = 7, log=print) -> dict:
    """The Compress page's curve: the original (its attention runtimes) and the recipe's attention variant over
    LENGTHS up to `longest`. {"rows", "variant" (its name in rows), "against" (the original's fastest runtime name),
    "crossover" (T or None), "slopes" {name: exponent}, "notes" (what log said: a length the memory bound stopped)}."""
    v = attention_only(r)
    if v.attention == "none":
        raise CompressError("choose an efficient attention variant first: the curve compares it with the original")
    if why := pipeline.refusal(bundle, v):
        raise CompressError(why)
    lengths = [t for t in LENGTHS if t <= longest]
    if not lengths:
        raise CompressError(f"the longest T must be at least {LENGTHS[0]}, got {longest}")
    notes = []
    name = v.describe()
    rows = curve(bundle, lengths, runs, lambda m: (notes.append(m), log(m)), {name: v})
    against = "sdpa" if "sdpa" in bundle.adapter.attn_runtimes else bundle.adapter.attn_runtimes[0]
    several = len({row["T"] for row in rows}) > 1  # (a slope needs two lengths)
    slopes = {n: slope(rows, n) for n in dict.fromkeys(row["model"] for row in rows)} if several else {}
    return {"rows": rows, "variant": name, "against": against, "crossover": crossover(rows, name, against),
            "slopes": slopes, "notes": [n for n in notes if n.startswith("stopped")]}
