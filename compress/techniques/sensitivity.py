"""Per-layer sensitivity to factorization, and a rank allocation for a parameter budget that uses it.

layer_sensitivity: the quality drop when ONLY one layer is factorized (at rank round(cut * min(m, n))),
measured on a small calibration sample of the healing text (never the evaluation set):
  encoders: 1 - mean cosine to the original's sentence embeddings; decoders: next-token KL(original || it).
allocate: ranks in spectrum.select_ranks' format. A small weight error changes the output to first order,
so cosine loss and KL grow with its square, i.e. with the discarded spectral energy. So each layer's drop
at rank r is estimated as sens * (1 - energy(r)) / (1 - energy(r_cut)) and a greedy (as select_ranks'
budget mode, but weighted) spends the parameters where they cut the estimated total drop the most.
Checked on MiniLM (one layer cut at 0.05..0.5 of min(m, n)): the estimate is within ~2x of the measured drop.

Measured (unhealed, held-out set), spectral select_ranks(spec, "budget", x) vs allocate at the same x:
MiniLM fidelity      x=0.3: 0.324 -> 0.516   x=0.5: 0.460 -> 0.625   x=0.7: 0.649 -> 0.760
TinyGPT next-tok KL  x=0.3: 0.417 -> 0.347   x=0.5: 0.068 -> 0.042   x=0.7: 0.011 -> 0.007
(cut 0.25 instead of 0.1 was +0.03 / -0.01 on MiniLM but worse on TinyGPT, so 0.1 stays.) The pass is 36
(MiniLM) or 24 (TinyGPT) forwards of 64 texts: ~5 s on 2 idle cores.
"""
import copy
import dataclasses
import time

import torch
import torch.nn.functional as F

from ..models.adapters import forward, set_module
from ..models.bundle import with_positions
from ..measure.evaluate import batches, mean_pool, token_kl
from .factorize import LowRankLinear, apply_factorize
from ..errors import CompressError
from ..serve import membound
from ..serve.cancel import turn
from .spectrum import budget_ranks, compute_spectra, layer_report, select_ranks, spectra


def cut_rank(s, cut: float) -> int:
    return max(1, round(cut * min(s.m, s.n)))


def calibration_texts(bundle, n: int = 64) -> list[str]:
    """n texts spread evenly over the training part of the healing text (heal.split_dev's train side)."""
    from .heal import heal_texts, split_dev
    train = split_dev(heal_texts(bundle))[0]
    return [train[i * len(train) // n] for i in range(min(n, len(train)))]


def _output(model, bundle, ids, mask):
    """Normalized pooled embeddings (B, C) for encoders, next-token log-probs (B, T, V) for decoders."""
    h = forward(model, bundle.adapter, ids, mask).float()  # (B, T, C) or (B, T, V)
    if bundle.task != "embedding":
        return h.log_softmax(-1)
    return F.normalize(mean_pool(h, mask), dim=-1)


@torch.no_grad()
def _drop(model, bundle, data, ref) -> float:
    """1 - mean cosine (encoders) or KL(original || model) per real token (decoders); the model's outputs
    are made batch by batch and dropped, so only the reference is held (a GPT-2 vocab makes them big)."""
    total, n = 0.0, 0
    for (ids, mask), r in zip(data, ref):
        out = _output(model, bundle, ids, mask)
        if bundle.task == "embedding":
            total, n = total + float((1 - (out * r).sum(-1)).sum()), n + len(ids)
        else:
            real = mask.bool()
            total, n = total + float(token_kl(r, out)[real].sum()), n + int(real.sum())
    return max(0.0, total / max(1, n))  # float noise can make an unchanged output read as -1e-8


def layer_sensitivity(bundle, spec, cut: float = 0.1, texts: list[str] | None = None,
                      progress=None, until: float | None = None) -> dict[str, float]:
    """{layer: quality drop when only that layer is factorized at rank round(cut * min(m, n))}.
    bundle: an original (float) model; spec: its spectra. progress(dict(layer, done, total)) per layer. until: a
    time.perf_counter() past which it stops with one line (a healing's time cap, which it spends)."""
    if bundle.tokenizer is None and texts is None:
        texts = [""] * 64  # no tokenizer: evaluate.batches falls back to seeded random ids
    data = batches(bundle, texts if texts is not None else calibration_texts(bundle), 32)
    membound.check("sensitivity", bundle.model, bundle.name)  # before the copy
    model = copy.deepcopy(bundle.model).eval()  # the original is shared: swap layers in a copy only
    with torch.no_grad():
        ref = [_output(model, bundle, ids, mask) for ids, mask in data]
    sens = {}
    for i, (name, s) in enumerate(spec.items()):
        turn()  # a long job: waiting jobs go first (one layer's measurement apart)
        if until is not None and time.perf_counter() > until:
            raise CompressError(f"the healing's time cap ran out while sensitivity was measured ({i} of {len(spec)} "
                                "layers): give it more minutes, or allocate the ranks by spectra")
        dense = model.get_submodule(name)
        set_module(model, name, LowRankLinear.from_linear(dense, cut_rank(s, cut), (s.u, s.s, s.vh)))
        sens[name] = _drop(model, bundle, data, ref)
        set_module(model, name, dense)  # restore: the next layer is measured alone
        if progress is not None:
            progress({"layer": name, "done": i + 1, "total": len(spec)})
    return sens


def cached(bundle, spec=None, progress=None, until: float | None = None) -> dict[str, float]:
    """layer_sensitivity at the default cut, measured once per bundle (kept in bundle.cache)."""
    if "sensitivity" not in bundle.cache:
        bundle.cache["sensitivity"] = layer_sensitivity(bundle, spec or spectra(bundle), progress=progress, until=until)
    return bundle.cache["sensitivity"]


def allocate(spec, sens: dict[str, float], budget: float, cut: float = 0.1) -> dict[str, int | None]:
    """Ranks (None = dense) whose factorized params total at most budget x the dense params of the
    factorizable layers, minimizing the summed estimated drop (module docstring). cut: the one sens used."""
    missing = set(spec) - set(sens)
    if missing:
        raise CompressError(f"no sensitivity for {len(missing)} layer(s), e.g. {sorted(missing)[0]}")
    # weight = drop per unit of discarded energy; a floor keeps a layer measured as harmless (noise, or a
    # drop below float precision) from being cut to rank 1 on one number
    top = max(max(sens.values()), 1e-12)
    weight = {k: max(float(sens[k]), 1e-3 * top) / max(1.0 - s.energy[cut_rank(s, cut) - 1], 1e-12)
              for k, s in spec.items()}
    return budget_ranks(spec, budget, weight)


def factorize_step(ctx, r, structural: bool):
    """The table's low-rank step: ranks by spectra (or, in budget mode, by measured sensitivity), then factorized;
    lives here, above factorize and spectrum, as it uses all three."""
    b = ctx.base
    if not structural:
        spec, measured = spectra(b), b
    else:  # shapes or weights changed: the spectra (and sensitivity) of what was built so far
        spec = compute_spectra(ctx.model, b.adapter)
        measured = with_positions(dataclasses.replace(b, model=ctx.model, cache={}), r.positions)  # (positions.py)
    if r.rank_mode == "budget" and r.allocate == "sensitivity":
        until = None if ctx.minutes is None else ctx.started + 60 * ctx.minutes  # a healing's cap counts it
        ranks = allocate(spec, cached(measured, spec, ctx.progress, until), r.rank)
    else:
        ranks = select_ranks(spec, r.rank_mode, r.rank)
    apply_factorize(ctx.model, ranks, spec)
    ctx.applied["factorized"] = [sum(k is not None for k in ranks.values()), len(ranks)]  # (layers, of): Recipe.ran
    ctx.layers = layer_report(spec, ranks)
