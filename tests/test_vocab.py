"""Vocabulary pruning (compress/techniques/vocab.py): the word table keeps the healing text's tokens, every other token reads
its nearest kept row; a text of kept tokens gives exactly what the original gives."""
import pytest
import torch

import compress as C
from compress.measure import evaluate
from compress.techniques import vocab
from compress.models.adapters import forward
from compress.techniques.heal import heal_texts

TEXTS = ["The dough rests overnight in the fridge.", "The train leaves at noon.", "the the the dough"]


def test_order_is_specials_then_the_texts_tokens_by_count_then_the_vocabulary(tiny_bert):
    tok = tiny_bert.tokenizer
    order = vocab.keep_order(tok, TEXTS, tiny_bert.vocab_size)
    assert sorted(order) == list(range(tiny_bert.vocab_size))  # every token once
    special = set(tok.all_special_ids)
    assert set(order[:len(special)]) == special
    the = tok.convert_tokens_to_ids("the")
    seen = {t for s in TEXTS for t in tok(s, add_special_tokens=False)["input_ids"]}
    assert order[len(special)] == the  # the most frequent token of the texts comes first
    assert set(order[len(special):len(special) + len(seen)]) == seen
    assert tok.convert_ids_to_tokens(order[-1]).startswith("[unused")  # placeholders last


def test_kept_tokens_give_the_originals_output_and_others_read_their_nearest_row(tiny_bert):
    comp = C.compress(tiny_bert, C.Recipe(vocab=0.1))
    n = round(0.1 * tiny_bert.vocab_size)
    table = comp.model.get_submodule(tiny_bert.adapter.word_embeddings).weight
    assert table.shape[0] == n and comp.model.vocab_index.dtype == torch.int16
    full = tiny_bert.model.get_submodule(tiny_bert.adapter.word_embeddings).weight
    kept = set(vocab.keep_order(tiny_bert.tokenizer, heal_texts(tiny_bert), tiny_bert.vocab_size)[:n])
    ids = torch.tensor([tiny_bert.tokenizer("The model is in the file, and it is on the list.")["input_ids"]])
    assert set(ids[0].tolist()) <= kept
    with torch.no_grad():
        torch.testing.assert_close(forward(comp.model, tiny_bert.adapter, ids), forward(tiny_bert.model, tiny_bert.adapter, ids))
    unit = torch.nn.functional.normalize(full, dim=-1)
    for t in [t for t in range(2000, 30000, 997) if t not in kept][:5]:  # a dropped token: the kept row of highest cosine
        row = comp.model.vocab_index[t].item()
        torch.testing.assert_close(table[row], full[sorted(kept, key=lambda k: -(unit[k] @ unit[t]).item())[0]])
    assert C.numbers(comp)["size_bytes"] < 0.3 * C.numbers(tiny_bert)["size_bytes"]
    q = C.quality(comp, tiny_bert)
    assert 0.5 < q["fidelity"] < 1 and 0.5 < q["fidelity_docs"] < 1


def test_it_stacks_with_the_tables_bits_int8_and_healing(tiny_bert):
    comp = C.compress(tiny_bert, C.Recipe(vocab=0.1, emb_bits=2, quant="int8", heal_steps=2))
    assert "LowBit" in type(comp.model.get_submodule(tiny_bert.adapter.word_embeddings)).__name__
    assert evaluate.embed(comp, TEXTS).shape == (3, tiny_bert.info["hidden"])
    static = C.compress(tiny_bert, C.Recipe(static=True, vocab=0.1, quant="int8"))
    assert C.numbers(static)["size_bytes"] < 0.15 * C.numbers(C.compress(tiny_bert, C.Recipe(static=True)))["size_bytes"]


def test_a_decoder_is_refused_with_the_reason(tiny_gpt):
    with pytest.raises(C.CompressError, match="every token of the vocabulary"):
        C.compress(tiny_gpt, C.Recipe(vocab=0.5))
