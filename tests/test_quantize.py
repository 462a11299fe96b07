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
    assert set(C.QUANT_DEVICES) == set(C.QUANT_MODES)
    assert "CPU" in C.QUANT_DEVICES["int8"]


@pytest.mark.slow
def test_minilm_int8_fidelity_and_size(minilm):
    c = C.compress(minilm, C.Recipe(quant="int8"))
    q = C.quality(c, minilm)
    assert q["fidelity"] >= 0.9 and q["retrieval_overlap"] >= 0.6
    assert C.size_bytes(minilm.model) / C.size_bytes(c.model) >= 3
