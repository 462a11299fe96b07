"""Per-layer sensitivity to factorization, and a rank allocation for a parameter budget that uses it.

layer_sensitivity: the quality drop when ONLY one layer is factorized (at rank round(cut * min(m, n))),
measured on a small calibration sample of the healing text (never the evaluation set):
  encoders: 1 - mean cosine to the original's sentence embeddings; decoders: next-token KL(original || it).
allocate: ranks in spectrum.select_ranks' format. A small weight error changes the output to first order,
so cosine loss and KL grow with its square, i.e. with the discarded spectral energy. So each layer's drop
at rank r is estimated as sens * (1 - energy(r)) / (1 - energy(r_cut)) and a greedy (as select_ranks'
budget mode, but weighted) spends the parameters where they cut the estimated total drop the most.
"""
import copy
import heapq

import torch
import torch.nn.functional as F

from .adapters import forward, set_module
from .evaluate import batches
from .factorize import LowRankLinear
from .recipe import CompressError


def cut_rank(s, cut: float) -> int:
    return max(1, round(cut * min(s.m, s.n)))


def calibration_texts(bundle, n: int = 64) -> list[str]:
    """n texts spread evenly over the training part of the healing text (heal.split_dev's train side)."""
    from .heal import heal_texts, split_dev
    train = split_dev(heal_texts(bundle))[0]
    return [train[i * len(train) // n] for i in range(min(n, len(train)))]


@torch.no_grad()
def _outputs(model, bundle, data):
    """Per batch: normalized pooled embeddings (encoders) or next-token log-probs (decoders)."""
    out = []
    for ids, mask in data:
        h = forward(model, bundle.adapter, ids, mask).float()  # (B, T, C) or (B, T, V)
        if bundle.task == "embedding":
            m = mask.unsqueeze(-1).float()
            out.append(F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1))  # (B, C)
        else:
            out.append(h.log_softmax(-1))
    return out


def _drop(bundle, data, ref, new) -> float:
    if bundle.task == "embedding":
        return 1.0 - float(torch.cat([(a * b).sum(-1) for a, b in zip(ref, new)]).mean())
    kl, n = 0.0, 0
    for (_, mask), lp_t, lp in zip(data, ref, new):
        real = mask.bool()
        kl += float((lp_t.exp() * (lp_t - lp)).sum(-1)[real].sum())
        n += int(real.sum())
    return kl / max(1, n)


def layer_sensitivity(bundle, spec, cut: float = 0.1, texts: list[str] | None = None,
                      progress=None) -> dict[str, float]:
    """{layer: quality drop when only that layer is factorized at rank round(cut * min(m, n))}.
    bundle: an original (float) model; spec: its spectra. progress(dict(layer, done, total)) per layer."""
    if bundle.tokenizer is None and texts is None:
        texts = [""] * 64  # no tokenizer: evaluate.batches falls back to seeded random ids
    data = batches(bundle, texts if texts is not None else calibration_texts(bundle), 32)
    model = copy.deepcopy(bundle.model).eval()  # the original is shared: swap layers in a copy only
    ref = _outputs(model, bundle, data)
    sens = {}
    for i, (name, s) in enumerate(spec.items()):
        dense = model.get_submodule(name)
        set_module(model, name, LowRankLinear.from_linear(dense, cut_rank(s, cut), (s.u, s.s, s.vh)))
        sens[name] = _drop(bundle, data, ref, _outputs(model, bundle, data))
        set_module(model, name, dense)  # restore: the next layer is measured alone
        if progress is not None:
            progress({"layer": name, "done": i + 1, "total": len(spec)})
    return sens


def allocate(spec, sens: dict[str, float], budget: float, cut: float = 0.1) -> dict[str, int | None]:
    """Ranks (None = dense) whose factorized params total at most budget x the dense params of the
    factorizable layers, minimizing the summed estimated drop (module docstring). cut: the one sens used."""
    missing = set(spec) - set(sens)
    if missing:
        raise CompressError(f"no sensitivity for {len(missing)} layer(s), e.g. {sorted(missing)[0]}")
    total = sum(s.m * s.n for s in spec.values())
    limit = budget * total
    dense = {k for k, s in spec.items() if s.max_useful_rank < 1}  # too thin to factorize at all
    ranks = {k: 1 for k in spec}
    spent = sum(s.m * s.n if k in dense else s.m + s.n for k, s in spec.items())
    if spent > limit:
        raise CompressError(f"budget {budget:g} is too small: rank 1 everywhere already needs "
                            f"{spent / total:.4f} of the dense params")
    # weight = drop per unit of discarded energy; a floor keeps a layer measured as harmless (noise, or a
    # drop below float precision) from being cut to rank 1 on one number
    top = max(max(sens.values()), 1e-12)
    weight = {k: max(float(sens[k]), 1e-3 * top) / max(1.0 - s.energy[cut_rank(s, cut) - 1], 1e-12)
              for k, s in spec.items()}

    def item(k):  # (-estimated drop removed per param, layer, cost) of layer k's next step
        s, r = spec[k], ranks[k]
        if r < s.max_useful_rank:
            return (-weight[k] * (s.energy[r] - s.energy[r - 1]) / (s.m + s.n), k, s.m + s.n)
        cost = s.m * s.n - r * (s.m + s.n)  # last step: back to the whole dense layer
        return (-weight[k] * (1.0 - s.energy[r - 1]) / max(1, cost), k, cost)

    heap = [item(k) for k in spec if k not in dense]
    heapq.heapify(heap)
    while heap:
        _, k, cost = heapq.heappop(heap)
        if spent + cost > limit:
            continue  # this layer's next step does not fit; cheaper steps of others may
        spent += cost
        if ranks[k] >= spec[k].max_useful_rank:
            dense.add(k)
        else:
            ranks[k] += 1
            heapq.heappush(heap, item(k))
    return {k: (None if k in dense else r) for k, r in ranks.items()}
