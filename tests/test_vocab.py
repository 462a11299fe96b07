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


@pytest.mark.parametrize("fam", ["roberta", "mpnet"])
def test_positions_read_off_the_ids_survive_pruning(fam, tmp_path):
    """Every token kept, in another order: the table's rows are permuted and the ids mapped at the entrance, so the
    outputs are the original's only if positions come from the ids given (both skip their padding id 1 there)."""
    import copy
    from builders import _tokenizers, build_family
    build_family(fam, tmp_path, _tokenizers((evaluate.ASSETS / "heal" / "sentences.txt").read_text().splitlines()[:300]))
    b = C.load_upload(tmp_path)
    m = vocab.prune(copy.deepcopy(b.model), b.adapter, b, TEXTS, b.vocab_size)
    ids = torch.tensor([[0, 50, 61, 77, 2, 1, 1], [0, 90, 2, 40, 41, 42, 2]])  # specials first: 2 comes early
    assert (m.vocab_index[ids] == 1).any()  # a real token's row is the padding id: positions read off it would skip it
    with torch.no_grad():
        want = forward(b.model, b.adapter, ids)
        torch.testing.assert_close(forward(m, b.adapter, ids), want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(m(input_ids=ids).last_hidden_state, want, atol=1e-3)  # the model's own would not
