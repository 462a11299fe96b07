"""Weight-only int4 (compress/techniques/int4.py): packing within half a step, output error, size, the healing simulation
matching what int4 stores, and a save / reload round trip."""
import copy
import math

import pytest
import torch

import compress as C
from compress.models.bundle import ModelBundle
from compress.models.adapters import forward
from compress.techniques.int4 import LowBitLinear, apply_int4, fake_int4
from compress.techniques.lowbit import group_size


def test_group_size_divides_the_row():
    assert [group_size(n) for n in (384, 1536, 192, 96, 50)] == [128, 128, 64, 32, 50]


def test_weights_are_stored_within_half_a_step_in_half_a_byte_each():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 96)
    q = LowBitLinear.from_linear(lin)
    w, back = lin.weight.detach(), q.weight(torch.float32)
    step = q.scale.float().repeat_interleave(q.group, dim=1)  # (out, in): each weight's group scale
    assert ((w - back).abs() <= step / 2 + 1e-3 * step + 1e-6).all()
    assert q.packed.numel() == 96 * 256 // 2 and q.scale.numel() == q.low.numel() == 96 * 2
    assert C.count_params(q) == 96 * 256 + 96  # the weights it stands for, and its bias
    x = torch.randn(64, 256)
    with torch.no_grad():
        ref, out = lin(x), q(x)
    sqnr = 10 * math.log10(float(ref.pow(2).sum() / (ref - out).pow(2).sum()))
    assert sqnr > 17  # ~6 dB per bit minus the asymmetric grid's edges; int8 gives > 30 here


def test_healing_simulation_rounds_like_int4_and_passes_gradients(tiny_gpt):
    model = C.compress(tiny_gpt, C.Recipe()).model
    ids = torch.randint(0, 256, (2, 12))
    real = apply_int4(C.compress(tiny_gpt, C.Recipe()).model, tiny_gpt.adapter, tables=False)  # (tables: 8 bits)
    with fake_int4(model, tiny_gpt.adapter):
        fake = forward(model, tiny_gpt.adapter, ids)
        fake.sum().backward()
    torch.testing.assert_close(fake, forward(real, tiny_gpt.adapter, ids), atol=1e-4, rtol=1e-4)
    grad = model.blocks[0].attn.q.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # straight through to the float weight
    torch.testing.assert_close(forward(model, tiny_gpt.adapter, ids), forward(tiny_gpt.model, tiny_gpt.adapter, ids))


@pytest.mark.parametrize("recipe", [dict(quant="int4"), dict(quant="int4", heal_steps=3, rank_mode="ratio", rank=0.5)])
def test_int4_model_is_smaller_and_reloads_identically(tiny_gpt, recipe, tmp_path, monkeypatch):
    monkeypatch.setitem(C.BUNDLED, "tiny-gpt", lambda: tiny_gpt)
    C.load_model.cache_clear()
    comp = C.compress(tiny_gpt, C.Recipe(**recipe))
    float_model = C.compress(tiny_gpt, C.Recipe(**{**recipe, "quant": "none", "heal_steps": 0})).model
    linears = [m for m in float_model.blocks.modules() if type(m) is torch.nn.Linear]
    packed = [m for m in comp.model.modules() if isinstance(m, LowBitLinear)]
    assert [m.bits for m in packed].count(4) == len(linears)  # factors too
    assert [m.bits for m in packed].count(8) == 1 and comp.model.lm_head.bits == 8  # the untied head, as int8 has it
    assert C.numbers(comp)["size_bytes"] < 0.6 * C.numbers(tiny_gpt)["size_bytes"]
    again = C.load_compressed(C.save_compressed(comp, tmp_path / "m"))
    ids = torch.randint(0, 256, (2, 12))
    assert torch.equal(forward(again.model, again.adapter, ids), forward(comp.model, comp.adapter, ids))
    assert C.numbers(again)["size_bytes"] == C.numbers(comp)["size_bytes"]
    C.load_model.cache_clear()


def test_int4_stores_the_tables_in_8_bits_unless_told_or_tied(tiny_bert, tiny_gpt, tmp_path, monkeypatch):
    """With quant_embeddings (the default) the word and position tables are 8-bit rows, as int8 stores them: smaller,
    the same output within the rounding, reloaded identically; off, or a table tied to the LM head, they stay."""
    from compress.techniques.lowbit import LowBitEmbedding
    a = tiny_bert.adapter
    comp, plain = (C.compress(tiny_bert, C.Recipe(quant="int4", quant_embeddings=e)) for e in (True, False))
    for path in (a.word_embeddings, a.position_embeddings):
        assert isinstance(comp.model.get_submodule(path), LowBitEmbedding) and comp.model.get_submodule(path).bits == 8
        assert type(plain.model.get_submodule(path)) is torch.nn.Embedding
    table = tiny_bert.model.get_submodule(a.word_embeddings).weight
    rows = comp.model.get_submodule(a.word_embeddings)(torch.arange(table.shape[0]))
    assert (rows - table).abs().max() <= (table.max() - table.min()) / 255  # within one 8-bit step of its group
    saved = C.numbers(plain)["size_bytes"] - C.numbers(comp)["size_bytes"]
    n = sum(plain.model.get_submodule(p).weight.numel() for p in (a.word_embeddings, a.position_embeddings))
    assert 2.5 * n < saved < 3 * n  # 4 bytes a weight became 1 (and a scale and minimum per group)
    ids = torch.randint(5, 100, (2, 12))
    torch.testing.assert_close(forward(comp.model, a, ids), forward(plain.model, a, ids), atol=0.05, rtol=0.05)
    monkeypatch.setitem(C.BUNDLED, "tiny-bert", lambda: tiny_bert)
    C.load_model.cache_clear()
    again = C.load_compressed(C.save_compressed(comp, tmp_path / "m"))
    C.load_model.cache_clear()
    assert torch.equal(forward(again.model, a, ids), forward(comp.model, a, ids))
    assert C.numbers(again)["size_bytes"] == C.numbers(comp)["size_bytes"]
    tied = copy.deepcopy(tiny_gpt.model)
    tied.lm_head.weight = tied.wte.weight  # a word table that is its output layer's weight: left as it is
    tied = apply_int4(tied, tiny_gpt.adapter)
    assert type(tied.wte) is torch.nn.Embedding and isinstance(tied.wpe, LowBitEmbedding)
    assert type(tied.lm_head) is torch.nn.Linear and tied.lm_head.weight is tied.wte.weight  # still one table


def test_int4_stores_a_pooler_in_8_bits_as_int8_does(tiny_bert):
    """A Linear outside the blocks (BERT's pooler: MiniLM's 0.59 MB in fp32, unused by its mean-pooled sentence
    embedding) is stored in 8 bits with the tables, as int8 stores it; it still computes what it computed."""
    from transformers import BertModel
    torch.manual_seed(0)
    pooled = ModelBundle(BertModel(tiny_bert.model.config, add_pooling_layer=True).eval(), "tiny-bert-pooler",
                         tiny_bert.adapter, tiny_bert.tokenizer, "tiny-bert-pooler-hash", tiny_bert.info)
    comp, plain = (C.compress(pooled, C.Recipe(quant="int4", quant_embeddings=e)) for e in (True, False))
    assert isinstance(comp.model.pooler.dense, LowBitLinear) and comp.model.pooler.dense.bits == 8
    assert type(plain.model.pooler.dense) is torch.nn.Linear
    x = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(comp.model.pooler.dense(x), plain.model.pooler.dense(x), atol=0.02, rtol=0.02)
    n = plain.model.pooler.dense.weight.numel()
    saved = C.numbers(plain)["size_bytes"] - C.numbers(comp)["size_bytes"]
    tables = sum(plain.model.get_submodule(p).weight.numel() for p in (tiny_bert.adapter.word_embeddings,
                                                                          tiny_bert.adapter.position_embeddings))
    assert 2.5 * (n + tables) < saved < 3 * (n + tables)  # 4 bytes a weight became 1, the pooler's too


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_a_row_of_odd_width_packs_with_a_padded_last_byte(bits):
    torch.manual_seed(0)
    lin = torch.nn.Linear(461, 5)  # an FFN cut to 0.3 of 1536: 461 wide, 8 // bits does not divide it
    w, q = lin.weight.detach(), LowBitLinear.from_linear(lin, bits)
    assert q.packed.shape == (5, -(-461 * bits // 8))
    step = q.scale.float().repeat_interleave(q.group, dim=1)
    assert q.weight(torch.float32).shape == w.shape
    assert ((w - q.weight(torch.float32)).abs() <= step / 2 + 1e-3 * step + 1e-6).all()


def test_int4_on_an_ffn_of_odd_width_saves_and_reloads(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setitem(C.BUNDLED, "tiny-bert", lambda: tiny_bert)
    C.load_model.cache_clear()
    recipe = C.Recipe(ffn=0.35, emb_bits=2, quant="int4")  # 45 of 128 FFN units: odd, as FFN 0.3 of MiniLM (461)
    comp = C.compress(tiny_bert, recipe)
    assert comp.model.encoder.layer[0].output.dense.in_features == 45  # it used to fail to pack (231 vs 230)
    again = C.load_compressed(C.save_compressed(comp, tmp_path / "m"))
    ids = torch.randint(0, 1000, (2, 12))
    assert torch.equal(forward(again.model, again.adapter, ids), forward(comp.model, comp.adapter, ids))
    close = C.compress(tiny_bert, C.Recipe(ffn=0.35, emb_bits=2)).model
    a, b = forward(comp.model, comp.adapter, ids), forward(close, comp.adapter, ids)
    assert torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).min() > 0.9
    C.load_model.cache_clear()
