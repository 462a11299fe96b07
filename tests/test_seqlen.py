"""Cost over sequence length (compress/bench/seqlen.py): positions extended for timing, the crossover and slope."""
import pytest
import torch

import compress as C
from compress.bench import seqlen
from compress.models.adapters import forward

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_gpt"])
def test_extended_positions_keep_the_trained_ones_and_take_longer_inputs(fixture, request):
    b = request.getfixturevalue(fixture)
    n = b.info["max_positions"]
    ids = torch.randint(5, 250, (2, n), generator=torch.Generator().manual_seed(0))
    big = seqlen.extend_positions(b.model, b.adapter, 3 * n)
    with torch.no_grad():
        assert torch.equal(forward(big, b.adapter, ids), forward(b.model, b.adapter, ids))
        out = forward(big, b.adapter, ids.repeat(1, 3))
    assert out.shape[1] == 3 * n and torch.isfinite(out).all()


def test_linformer_projections_follow_the_extended_length(tiny_bert):
    comp = C.compress(tiny_bert, C.Recipe(attention="lowrank", attn_rank=8))
    big = seqlen.extend_positions(comp.model, tiny_bert.adapter, 300)
    with torch.no_grad():
        out = forward(big, tiny_bert.adapter, torch.randint(5, 250, (1, 300)))
    assert big.encoder.layer[0].attention.self.attn_E.shape == (8, 300) and torch.isfinite(out).all()


def _rows(ms: dict) -> list[dict]:
    return [{"model": k, "T": t, "ms": v, "peak_mb": 1.0} for k, curve in ms.items() for t, v in curve.items()]


def test_the_crossover_is_where_a_variant_stays_faster():
    rows = _rows({"sdpa": {128: 1, 256: 4, 512: 16, 1024: 64}, "local": {128: 2, 256: 3, 512: 6, 1024: 12},
                  "dip": {128: 0.5, 256: 5, 512: 20, 1024: 60}, "slow": {128: 2, 256: 8, 512: 32, 1024: 128}})
    assert seqlen.crossover(rows, "local") == 256
    assert seqlen.crossover(rows, "dip") == 1024  # faster at 128 but not after: the crossover is where it stays
    assert seqlen.crossover(rows, "slow") is None
    assert seqlen.slope(rows, "sdpa") == pytest.approx(2.0) and seqlen.slope(rows, "slow") == pytest.approx(2.0)
    md = seqlen.markdown("m", rows)
    assert "| local | 2 / 1 | 3 / 1 | 6 / 1 | 12 / 1 |" in md and "none up to 1024" in md
    from compress.outputs import plots  # the chart's T axis ticked at the lengths measured
    fig = plots.seqlen(rows, 256)
    assert list(fig.layout.xaxis.tickvals) == [128, 256, 512, 1024] and list(fig.layout.xaxis2.ticktext)[-1] == "1024"


def test_the_curve_times_every_variant_the_model_takes(tiny_gpt):
    rows = seqlen.curve(tiny_gpt, (8, 80), runs=7, log=lambda m: None)
    names = {r["model"] for r in rows}
    assert "sdpa" in names and "lowrank k=64" not in names and "lsh n=8 c=64" not in names  # encoders only
    assert len(names) == 1 + len(seqlen.VARIANTS) - 2 and {r["T"] for r in rows} == {8, 80}
    assert all(r["ms"] > 0 and r["peak_mb"] >= 0 for r in rows)


def test_the_curve_compares_the_recipes_attention_alone_with_all_its_parameters():
    r = C.Recipe(layers=2, quant="int8", attention="lsh", buckets=4, window=16, heal_steps=5)
    assert seqlen.attention_only(r) == C.Recipe(attention="lsh", buckets=4, window=16)  # (buckets were dropped)
    assert seqlen.attention_only(C.Recipe(layers=2)) == C.Recipe()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: tests/test_gpu.py times the curve on it")
def test_the_curve_on_a_gpu_is_refused_in_one_line_where_there_is_none(tiny_gpt):
    for device, words in (("cuda", "no CUDA GPU on this machine"), ("tpu", "device must be cpu or cuda")):
        with pytest.raises(C.CompressError, match=words):
            seqlen.curve(tiny_gpt, (8,), log=lambda m: None, device=device)


def test_the_recipes_curve_stops_at_the_memory_bound_and_refuses_what_it_cannot_time(tiny_gpt, monkeypatch):
    local = C.Recipe(attention="local", window=8, heads=1)  # (the rest of the recipe is not timed)
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", "1.5")  # T=128 fits (~0.9 MB), T=256 does not (~2.4 MB)
    got = seqlen.of_recipe(tiny_gpt, local, 4096, log=lambda m: None)
    assert got["variant"] == "local attention W=8" and got["against"] == "sdpa"
    assert {(r["model"], r["T"]) for r in got["rows"]} == {("sdpa", 128), ("local attention W=8", 128)}
    assert len(got["notes"]) == 1 and got["notes"][0].startswith("stopped before T=256: ") and not got["slopes"]
    assert got["crossover"] == seqlen.crossover(got["rows"], got["variant"])
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", "0.5")
    for r, words in ((local, "needs about"), (C.Recipe(), "choose an efficient"),
                     (C.Recipe(attention="lowrank"), "causal")):
        with pytest.raises(C.CompressError, match=words):
            seqlen.of_recipe(tiny_gpt, r, 256, log=lambda m: None)



def test_each_length_counts_the_variants_own_activations(tiny_gpt, monkeypatch):
    """A local window of W >= T holds 3T keys a query (and a mask and a softmax of that shape): the check of each
    length adds it to full attention's estimate (a sixth hostile review: W = 65,536 passed at 807 MB estimated and
    used 2,473 MB). With a budget that holds full attention at T=256 but not the window's share, the curve stops."""
    from compress.serve import membound
    from compress.techniques.attention import mb_per_token
    wide = C.Recipe(attention="local", window=65536)
    params = membound.params_of(tiny_gpt.model) * (len(tiny_gpt.adapter.attn_runtimes) + 1)
    plain = membound.estimate_mb("seqlen", params) + seqlen.activations_mb(tiny_gpt, 256)
    assert mb_per_token(tiny_gpt.info, wide, 256) * 256 > 1.0  # the window's share at T=256: more than 1 MB
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", f"{plain + 0.5:.3f}")
    got = seqlen.of_recipe(tiny_gpt, wide, 256, log=lambda m: None)
    assert {r["T"] for r in got["rows"]} == {128} and got["notes"][0].startswith("stopped before T=256: ")
