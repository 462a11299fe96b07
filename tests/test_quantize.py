import copy

import pytest
import torch
from torch.ao.nn.quantized import Embedding as QEmbedding
from torch.ao.nn.quantized.dynamic import Linear as QLinear

import compress as C


def _sqnr_db(ref, x):
    return (10 * torch.log10(ref.pow(2).mean() / (ref - x).pow(2).mean())).item()


def test_int8_output_sqnr_per_layer():
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(64, 96))
    q = C.apply_quantize(copy.deepcopy(layer), None, "int8", embeddings=False)
    assert isinstance(q[0], QLinear)
    x = torch.randn(32, 64)
    assert _sqnr_db(layer(x), q(x)) >= 20


def test_factorized_model_still_quantizes(tiny_bert):
    c = C.compress(tiny_bert, C.Recipe(rank_mode="ratio", rank=0.25, quant="int8"))
    lows = [m for m in c.model.modules() if isinstance(m, C.LowRankLinear)]
    assert lows and all(isinstance(m.up, QLinear) and isinstance(m.down, QLinear) for m in lows)
    assert not any(type(m) is torch.nn.Linear for m in c.model.modules())  # every Linear became int8
    assert isinstance(c.model.embeddings.word_embeddings, QEmbedding)
    assert C.size_bytes(c.model) < C.size_bytes(tiny_bert.model) / 3
    ids = torch.randint(1000, 2000, (2, 10))
    with torch.no_grad():
        ref = tiny_bert.model(input_ids=ids).last_hidden_state
        out = c.model(input_ids=ids).last_hidden_state
    assert torch.isfinite(out).all() and out.shape == ref.shape


def test_int8_without_embeddings_keeps_the_table_float(tiny_bert):
    c = C.compress(tiny_bert, C.Recipe(quant="int8", quant_embeddings=False))
    assert type(c.model.embeddings.word_embeddings) is torch.nn.Embedding


@pytest.mark.parametrize("mode, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_casts_halve_the_size(tiny_bert, mode, dtype):
    c = C.compress(tiny_bert, C.Recipe(quant=mode))
    assert {p.dtype for p in c.model.parameters()} == {dtype}
    assert C.size_bytes(c.model) < 0.55 * C.size_bytes(tiny_bert.model)
    assert C.quality(c, tiny_bert)["fidelity"] > 0.99
    assert next(tiny_bert.model.parameters()).dtype == torch.float32  # original untouched


def test_every_quant_mode_names_its_device():
    for mode in C.FIELDS["quant"].choices[1:]:  # the step that runs it says where it runs (the control's caption)
        step = next(s for s in C.STEPS if mode in s.selects[1:])
        assert "Runs on:" in step.teach
    assert "CPU only" in next(s for s in C.STEPS if s.name == "int8").teach


@pytest.mark.slow
def test_minilm_int8_fidelity_and_size(minilm):
    c = C.compress(minilm, C.Recipe(quant="int8"))
    q = C.quality(c, minilm)
    assert q["fidelity"] >= 0.9 and q["retrieval_overlap"] >= 0.6
    assert C.size_bytes(minilm.model) / C.size_bytes(c.model) >= 3


@pytest.mark.parametrize("bits", [4, 2])
def test_low_bit_table_is_within_half_a_step_and_packed(bits):
    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 256)
    with torch.no_grad():
        table.weight[3] = torch.linspace(-1, 2, 256)  # one row with a wide range
    low = C.LowBitEmbedding.from_embedding(table, bits)
    assert low.group == 128 and low.packed.shape == (50, 256 * bits // 8) and low.packed.dtype == torch.uint8
    ids = torch.arange(50)
    w, out = table.weight.detach(), low(ids)
    step = low.scale.float().repeat_interleave(128, dim=1)  # one scale per group of 128 weights
    assert ((out - w).abs() <= step / 2 + 1e-3 * w.abs().max()).all()  # rounding, plus fp16 scale/min
    levels = ((out - low.low.float().repeat_interleave(128, 1)) / step).round()
    assert levels.min() == 0 and levels.max() == 2 ** bits - 1  # the whole grid is used
    again = C.LowBitEmbedding.from_embedding(torch.nn.Embedding.from_pretrained(out), bits)
    assert torch.allclose(again(ids), out, atol=1e-3 * w.abs().max())  # grid values come back (fp16 scale aside)
    payload = 50 * 256 * bits / 8 + 50 * 2 * 2 * 2  # packed weights + fp16 scale and min per group
    assert payload < C.size_bytes(low) < payload + 4096


def test_low_bit_table_follows_casts():
    low = C.LowBitEmbedding.from_embedding(torch.nn.Embedding(10, 64), 4)
    assert low.group == 64  # 64 does not divide by 128: one group per row
    assert low(torch.tensor([[1, 2]])).dtype == torch.float32
    assert low.to(torch.float16)(torch.tensor([[1, 2]])).dtype == torch.float16
    assert "ref" not in low.state_dict()


def test_low_bit_tables_on_a_model(tiny_bert):
    fid = {}
    for bits in (4, 2):
        c = C.compress(tiny_bert, C.Recipe(emb_bits=bits, quant="int8"))
        assert isinstance(c.model.embeddings.word_embeddings, C.LowBitEmbedding)
        assert isinstance(c.model.embeddings.position_embeddings, QEmbedding)  # int8 still takes the rest
        fid[bits] = C.quality(c, tiny_bert)["fidelity"]
    int8 = C.compress(tiny_bert, C.Recipe(quant="int8"))
    assert fid[4] > 0.98 and 0.5 < fid[2] < fid[4] <= C.quality(int8, tiny_bert)["fidelity"] + 1e-3
    assert C.count_params(C.compress(tiny_bert, C.Recipe(emb_bits=2)).model) == C.count_params(tiny_bert.model)
    sizes = {b: C.size_breakdown(C.compress(tiny_bert, C.Recipe(emb_bits=b)).model, tiny_bert.adapter)["embeddings"]
             for b in (0, 4, 2)}
    assert sizes[0] > 6 * sizes[4] and sizes[4] > 1.7 * sizes[2]  # (a 64-wide row: 4 bytes of scale+min each)


def test_low_bit_table_is_refused_with_a_rank_or_another_bit_width():  # (tied tables: test_factorize)
    with pytest.raises(C.CompressError, match="one way to shrink"):
        C.Recipe(emb_bits=2, emb_rank=0.5)
    for bad in (3, 8, True, "2"):
        with pytest.raises(C.CompressError, match="emb_bits"):
            C.Recipe(emb_bits=bad)


@pytest.mark.slow
def test_minilm_2bit_table_with_int8(minilm):
    c = C.compress(minilm, C.Recipe(emb_bits=2, quant="int8"))
    assert C.quality(c, minilm)["fidelity"] >= 0.9
    assert C.size_bytes(minilm.model) / C.size_bytes(c.model) >= 6


def test_fake_int8_rounds_like_int8_and_passes_gradients_straight_through():
    from compress.techniques.quantize import fake_int8
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(64, 96))
    x = (torch.randn(4, 10, 64) * 2 + 0.5).requires_grad_()
    with torch.no_grad():
        ref = lin(x)
        real = C.apply_quantize(copy.deepcopy(lin), None, "int8", embeddings=False)(x)
    with fake_int8(lin):
        fake = lin(x)
        fake.sum().backward()
    assert (fake - real).norm() < 0.05 * (real - ref).norm()  # fbgemm's rounding, up to float summation order
    w = lin[0].weight
    assert torch.allclose(x.grad, w.sum(0).expand_as(x), atol=0.02 * float(w.detach().abs().sum(0).max()))  # d sum / dx ~ W
    assert torch.allclose(w.grad, x.detach().reshape(-1, 64).sum(0).expand_as(w), rtol=0.05, atol=1.0)  # ~ inputs (7-bit rounded)
    with torch.no_grad():
        assert torch.equal(lin(x), ref)  # outside the context: the float layer again


def test_healing_before_int8_sees_int8_rounding(tiny_bert):
    dev = {q: C.compress(tiny_bert, C.Recipe(rank_mode="ratio", rank=0.5, heal_steps=1, quant=q)).applied["heal"]["dev_before"]
           for q in ("none", "int8")}
    assert dev["none"] != dev["int8"]  # the int8 student is measured (and trained) with int8 rounding
