import numpy as np
import pytest
import torch

import compress as C
from compress.techniques.spectrum import Spectrum, select_ranks


def _spec(m, n, s):
    return Spectrum("x", np.asarray(s, dtype=float), m, n, torch.zeros(m, min(m, n)), torch.zeros(min(m, n), n))


@pytest.mark.slow
def test_full_rank_reproduces_every_minilm_layer(minilm):
    torch.manual_seed(0)
    spec = C.spectra(minilm)
    assert len(spec) == 6 * 6  # q, k, v, o, ffn in, ffn out per block
    for name, sp in spec.items():
        layer = minilm.model.get_submodule(name)
        low = C.LowRankLinear.from_linear(layer, min(sp.m, sp.n), (sp.u, sp.s, sp.vh))
        x = torch.randn(4, sp.n)
        torch.testing.assert_close(low(x), layer(x), rtol=1e-4, atol=1e-5)


def test_low_rank_is_the_best_rank_r_approximation():
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 16)
    low = C.LowRankLinear.from_linear(layer, 4)
    w_r = low.up.weight @ low.down.weight  # (out, in)
    s = torch.linalg.svdvals(layer.weight.detach().double())
    # Eckart-Young: the Frobenius error of the best rank-4 matrix is the norm of the dropped singular values
    assert torch.linalg.norm(layer.weight - w_r).item() == pytest.approx(s[4:].norm().item(), rel=1e-4)
    assert isinstance(low.up, torch.nn.Linear) and isinstance(low.down, torch.nn.Linear)
    torch.testing.assert_close(low.up.bias, layer.bias)


def test_full_rank_model_gives_the_same_outputs(tiny_bert):
    spec = C.spectra(tiny_bert)
    ranks = {k: min(s.m, s.n) for k, s in spec.items()}
    import copy
    model = C.apply_factorize(copy.deepcopy(tiny_bert.model), ranks, spec)
    ids = torch.randint(1000, 2000, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).last_hidden_state,
                                   tiny_bert.model(input_ids=ids).last_hidden_state, rtol=1e-4, atol=1e-5)


def test_ratio_rank_and_keep_dense_rule():
    spec = {"sq": _spec(384, 384, np.ones(384)), "wide": _spec(1536, 384, np.ones(384))}
    ranks = select_ranks(spec, "ratio", 0.5)
    assert ranks["sq"] is None       # 192 * (384 + 384) == 384 * 384: would not shrink, stays dense
    assert ranks["wide"] == 192      # 192 * 1920 < 1536 * 384
    assert select_ranks(spec, "ratio", 0.25) == {"sq": 96, "wide": 96}
    rep = C.layer_report(spec, ranks)
    assert rep[0]["dense"] and rep[0]["params"] == 384 * 384 and rep[1]["params"] == 192 * 1920


def test_energy_rank_is_the_smallest_keeping_the_fraction():
    s = np.sqrt([50, 30, 10, 5, 5])  # energies 0.5, 0.8, 0.9, 0.95, 1.0
    spec = {"a": _spec(100, 100, s)}
    assert select_ranks(spec, "energy", 0.8) == {"a": 2}
    assert select_ranks(spec, "energy", 0.81) == {"a": 3}
    assert select_ranks(spec, "energy", 1.0) == {"a": 5}


def test_budget_spends_at_most_the_budget_and_favours_steep_spectra():
    rng = np.random.default_rng(0)
    steep = np.sort(rng.random(64) ** 8)[::-1]   # energy concentrated in few values
    flat = np.sort(0.9 + 0.1 * rng.random(64))[::-1]
    spec = {"steep": _spec(64, 64, steep), "flat": _spec(64, 64, flat)}
    ranks = select_ranks(spec, "budget", 0.5)
    used = sum(r * 128 if r else 64 * 64 for r in ranks.values())
    assert used <= 0.5 * 2 * 64 * 64
    assert ranks["flat"] is None or ranks["flat"] > ranks["steep"]
    assert select_ranks(spec, "budget", 1.0) == {"steep": None, "flat": None}
    with pytest.raises(C.CompressError, match="too small"):
        select_ranks(spec, "budget", 0.01)


def test_ratio_half_has_fewer_params(tiny_bert):
    small = C.compress(tiny_bert, C.Recipe(rank_mode="ratio", rank=0.25))
    assert C.count_params(small.model) < C.count_params(tiny_bert.model)
    factorized = [r for r in small.layers if not r["dense"]]
    saved = sum(r["params_dense"] - r["params"] for r in factorized)
    assert saved > 0 and C.count_params(tiny_bert.model) - C.count_params(small.model) == saved


@pytest.mark.heavy  # make test-slow only: test_table's factorize cases count the params exactly on every family
@pytest.mark.slow   # (and the Compress page's AppTests factorize MiniLM); here all 72 SVDs of the real MiniLM
def test_minilm_ratio_half_fewer_params_and_finite(minilm):
    c = C.compress(minilm, C.Recipe(rank_mode="ratio", rank=0.5))
    assert C.count_params(c.model) < C.count_params(minilm.model)
    q = C.quality(c, minilm)
    assert 0 < q["fidelity"] < 1


def test_embedding_factorization_full_rank_exact_then_smaller_and_quantizable(tiny_bert):
    import copy
    from compress.techniques.factorize import LowRankEmbedding, factorize_embeddings
    from compress.techniques.heal import trainable
    table = tiny_bert.model.embeddings.word_embeddings
    ids = torch.randint(0, table.num_embeddings, (3, 7))
    full = LowRankEmbedding.from_embedding(table, 64)  # rank = hidden: the SVD reproduces the table
    torch.testing.assert_close(full(ids), table(ids), atol=1e-5, rtol=1e-5)
    m = factorize_embeddings(copy.deepcopy(tiny_bert.model), tiny_bert.adapter, 0.25)
    low = m.embeddings.word_embeddings
    assert isinstance(low, LowRankEmbedding) and low.rank == 16
    assert sum(p.numel() for p in low.parameters()) == 16 * (table.num_embeddings + 64)
    assert any(n.startswith("embeddings.word_embeddings.") for n, _ in trainable(m, tiny_bert.adapter))
    q = C.apply_quantize(m, tiny_bert.adapter, "int8")
    assert type(q.embeddings.word_embeddings.emb).__module__.startswith("torch.ao.nn.quantized")
    assert type(q.embeddings.word_embeddings.up).__module__.startswith("torch.ao.nn.quantized.dynamic")


def test_tied_embeddings_are_refused_with_a_reason():
    from transformers import GPT2Config, GPT2LMHeadModel
    from compress.models.adapters import ADAPTERS, conv1d_to_linear
    from compress.techniques.factorize import factorize_embeddings
    m = conv1d_to_linear(GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2)))
    assert C.tied_embeddings(m, ADAPTERS["gpt2"])
    with pytest.raises(C.CompressError, match="tied"):
        factorize_embeddings(m, ADAPTERS["gpt2"], 0.25)
    with pytest.raises(C.CompressError, match="tied"):  # a 2-bit table would change the LM head too
        C.low_bit_embeddings(m, ADAPTERS["gpt2"], 2)
