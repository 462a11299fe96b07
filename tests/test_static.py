"""The static end (compress/techniques/static.py): a token table distilled from the encoder, a sentence the mean of its rows,
healed toward the transformer's sentence embeddings; encoders only."""
import pytest
import torch

import compress as C
from compress.measure import evaluate
from compress.techniques import lowbit, static
from compress.models.adapters import forward


def test_each_row_is_the_weighted_embedding_of_its_one_token_text(tiny_bert):
    table = static.distill_table(tiny_bert)
    assert table.shape == (tiny_bert.vocab_size, tiny_bert.info["hidden"])
    n = tiny_bert.vocab_size
    for t in (0, 101, 2000, n - 1):
        ids = torch.tensor([[101, t, 102]])  # [CLS] t [SEP]
        with torch.no_grad():
            emb = forward(tiny_bert.model, tiny_bert.adapter, ids, torch.ones_like(ids)).mean(1)[0]
        p = (1 / (t + 1)) / sum(1 / r for r in range(1, n + 1))
        torch.testing.assert_close(table[t], emb * static.SIF_A / (static.SIF_A + p), rtol=1e-4, atol=1e-6)


def test_a_sentence_is_the_mean_of_its_tokens_rows_and_only_the_table_is_left(tiny_bert):
    comp = C.compress(tiny_bert, C.Recipe(static=True))
    assert C.numbers(comp)["params"] == tiny_bert.vocab_size * tiny_bert.info["hidden"]
    text = "The dough rests overnight in the fridge."
    ids = tiny_bert.tokenizer(text)["input_ids"]
    want = comp.model.embeddings.word_embeddings.weight[ids].mean(0)
    torch.testing.assert_close(evaluate.embed(comp, [text])[0], torch.nn.functional.normalize(want, dim=0))
    q = C.quality(comp, tiny_bert)
    assert 0 < q["fidelity"] < 1 and set(q) >= {"fidelity", "retrieval_overlap", "fidelity_docs"}


def test_healing_trains_the_table_toward_the_transformer(tiny_bert):
    comp = C.compress(tiny_bert, C.Recipe(static=True, heal_steps=30, heal_lr=1e-2))
    h = comp.applied["heal"]
    assert h["dev_after"] > h["dev_before"] + 0.01
    raw = static.distill_table(tiny_bert)
    assert not torch.equal(comp.model.embeddings.word_embeddings.weight, raw)  # trained, on a copy
    assert torch.equal(static.distill_table(tiny_bert), raw)  # the model's cached table is untouched


def test_int8_and_a_smaller_width_shrink_the_table(tiny_bert):
    full = C.numbers(C.compress(tiny_bert, C.Recipe(static=True)))["size_bytes"]
    int8 = C.numbers(C.compress(tiny_bert, C.Recipe(static=True, quant="int8")))["size_bytes"]
    narrow = C.compress(tiny_bert, C.Recipe(static=True, emb_rank=0.25))
    assert int8 < 0.3 * full and C.numbers(narrow)["size_bytes"] < 0.3 * full


@pytest.mark.parametrize("recipe, says", [(dict(static=True, layers=1), "has no blocks, so fewer layers"),
                                          (dict(static=True, quant="int4"), "has no blocks, so int4")])
def test_combinations_without_blocks_are_refused(recipe, says):
    with pytest.raises(C.CompressError, match=says):
        C.Recipe(**recipe)


def test_a_decoder_is_refused(tiny_gpt):
    with pytest.raises(C.CompressError, match="encoders only"):
        C.compress(tiny_gpt, C.Recipe(static=True))


@pytest.mark.parametrize("bits", [4, 2])
def test_a_low_bit_table_is_the_healed_table_rounded_as_healing_saw_it(tiny_bert, bits):
    r = C.Recipe(static=True, emb_bits=bits, heal_steps=20, heal_lr=1e-2)
    comp = C.compress(tiny_bert, r)
    table = comp.model.embeddings.word_embeddings
    assert isinstance(table, lowbit.LowBitEmbedding) and table.bits == bits
    h = comp.applied["heal"]
    assert h["dev_after"] > h["dev_before"]  # healing trained it with the rounding simulated
    full = C.numbers(C.compress(tiny_bert, C.Recipe(static=True)))["size_bytes"]
    assert C.numbers(comp)["size_bytes"] < (0.2 if bits == 4 else 0.12) * full
    ids = torch.tensor([[101, 7, 2000, 102]])
    float_table = C.compress(tiny_bert, C.Recipe(static=True)).model.embeddings.word_embeddings.weight
    rounded = lowbit.fake_round(float_table, bits, table.group)  # unhealed: the distilled table, rounded
    unhealed = C.compress(tiny_bert, C.Recipe(static=True, emb_bits=bits)).model.embeddings.word_embeddings
    torch.testing.assert_close(unhealed(ids)[0], rounded[ids[0]])


def test_a_low_bit_static_table_saves_and_reloads_as_it_runs(tiny_bert, tmp_path):
    comp = C.compress(tiny_bert, C.Recipe(static=True, emb_bits=2, quant="int8", heal_steps=5, heal_lr=1e-2))
    back = C.load_compressed(C.save_compressed(comp, tmp_path / "s"), [tiny_bert])
    texts = ["A sentence to embed.", "Another one, longer than the first sentence."]
    torch.testing.assert_close(evaluate.embed(back, texts), evaluate.embed(comp, texts))


def test_the_learn_figures_bag_is_the_static_tables_mean_of_the_sentences_rows(tiny_bert):
    from compress.learn import bag
    text = "The dough rests overnight in the fridge."
    d = bag.bag(tiny_bert, text)
    ids = tiny_bert.tokenizer(text, add_special_tokens=False)["input_ids"]
    rows = static.distill_table(tiny_bert)[ids]  # the same rows, SIF-weighted
    want = torch.nn.functional.cosine_similarity(rows.mean(0), evaluate.embed(tiny_bert, [text])[0], dim=0)
    assert d["cosine"] == pytest.approx(float(want), abs=1e-5) and len(d["weight"]) == len(ids)
    assert all(x > y for x, y in zip(bag.bag(tiny_bert, text, 1.0)["weight"], d["weight"]))  # a larger a: all weigh more
    with pytest.raises(C.CompressError, match="no tokens"):
        bag.bag(tiny_bert, "")
