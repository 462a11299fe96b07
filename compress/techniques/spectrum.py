"""Singular values of the factorizable layers, energy kept at a rank, and rank selection per mode."""
import heapq
from dataclasses import dataclass

import numpy as np
import torch

from ..serve.cache import LRU
from ..serve.cancel import turn
from ..measure.core import single_thread
from ..serve.membound import check
from ..errors import CompressError


@dataclass(frozen=True, eq=False)
class Spectrum:
    layer: str
    s: np.ndarray    # singular values, descending (float64)
    m: int           # out features
    n: int           # in features
    u: torch.Tensor  # (m, k) left singular vectors, k = min(m, n); kept so factorizing is a slice
    vh: torch.Tensor  # (k, n)

    @property
    def energy(self) -> np.ndarray:
        """energy[r-1] = fraction of sum(S^2) kept by the top r singular values."""
        e = np.cumsum(self.s ** 2)
        return e / e[-1] if e[-1] > 0 else np.ones_like(e)

    @property
    def max_useful_rank(self) -> int:
        """Largest r with r * (m + n) < m * n: above it the two factors are bigger than the layer."""
        return (self.m * self.n - 1) // (self.m + self.n)


def compute_spectra(model, adapter, progress=None) -> dict[str, Spectrum]:
    """Full SVD (float64) of every factorizable layer. One thread: LAPACK's SVD on 2 threads ran
    10-50x slower here whenever another process kept a core busy; on 1 thread it is steady. progress(fraction) after
    each layer (a 1B model: about a minute or more a layer here)."""
    check("spectra", model, params=sum(model.get_submodule(n).weight.numel() for n in adapter.factorizable(model)))
    out, names = {}, adapter.factorizable(model)
    for i, name in enumerate(names):
        if progress is not None:
            progress(i / len(names))
        turn()  # a long job: waiting jobs go first, an Apply waits for one layer's SVD at most
        w = model.get_submodule(name).weight.detach()  # (out, in)
        with single_thread():  # (per layer: a job waiting for its turn holds no lock)
            u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        dt = torch.float32 if w.dtype in (torch.bfloat16, torch.float16) else w.dtype  # (kept bf16: an Apply
        out[name] = Spectrum(name, s.numpy(), *w.shape, u.to(dt), vh.to(dt))  # factorizes a float32 copy)
    return out


_CACHE = LRU("spectra", 4, "U, S, Vh of every block Linear of the last models whose spectra were asked for "
                           "(MiniLM: ~25 MB each)")


def spectra(bundle, progress=None) -> dict[str, Spectrum]:
    """Spectra of a model, computed once per model content (and recipe) while it stays in the cache."""
    return _CACHE.get_or_make((bundle.content_hash, bundle.recipe),
                              lambda: compute_spectra(bundle.model, bundle.adapter, progress))


def select_ranks(spec: dict[str, Spectrum], mode: str, x: float) -> dict[str, int | None]:
    """Rank per layer; None = keep dense (factorizing would not shrink it).

    ratio:  r = round(x * min(m, n))                     (the article's dim_ratio)
    energy: smallest r keeping fraction x of sum(S^2)
    budget: factorized params = x * dense params of all factorizable layers, spent greedily on the
            singular values with the largest energy gain per parameter across layers.
    """
    if mode == "none" or not spec:
        return {k: None for k in spec}
    if mode == "ratio":
        ranks = {k: max(1, round(x * min(s.m, s.n))) for k, s in spec.items()}
    elif mode == "energy":
        ranks = {k: int(np.searchsorted(s.energy, x - 1e-12) + 1) for k, s in spec.items()}
    elif mode == "budget":
        return budget_ranks(spec, x)
    else:
        raise CompressError(f"unknown rank mode {mode!r}")
    return {k: (r if r <= spec[k].max_useful_rank else None) for k, r in ranks.items()}


def budget_ranks(spec, x, weight: dict[str, float] | None = None) -> dict[str, int | None]:
    """Greedy: spend x * dense params on the steps (one more singular value of one layer) with the largest
    weighted energy gain per parameter. weight: per-layer cost of lost energy (sensitivity.allocate); 1 = spectral."""
    budget = x * sum(s.m * s.n for s in spec.values())
    dense = {k for k, s in spec.items() if s.max_useful_rank < 1}  # too thin to factorize at all
    ranks = {k: 1 for k in spec}
    spent = sum(s.m * s.n if k in dense else s.m + s.n for k, s in spec.items())
    if spent > budget:
        raise CompressError(f"budget {x:g} is too small: rank 1 everywhere already needs "
                            f"{spent / (budget / x):.4f} of the dense params")
    w = weight or dict.fromkeys(spec, 1.0)

    def item(k):  # (-weighted energy gain per param, layer, cost) of layer k's next step
        s, r = spec[k], ranks[k]
        if r < s.max_useful_rank:
            return (-w[k] * (s.energy[r] - s.energy[r - 1]) / (s.m + s.n), k, s.m + s.n)
        cost = s.m * s.n - r * (s.m + s.n)  # last step: back to the whole dense layer
        return (-w[k] * (1.0 - s.energy[r - 1]) / max(1, cost), k, cost)

    heap = [item(k) for k in spec if k not in dense]
    heapq.heapify(heap)
    while heap:
        _, k, cost = heapq.heappop(heap)
        if spent + cost > budget:
            continue  # this layer's next step does not fit; cheaper steps of others may
        spent += cost
        if ranks[k] >= spec[k].max_useful_rank:
            dense.add(k)
        else:
            ranks[k] += 1
            heapq.heappush(heap, item(k))
    return {k: (None if k in dense else r) for k, r in ranks.items()}


def layer_report(spec: dict[str, Spectrum], ranks: dict[str, int | None]) -> list[dict]:
    rows = []
    for k, s in spec.items():
        r = ranks.get(k)
        rows.append({"layer": k, "shape": [s.m, s.n], "rank": r if r else min(s.m, s.n), "dense": r is None,
                     "energy_kept": float(s.energy[r - 1]) if r else 1.0,
                     "params_dense": s.m * s.n, "params": r * (s.m + s.n) if r else s.m * s.n})
    return rows


def has_spectra(bundle) -> bool:
    """Are this model's spectra in the cache (so spectra() returns at once)?"""
    return (bundle.content_hash, bundle.recipe) in _CACHE
