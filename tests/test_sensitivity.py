"""Per-layer sensitivity and the sensitivity-weighted rank allocation (compress/techniques/sensitivity.py)."""
import dataclasses
import math

import pytest
import torch

import compress as C
from compress.models.adapters import ADAPTERS
from compress.techniques.heal import heal_texts
from compress.models.bundle import ModelBundle
from compress.techniques.sensitivity import allocate, calibration_texts, layer_sensitivity

pytestmark = pytest.mark.usefixtures("one_thread")




def _params(spec, ranks):
    return sum(s.m * s.n if ranks[k] is None else ranks[k] * (s.m + s.n) for k, s in spec.items())


@pytest.mark.parametrize("which", ["tiny_bert", "tiny_gpt"])
def test_one_finite_number_per_factorizable_layer(which, request):
    bundle = request.getfixturevalue(which)
    spec = C.spectra(bundle)
    texts = heal_texts(ModelBundle(None, "x", ADAPTERS["bert"], None, "", {}))[:32]
    seen = []
    sens = layer_sensitivity(bundle, spec, cut=0.1, texts=texts, progress=seen.append)
    assert list(sens) == bundle.adapter.factorizable(bundle.model) == list(spec)
    assert all(math.isfinite(v) and v >= -1e-6 for v in sens.values())
    assert max(sens.values()) > 0 and seen[-1]["done"] == len(spec)
    for name in spec:  # the original is never touched
        assert isinstance(bundle.model.get_submodule(name), torch.nn.Linear)


def test_calibration_text_is_heal_text_not_eval_text(tiny_bert):
    texts = calibration_texts(tiny_bert)
    assert len(texts) == 64 == len(set(texts))
    assert not set(texts) & set(C.eval_set()[0])


def test_allocation_meets_the_budget_in_select_ranks_format(tiny_bert):
    spec = C.spectra(tiny_bert)
    sens = {k: 0.01 * (i + 1) for i, k in enumerate(spec)}
    dense = sum(s.m * s.n for s in spec.values())
    for budget in (0.2, 0.5, 0.7, 1.0):
        ranks = allocate(spec, sens, budget)
        ref = C.select_ranks(spec, "budget", budget)
        assert list(ranks) == list(ref)
        assert all(r is None or (isinstance(r, int) and 1 <= r <= spec[k].max_useful_rank) for k, r in ranks.items())
        assert _params(spec, ranks) <= budget * dense
        assert _params(spec, ranks) >= 0.9 * min(_params(spec, ref), budget * dense)  # spends the budget
        C.layer_report(spec, ranks)
    with pytest.raises(C.CompressError, match="too small"):
        allocate(spec, sens, 0.001)
    with pytest.raises(C.CompressError, match="no sensitivity"):
        allocate(spec, {}, 0.5)


def test_a_sensitive_layer_gets_more_rank(tiny_bert):
    spec = C.spectra(tiny_bert)
    flat = {k: 1.0 for k in spec}
    hot = next(iter(spec))
    r_flat = allocate(spec, flat, 0.4)
    r_hot = allocate(spec, {**flat, hot: 100.0}, 0.4)
    assert (r_hot[hot] or 10**9) > r_flat[hot]


def test_a_healings_time_cap_bounds_its_sensitivity(tiny_bert):
    """Sensitivity runs inside a healing job (which has no queue time limit, only its cap): it spends the cap and
    stops with one line once the cap is gone, nothing cached."""
    r = C.Recipe(rank_mode="budget", rank=0.5, allocate="sensitivity", heal_steps=3)
    tiny_bert = dataclasses.replace(tiny_bert, cache={})  # (another test may have measured the shared one's)
    with pytest.raises(C.CompressError, match=r"time cap ran out while sensitivity was measured \(0 of \d+ layers\)"):
        C.compress(tiny_bert, r, minutes=1e-9)
    assert "sensitivity" not in tiny_bert.cache
    assert C.compress(tiny_bert, r, minutes=5).applied["heal"] is not None  # a cap it fits in: measured and healed
