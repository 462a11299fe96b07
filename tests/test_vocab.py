"""Vocabulary pruning (compress/techniques/vocab.py): the word table keeps the healing text's tokens, every other token reads
its nearest kept row; a text of kept tokens gives exactly what the original gives."""
from collections import Counter

import pytest
import torch
import wordfreq

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


def test_output_cover_reads_the_kept_token_the_original_embeds_most_like_the_dropped_one(tiny_bert):
    from compress.techniques.static import distill_table
    comp = C.compress(tiny_bert, C.Recipe(vocab=0.1, vocab_cover="output"))
    near = C.compress(tiny_bert, C.Recipe(vocab=0.1))
    table = comp.model.get_submodule(tiny_bert.adapter.word_embeddings).weight
    full = tiny_bert.model.get_submodule(tiny_bert.adapter.word_embeddings).weight
    keep = vocab.keep_order(tiny_bert.tokenizer, heal_texts(tiny_bert), tiny_bert.vocab_size)[:table.shape[0]]
    out = torch.nn.functional.normalize(distill_table(tiny_bert), dim=-1)  # each token alone, through the original
    dropped = [t for t in range(2000, 30000, 997) if t not in set(keep)][:5]
    for t in dropped:
        want = keep[int((out[keep] @ out[t]).argmax())]
        torch.testing.assert_close(table[comp.model.vocab_index[t].long()], full[want])
        assert comp.model.vocab_index[keep[7]].item() == 7  # a kept token reads its own row
    assert any(comp.model.vocab_index[t] != near.model.vocab_index[t] for t in dropped)  # not nearest's mapping
    assert C.numbers(comp)["size_bytes"] == C.numbers(near)["size_bytes"] and "(output)" in comp.recipe.describe()
    q = C.quality(comp, tiny_bert)
    assert 0.5 < q["fidelity"] < 1 and 0.5 < q["fidelity_docs"] < 1


def test_output_cover_is_refused_on_the_static_table_whose_nearest_row_it_already_is(tiny_bert):
    with pytest.raises(C.CompressError, match="choose vocab_cover nearest"):
        C.compress(tiny_bert, C.Recipe(static=True, vocab=0.1, vocab_cover="output"))
    assert C.refusal(tiny_bert, C.Recipe(static=True, vocab_cover="output")) is None  # no pruning: nothing to cover


@pytest.mark.parametrize("template, want", [(lambda ids: [101] + ids + [102], ([101], [102])),  # BERT
                                            (lambda ids: ids + [102], ([], [102])),  # all after
                                            (lambda ids: ids + [102, 101], ([], [102, 101])),  # XLNet-like
                                            (lambda ids: [101, 101] + ids + [102], ([101, 101], [102]))])
def test_a_one_token_text_sits_where_the_tokenizer_puts_a_word(template, want):
    from compress.techniques import static

    def tok(text, add_special_tokens=True):
        ids = {"the": [7], "": []}[text]
        return {"input_ids": template(ids) if add_special_tokens else ids}
    assert static._template(tok) == want


def test_it_stacks_with_the_tables_bits_int8_and_healing(tiny_bert):
    comp = C.compress(tiny_bert, C.Recipe(vocab=0.1, emb_bits=2, quant="int8", heal_steps=2))
    assert "LowBit" in type(comp.model.get_submodule(tiny_bert.adapter.word_embeddings)).__name__
    assert evaluate.embed(comp, TEXTS).shape == (3, tiny_bert.info["hidden"])
    static = C.compress(tiny_bert, C.Recipe(static=True, vocab=0.1, quant="int8"))
    for cover in ("resplit", "sparse"):  # the static table's rows are covered the same way
        covered = C.compress(tiny_bert, C.Recipe(static=True, vocab=0.1, vocab_cover=cover, quant="int8", heal_steps=2))
        assert evaluate.embed(covered, ["jumping and zooming"]).isfinite().all()
    assert C.numbers(static)["size_bytes"] < 0.15 * C.numbers(C.compress(tiny_bert, C.Recipe(static=True)))["size_bytes"]


def test_a_decoder_is_refused_with_the_reason(tiny_gpt):
    with pytest.raises(C.CompressError, match="every token of the vocabulary"):
        C.compress(tiny_gpt, C.Recipe(vocab=0.5))


@pytest.mark.parametrize("fam, cover", [("roberta", "nearest"), ("mpnet", "nearest"), ("roberta", "resplit")])
def test_positions_read_off_the_ids_survive_pruning(fam, cover, tmp_path):
    """Every token kept, in another order: the table's rows are permuted and the ids mapped at the entrance, so the
    outputs are the original's only if positions come from the ids given (both skip their padding id 1 there)."""
    import copy
    from builders import _tokenizers, build_family
    build_family(fam, tmp_path, _tokenizers((evaluate.ASSETS / "heal" / "sentences.txt").read_text().splitlines()[:300]))
    b = C.load_upload(tmp_path)
    m = vocab.prune(copy.deepcopy(b.model), b.adapter, b, TEXTS, b.vocab_size, cover)
    ids = torch.tensor([[0, 50, 61, 77, 2, 1, 1], [0, 90, 2, 40, 41, 42, 2]])  # specials first: 2 comes early
    assert (m.vocab_index[ids] == 1).any()  # a real token's row is the padding id: positions read off it would skip it
    with torch.no_grad():
        want = forward(b.model, b.adapter, ids)
        torch.testing.assert_close(forward(m, b.adapter, ids), want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(m(input_ids=ids).last_hidden_state, want, atol=1e-3)  # the model's own would not


def _resplit(tiny_bert, frac=0.1, texts=None):
    comp = C.compress(tiny_bert, C.Recipe(vocab=frac, vocab_cover="resplit"), texts=texts)
    texts = texts or heal_texts(tiny_bert)
    keep = vocab.keep_order(tiny_bert.tokenizer, texts, tiny_bert.vocab_size, alphabet=True)
    return comp, keep[:round(frac * tiny_bert.vocab_size)]


def test_resplit_a_dropped_token_reads_the_mean_of_its_kept_pieces(tiny_bert):
    comp, keep = _resplit(tiny_bert, 0.05, ["we play the game", "zooming in"])  # (play, ##ing: the texts' tokens)
    full = tiny_bert.model.get_submodule(tiny_bert.adapter.word_embeddings).weight
    ids = tiny_bert.tokenizer.convert_tokens_to_ids(["playing", "play", "##ing", "the"])
    assert ids[0] not in keep and set(ids[1:]) <= set(keep)  # "playing" dropped, its pieces kept
    assert comp.model.vocab_index[ids[0]].tolist() == [keep.index(ids[1]), keep.index(ids[2]), -1, -1]
    got = {}
    comp.model.embeddings.register_forward_pre_hook(lambda m, a, kw: got.update(kw), with_kwargs=True)
    with torch.no_grad():
        comp.model(input_ids=torch.tensor([ids]))
    want = torch.stack([(full[ids[1]] + full[ids[2]]) / 2, full[ids[1]], full[ids[2]], full[ids[3]]])
    torch.testing.assert_close(got["inputs_embeds"][0], want)


def test_resplit_every_token_of_the_alphabet_re_splits_into_kept_pieces(tiny_bert):
    comp, keep = _resplit(tiny_bert, 0.05)
    tok, index = tiny_bert.tokenizer, comp.model.vocab_index
    kept = {tok.convert_ids_to_tokens(t): r for r, t in enumerate(keep)}
    alphabet = {c for t in tok.convert_ids_to_tokens(keep) for c in t.removeprefix("##")}
    tokens = tok.convert_ids_to_tokens(list(range(tiny_bert.vocab_size)))
    split = [t for t, s in enumerate(tokens) if s not in kept and set(s.removeprefix("##")) <= alphabet
             and not s.startswith("[")]
    assert len(split) > 0.8 * (tiny_bert.vocab_size - len(keep))
    for t in split:
        rows = [r for r in index[t].tolist() if r >= 0]
        pieces = [tokens[keep[r]] for r in rows]
        if len(rows) > 1 or pieces[0].removeprefix("##") == tokens[t].removeprefix("##"):  # (else: over CAP, nearest)
            assert "".join(p.removeprefix("##") for p in pieces) == tokens[t].removeprefix("##")
            assert all(p.startswith("##") == (i > 0 or tokens[t].startswith("##")) for i, p in enumerate(pieces))


def test_english_keep_ranks_the_texts_tokens_by_their_share_of_the_text_plus_of_english(tiny_bert):
    tok, v = tiny_bert.tokenizer, tiny_bert.vocab_size
    shares = vocab.english_shares(tok)
    assert abs(sum(shares.values()) - 1) < 1e-9 and max(shares, key=shares.get) == tok.convert_tokens_to_ids("the")
    share = {w: shares.get(tok.convert_tokens_to_ids(w), 0.0) for w in ("the", "5", "1990", "2019", "of")}
    assert share["5"] > share["2019"] > share["1990"] > 0  # numbers by their own frequency (wordfreq's list writes
    assert share["5"] / share["the"] == pytest.approx(wordfreq.word_frequency("5", "en")  # each digit as 0)
                                                      / wordfreq.word_frequency("the", "en"), rel=0.2)
    order = vocab.keep_order(tok, TEXTS, v, keep="english")
    assert sorted(order) == list(range(v))
    special = [t for t in tok.all_special_ids if 0 <= t < v]
    counts = Counter(t for s in TEXTS for t in tok(s, add_special_tokens=False)["input_ids"])
    score = {t: counts[t] / sum(counts.values()) + shares.get(t, 0.0) for t in counts.keys() | shares.keys()
             if t not in special}  # ([UNK] has a share: English words outside the vocabulary)
    ranked = order[len(special):len(special) + len(score)]
    assert set(ranked) == set(score)
    assert all(score[a] >= score[b] for a, b in zip(ranked, ranked[1:]))  # by that sum, highest first
    people = tok.convert_tokens_to_ids("people")  # everyday English the texts never use: kept early now
    assert people not in counts and order.index(people) < 200 < vocab.keep_order(tok, TEXTS, v).index(people)
    comp = C.compress(tiny_bert, C.Recipe(vocab=0.1, vocab_keep="english"), texts=TEXTS)
    n, full = round(0.1 * v), tiny_bert.model.get_submodule(tiny_bert.adapter.word_embeddings).weight
    table = comp.model.get_submodule(tiny_bert.adapter.word_embeddings).weight
    torch.testing.assert_close(table, full[order[:n]])  # the first n of that order, each its own row
    assert comp.model.vocab_index[people].item() == order.index(people)
    assert C.Recipe(vocab=0.1, vocab_keep="english").describe() == "vocabulary 0.1 (english)"
    old = C.Recipe(vocab=0.1).to_dict()
    del old["vocab_keep"]
    assert C.Recipe.from_dict(old).vocab_keep == "text"  # a recipe saved before it keeps by the text


def test_resplit_kept_tokens_give_the_originals_output_and_an_old_recipe_reads_nearest(tiny_bert):
    comp, keep = _resplit(tiny_bert)
    ids = torch.tensor([tiny_bert.tokenizer("The model is in the file, and it is on the list.")["input_ids"]])
    assert set(ids[0].tolist()) <= set(keep)
    with torch.no_grad():
        torch.testing.assert_close(forward(comp.model, tiny_bert.adapter, ids), forward(tiny_bert.model, tiny_bert.adapter, ids))
    old = C.Recipe(vocab=0.1).to_dict()
    del old["vocab_cover"]
    assert C.Recipe.from_dict(old).vocab_cover == "nearest" == C.Recipe.from_params({"vocab": "0.1"}).vocab_cover
    assert C.Recipe(vocab_cover="resplit").describe() == "original"  # inactive without pruning


def test_sparse_a_dropped_token_reads_the_least_squares_sum_of_its_atoms(tiny_bert):
    comp = C.compress(tiny_bert, C.Recipe(vocab=0.1, vocab_cover="sparse"))
    keep = vocab.cached_order(tiny_bert, heal_texts(tiny_bert))[:round(0.1 * tiny_bert.vocab_size)]
    full = tiny_bert.model.get_submodule(tiny_bert.adapter.word_embeddings).weight.detach()
    index, weight = comp.model.vocab_index.long(), comp.model.vocab_weight.float()
    assert index.shape == weight.shape == (tiny_bert.vocab_size, vocab.ATOMS)
    assert comp.model.vocab_weight.dtype == torch.float16  # stored: 2 bytes a weight
    assert index[keep[7]].tolist() == [7, 0, 0, 0] and weight[keep[7]].tolist() == [1, 0, 0, 0]  # a kept token: itself
    near = vocab.nearest_map(full, keep).long()
    dropped = [t for t in range(0, tiny_bert.vocab_size, 97) if t not in set(keep)]
    for t in dropped:
        atoms = full[keep][index[t]]  # (ATOMS, C), distinct
        assert len(set(index[t].tolist())) == vocab.ATOMS
        left = full[t] - weight[t] @ atoms
        assert (atoms @ left).abs().max() < 2e-2 * full[t].norm() ** 2  # least squares: what is left is orthogonal
        cos = torch.nn.functional.cosine_similarity
        assert cos(weight[t] @ atoms, full[t], dim=0) >= cos(full[keep][near[t]], full[t], dim=0) - 1e-3
    seen = {}  # what the model's entrance passes on for a dropped token: that sum, of the kept table's rows
    parent = tiny_bert.adapter.word_embeddings.rsplit(".", 1)[0]
    comp.model.get_submodule(parent).register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        forward(comp.model, tiny_bert.adapter, torch.tensor([[dropped[0], keep[7]]]))
    table = comp.model.get_submodule(tiny_bert.adapter.word_embeddings).weight
    torch.testing.assert_close(seen["inputs_embeds"][0], torch.stack([
        weight[dropped[0]] @ table[index[dropped[0]]], table[7]]), atol=1e-3, rtol=1e-3)


def test_a_sparse_cover_fitted_before_is_not_fitted_again_and_its_copy_is_the_caller_s(tiny_bert, monkeypatch):
    """An Apply builds its recipe healed and unhealed: the second pursuit over the same table and rows is the first's."""
    table = tiny_bert.model.get_submodule(tiny_bert.adapter.word_embeddings).weight.detach().clone()
    keep, runs = list(range(0, len(table), 9)), []
    vocab._SPARSE.clear()  # (not a new LRU: each registers a named cache, which README's table must name)
    pursuit = vocab.pursuit
    monkeypatch.setattr(vocab, "pursuit", lambda x, a, k: runs.append(len(a)) or pursuit(x, a, k))
    index, weight = vocab.sparse_map(table, keep)
    fitted = len(runs)
    index[:], weight[:] = 0, 0  # the caller's copy: the cache keeps its own
    again, weight2 = vocab.sparse_map(table.clone(), keep)
    assert len(runs) == fitted > 0 and again.any() and weight2.any()
    assert torch.equal(again, vocab._sparse(table, keep)[0])  # what a fit gives
    vocab.sparse_map(table, keep[:-1])  # other rows kept: fitted
    assert len(runs) > fitted and runs[-1] == len(keep) - 1
    table[5, 0] += 1e-3  # another table (one weight moved): fitted
    count = len(runs)
    vocab.sparse_map(table, keep)
    assert len(runs) > count


def test_resplit_is_refused_for_a_tokenizer_without_word_pieces(tiny_bert):
    no_pieces = C.ModelBundle(tiny_bert.model, "no-pieces", tiny_bert.adapter, object(), "h", tiny_bert.info)
    assert vocab.refuse(no_pieces, C.Recipe(vocab=0.5)) is None
    assert "no word pieces" in vocab.refuse(no_pieces, C.Recipe(vocab=0.5, vocab_cover="resplit"))


def test_the_cover_bench_counts_unseen_tokens_and_measures_both_covers(tiny_bert):
    from compress.bench import cover
    share, has = cover.unseen(tiny_bert, ["the train", "the zygote xylophone"], ["the train leaves"])
    assert share == pytest.approx(sum(t not in {"the", "train"} for t in tiny_bert.tokenizer.tokenize(
        "the zygote xylophone")) / (2 + len(tiny_bert.tokenizer.tokenize("the zygote xylophone")))) and has == [False, True]
    rows = cover.rows(tiny_bert, [C.Recipe(vocab=0.1), C.Recipe(vocab=0.1, vocab_cover="resplit")], log=lambda m: None)
    assert rows[0]["resplit"] == 0 < rows[1]["resplit"] < 1
    assert all(0 < r["fidelity_unseen_docs"] < 1 and 0 < r["unseen_docs"] < 0.5 for r in rows)


def test_the_learn_figure_shows_what_each_cover_reads(tiny_bert, tiny_gpt):
    from compress.learn import vocab as LV
    d = LV.cover(tiny_bert, "the dough rests overnight", 0.05, output=True)
    toks = tiny_bert.tokenizer.tokenize("the dough rests overnight")
    assert d["tokens"] == toks and set(d["cosine"]) == set(d["reads"]) == {"nearest", "resplit", "output", "sparse"}
    for c in d["cosine"]:
        for s, kept, reads, cos in zip(toks, d["kept"][c], d["reads"][c], d["cosine"][c]):
            assert (reads == s) == kept and (cos == pytest.approx(1, abs=1e-5)) == kept and -1 <= cos <= 1 + 1e-5
    assert any("+" in r for r in d["reads"]["resplit"]) and not any("+" in r for r in d["reads"]["nearest"])
    assert d["kept"]["output"] == d["kept"]["nearest"] and d["reads"]["output"] != d["reads"]["nearest"]
    dropped = [i for i, k in enumerate(d["kept"]["sparse"]) if not k]  # a weighted sum rebuilds more of its row
    assert dropped and all(d["cosine"]["sparse"][i] >= d["cosine"]["nearest"][i] - 1e-4 for i in dropped)
    assert all(d["reads"]["sparse"][i].count(" ") == 2 * vocab.ATOMS - 1 for i in dropped)  # "+0.41 tea -0.12 ..."
    text = "my grandmother baked cookies for the kids and watched football"  # kept: the order's first n, no other
    got = {}
    for by in vocab.KEEPS:
        n = round(0.05 * tiny_bert.vocab_size)
        kept = set(vocab.keep_order(tiny_bert.tokenizer, heal_texts(tiny_bert), tiny_bert.vocab_size, keep=by)[:n])
        d = LV.cover(tiny_bert, text, 0.05, keep_by=by)
        ids = tiny_bert.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert d["kept"]["nearest"] == [t in kept for t in ids]
        got[by] = sum(d["kept"]["nearest"])
    assert got["english"] > got["text"]  # 'kids', 'football': everyday words our healing text seldom uses
    with pytest.raises(C.CompressError, match="decoder"):
        LV.cover(tiny_gpt, "the dough", 0.5)

