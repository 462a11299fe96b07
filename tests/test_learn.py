"""The Learn page's figure data (compress.learn.figures, learnattn, article, healcurve): each number checked against the
technique it teaches, on tiny random models (fast)."""
import copy
import math

import numpy as np
import pytest
import torch

import compress as C
from compress.learn import article
from compress.bench import healcurve
from compress.techniques import heads, layers, pq
from compress.techniques.pq import PQEmbedding
from compress.learn import figures as L
from compress.learn import attention as A
from compress.techniques.fnet import fourier_mix
from compress.techniques.quantize import int8_weight

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "Let the dough rest in the fridge for at least an hour."


def test_full_rank_reconstructs_the_layer_and_the_error_is_eckart_young(tiny_bert):
    layer = L.linear_layers(tiny_bert)[0]
    full = L.lowrank(tiny_bert, layer, 1.0)
    assert full["rank"] == full["max_rank"] and full["error"] < 1e-3
    np.testing.assert_allclose(full["w_r"], full["w"], atol=1e-5)
    w = tiny_bert.model.get_submodule(layer).weight.detach().double()
    errors = []
    for frac in (0.1, 0.25, 0.5, 0.75):
        d = L.lowrank(tiny_bert, layer, frac)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        r = d["rank"]
        w_r = (u[:, :r] * s[:r]) @ vh[:r]
        assert d["error"] == pytest.approx(float((w - w_r).norm() / w.norm()), rel=1e-4)  # sqrt(1 - energy)
        assert d["params_rank"] == r * (d["m"] + d["n"]) and d["saves"] == (r < d["break_even"])
        errors.append(d["error"])
    assert errors == sorted(errors, reverse=True) and errors[0] > errors[-1]


def test_per_channel_int8_is_what_int8_stores_and_never_worse_than_per_tensor(tiny_bert, minilm):
    layer = L.linear_layers(tiny_bert)[1]
    d = L.quantize_row(tiny_bert, layer, 3, 8)
    w = tiny_bert.model.get_submodule(layer).weight.detach().float()
    np.testing.assert_allclose(d["per_channel"], int8_weight(w)[3].numpy(), atol=1e-7)
    for b in (tiny_bert, minilm):
        lay = L.linear_layers(b)[4 if b is minilm else 1]
        for bits in range(2, 9):
            err = L.quantize_row(b, lay, 0, bits)["matrix_error"]
            assert err["per-channel"] <= err["per-tensor"]
    per_bits = [L.quantize_row(tiny_bert, layer, 3, bits)["matrix_error"]["per-channel"] for bits in range(2, 9)]
    assert per_bits == sorted(per_bits, reverse=True)
    with pytest.raises(C.CompressError, match="rows"):
        L.quantize_row(tiny_bert, layer, 10_000, 8)


def test_word_table_rounding_rows(tiny_bert):
    rows = {r["scheme"]: r for r in L.table_rounding(tiny_bert, 100)}
    rounded = {r["bits"]: r for r in rows.values() if "rows" in r["scheme"] or "int8" in r["scheme"]}
    assert rounded[8]["table error"] < rounded[4]["table error"] < rounded[2]["table error"]
    assert rounded[2]["bytes per row"] < rounded[4]["bytes per row"] < rounded[8]["bytes per row"] < 4 * 64
    assert rounded[4]["group"] == 64 and rounded[4]["groups per row"] == 1  # hidden 64: one group of the whole row
    pq4, pq8 = rows["product-quantized, 4 weights a code"], rows["product-quantized, 8 weights a code"]
    table = tiny_bert.model.get_submodule(tiny_bert.adapter.word_embeddings).weight.detach()
    for d, r in ((4, pq4), (8, pq8)):  # the stored table's bytes (codes and fp16 codebooks) per row, and its ratio
        stored = sum(t.numel() * t.element_size() for t in C.PQEmbedding.from_embedding(
            torch.nn.Embedding.from_pretrained(table[:300]), d, fitted=False).state_dict().values())
        per_row = 64 // d + (64 // d) * 256 * d * 2 / table.shape[0]
        assert stored == 300 * 64 // d + (64 // d) * 256 * d * 2 and r["bytes per row"] == round(per_row, 2)
        assert r["x smaller than fp32"] == round(4 * 64 / per_row, 2) and r["bits"] == round(8 * per_row / 64, 2)
    assert 2 < pq4["bits"] < 2.2 and 1 < pq8["bits"] < 1.2  # a little over 8 / d: the codebooks
    assert 0 < pq4["table error"] < pq8["table error"] < 1  # fewer weights a code: closer (on rows it never saw)
    errs, books = tiny_bert.cache[("learn_table_errors", tiny_bert.content_hash)]
    row = PQEmbedding.lookup(pq.encode(table[100:101], books[4]).long(), books[4].float())  # the row's nearest codes
    assert pq4["row error"] == round(float((row - table[100]).norm() / table[100].norm()), 5)


def test_every_pq_scheme_the_width_takes_is_shown():
    """Each of pq.DIMS whose pieces divide the width is a row (a width of 48: 4, 6, 8 and 12 weights a code; 64: 4
    and 8); a row's bits a little over 8 / d (the codebooks' share), its error measured (tinygpt's 256 rows: each its
    own code, so only fp16's rounding; which scheme is closer is test_word_table_rounding_rows')."""
    from conftest import make_tiny_gpt
    for width, dims in ((48, (4, 6, 8, 12)), (64, (4, 8))):
        rows = [r for r in L.table_rounding(make_tiny_gpt(width=width), 3) if r["scheme"].startswith("product")]
        assert [r["group"] for r in rows] == list(dims) and set(dims) <= set(pq.DIMS)
        assert all(8 / r["group"] < r["bits"] and 0 < r["table error"] < 0.01 for r in rows)


def test_a_small_tables_pq_error_is_measured_not_zero(tiny_gpt):
    """tinygpt's 256 rows are all fitted (no others to measure on): each row its own code, a small error, not 0."""
    rows = {r["scheme"]: r for r in L.table_rounding(tiny_gpt, 5)}
    for d in (4, 8):
        assert 0 < rows[f"product-quantized, {d} weights a code"]["table error"] < 0.01


def _eager_attentions(bundle, ids):
    m = copy.deepcopy(bundle.model)
    m.set_attn_implementation("eager")
    return [a[0].detach().numpy() for a in m(input_ids=ids, output_attentions=True).attentions]


def test_attention_maps_are_the_models_own(tiny_bert):
    ids = tiny_bert.tokenizer([TEXT], return_tensors="pt")["input_ids"]
    for layer, theirs in enumerate(_eager_attentions(tiny_bert, ids)):
        att = A.layer_attention(tiny_bert, TEXT, layer)
        assert att["T"] == ids.shape[1] and att["tokens"][0] == "[CLS]" and att["layer"] == layer
        np.testing.assert_allclose(att["maps"], theirs, atol=1e-5)
        assert A.layer_attention(tiny_bert, TEXT, layer) is att  # cached per (sentence, layer)


def test_attention_maps_are_bounded_before_and_after_they_are_computed(tiny_bert, monkeypatch):
    """One layer at a time; a layer whose maps pass the byte bound is refused before the forward; the model's cache
    of maps stays within its byte bound (a 96-layer x 128-head upload kept 768 MiB a sentence, 4 sentences)."""
    monkeypatch.setitem(tiny_bert.cache, "learn_attention", {})
    one = A.layer_attention(tiny_bert, TEXT, 0)
    assert one["maps"].shape == (4, one["T"], one["T"]) and A.layer_bytes(4, one["T"]) == one["maps"].nbytes
    monkeypatch.setattr(A, "MAX_LAYER_BYTES", one["maps"].nbytes - 1)
    monkeypatch.setattr(A, "forward", lambda *a: pytest.fail("the forward ran past the bound"))
    with pytest.raises(C.CompressError, match="MB of attention maps"):
        A.layer_attention(tiny_bert, TEXT, 1)
    with pytest.raises(C.CompressError, match="layer must be from 0 to 1"):
        A.layer_attention(tiny_bert, TEXT, 2)
    with pytest.raises(C.CompressError, match="characters"):
        A.layer_attention(tiny_bert, "x" * (A.MAX_CHARS + 1), 0)
    monkeypatch.undo()
    monkeypatch.setitem(tiny_bert.cache, "learn_attention", {})
    monkeypatch.setattr(A, "MAX_CACHE_BYTES", 2 * one["maps"].nbytes)
    for i in range(5):
        A.layer_attention(tiny_bert, f"{TEXT} {'a' * i}", i % 2)
    kept = tiny_bert.cache["learn_attention"]
    assert 1 <= len(kept) <= 2 and sum(v["maps"].nbytes for v in kept.values()) <= A.MAX_CACHE_BYTES
    assert A.cached(tiny_bert, f"{TEXT} aaaa", 0) is not None and A.cached(tiny_bert, TEXT, 0) is None


def test_decoder_attention_is_causal(tiny_gpt):
    for layer in range(2):
        att = A.layer_attention(tiny_gpt, "The for statement", layer)
        assert att["T"] == len("The for statement")
        np.testing.assert_allclose(att["maps"].sum(-1), 1, atol=1e-5)
        assert np.abs(np.triu(att["maps"], 1)).max() == 0  # no token reads a later one
    with pytest.raises(C.CompressError):
        A.layer_attention(tiny_gpt, "   ", 0)


def test_the_dft_matrices_are_what_fnet_mixes():
    torch.manual_seed(0)
    x = torch.randn(1, 9, 16, dtype=torch.float64)
    cos, sin = A.dft(9)
    y = torch.fft.fft(x, dim=-1)[0].numpy()  # the hidden-dimension DFT first
    np.testing.assert_allclose(cos @ y.real + sin @ y.imag, fourier_mix(x)[0].numpy(), atol=1e-9)
    crossings = [A.sign_changes(A.dft(32)[0][k]) for k in range(1, 9)]
    assert crossings == sorted(crossings) and crossings[0] < crossings[-1]


def test_efficient_attention_patterns(tiny_bert):
    m = A.layer_attention(tiny_bert, TEXT, 0)["maps"][0]
    t = m.shape[0]
    by_w = [A.patterns(m, w) for w in (1, 2, 4, 8, t)]
    fixed = [p["fixed"]["density"] for p in by_w]
    low = [p["low-rank"]["error"] for p in by_w]
    assert fixed == sorted(fixed) and fixed[-1] == 1.0
    assert all(a >= b - 1e-9 for a, b in zip(low, low[1:])) and low[-1] < 1e-6
    assert by_w[-1]["learned"]["error"] < 1e-6  # every key kept: the map itself
    assert set(by_w[0]) == set(A.PATTERNS) and all(v[2] for v in A.PATTERNS.values())  # each one in the library
    assert all(v[2].split()[0].rstrip(",") in C.FIELDS["attention"].choices for v in A.PATTERNS.values() if v[2])
    with pytest.raises(C.CompressError):
        A.patterns(m, t + 1)
    later = np.triu(np.ones((t, t), dtype=bool), 1)  # a decoder's patterns never reach a later token
    causal = A.patterns(np.tril(m) / np.tril(m).sum(1, keepdims=True), 4, causal=True)
    assert all(not causal[k]["grid"][later].any() for k in ("fixed", "strided", "learned"))
    assert by_w[2]["strided"]["grid"][later].any()  # (an encoder's do)


def test_heads_removed_are_the_ones_prune_heads_deletes(tiny_bert):
    s = L.head_importance(tiny_bert, "weight")
    assert s.shape == (2, 4) and np.allclose(s.max(1), 1)
    for keep in (1, 2, 3, 4):
        gone = L.heads_removed(s, keep)
        assert gone.sum() == 2 * (4 - keep)
        assert all(s[i][~gone[i]].min() >= s[i][gone[i]].max() for i in range(2) if gone[i].any())
    model = heads.prune_heads(copy.deepcopy(tiny_bert.model), tiny_bert.adapter, 2)
    assert heads.heads_per_layer(model, tiny_bert.adapter) == [2, 2]
    g = L.head_importance(tiny_bert, "gradient")  # on a copy: the shared original keeps no hook
    assert g.shape == (2, 4) and not tiny_bert.model.encoder.layer[0].attention.output.dense._forward_pre_hooks


def test_ffn_cut_and_layers_kept(tiny_bert):
    mass = [L.ffn_cut(tiny_bert, 0, f)["mass_kept"] for f in (0.1, 0.3, 0.6, 1.0)]
    assert mass == sorted(mass) and mass[-1] == pytest.approx(1.0)
    assert L.ffn_cut(tiny_bert, 0, 0.5)["kept"] == 64
    d = L.layers_kept(tiny_bert, 1)
    assert d["kept"] == layers.choose_layers(L.influence(tiny_bert), 1)
    assert L.layers_kept(tiny_bert, 2)["lowest_kept"] <= d["lowest_kept"]


def test_prepare_fills_what_the_page_reads(tiny_gpt):
    b = copy.copy(tiny_gpt)
    b.cache = {}
    assert not L.prepared(b)
    L.prepare(b)
    assert L.prepared(b)


def test_article_table_says_the_difference_in_words(tiny_bert, tiny_gpt):
    measured = {"dynamic int8": {"x smaller": 3.87, "x faster": 1.67, "fidelity": 0.9775},
                "fewer heads + narrower FFN": {"x smaller": 1.2, "x faster": 2.5},
                "FNet": {"skipped": "a reason"}}
    rows = {r["technique"]: r for r in article.table(tiny_bert, measured)}
    assert set(rows) == set(article.CLAIMS)
    assert list(next(iter(rows.values())))[:5] == ["technique", "claimed size", "measured size", "claimed speed",
                                                   "measured speed"]  # each claim beside its measurement
    assert "as claimed (~4x)" in rows["dynamic int8"]["in plain words"]
    assert "below the claimed ~2x" in rows["dynamic int8"]["in plain words"]  # 1.67x faster vs ~2x
    assert "below the claimed ~2x" in rows["fewer heads + narrower FFN"]["in plain words"]
    assert "as claimed (2-3x)" in rows["fewer heads + narrower FFN"]["in plain words"]
    assert rows["FNet"]["in plain words"].startswith("does not apply")
    assert rows["all stacked"]["in plain words"] == "not measured yet"
    assert article.recipes(tiny_bert)["fewer heads + narrower FFN"] == C.Recipe(heads=2, ffn=0.5)
    stored = [{"model": "tiny-bert", "recipe_json": C.Recipe(quant="int8").to_json(), "x smaller": 3.9},
              {"model": "other", "recipe_json": C.Recipe(runtime="freeze").to_json(), "x faster": 1.2}]
    assert list(article.stored(tiny_bert, stored)) == ["dynamic int8"]
    int8 = C.Recipe(quant="int8").to_json()  # newest first: a busy machine's timing, then an idle one's
    busy = {"model": "tiny-bert", "recipe_json": int8, "x faster": 0.8, "timing": "unreliable: other programs used 70%"}
    idle = {"model": "tiny-bert", "recipe_json": int8, "x faster": 1.66, "timing": "reliable"}
    assert article.stored(tiny_bert, [busy, idle])["dynamic int8"] is idle  # the reliable one grades the article
    assert article.stored(tiny_bert, [idle, busy])["dynamic int8"] is idle
    only = {r["technique"]: r for r in article.table(tiny_bert, article.stored(tiny_bert, [busy]))}["dynamic int8"]
    assert only["measured speed"] == "0.80x (unreliable)"
    assert "timing unreliable: other programs" in only["in plain words"]
    assert list(article.measure(tiny_gpt, only=["dynamic int8"])) == ["dynamic int8"]  # the missing rows only
    got = article.measure(tiny_gpt)  # FNet refused for a decoder, the rest measured
    assert "future tokens" in got["FNet"]["skipped"] and got["dynamic int8"]["x smaller"] > 2


def test_the_article_keeps_its_rows_in_the_store_and_finds_them_again(tiny_bert, tmp_path, monkeypatch):
    """Through the store's public API only (record_apply / applies): a skipped technique is not kept."""
    monkeypatch.setenv("COMPRESS_DATA", str(tmp_path))
    monkeypatch.delenv("COMPRESS_STORAGE", raising=False)
    int8 = C.Recipe(quant="int8").to_json()
    article.record("reader", tiny_bert, {"dynamic int8": {"x smaller": 3.9, "recipe_json": int8},
                                         "FNet": {"skipped": "a reason"}})
    got = article.stored(tiny_bert)
    assert list(got) == ["dynamic int8"] and got["dynamic int8"]["x smaller"] == 3.9
    assert got["dynamic int8"]["session"] == "reader" and got["dynamic int8"]["recipe_json"] == int8


def test_shipped_healing_curves():
    for model, recipe in healcurve.SHIPPED.items():
        c = healcurve.shipped(model)
        assert c is not None and C.Recipe.from_json(c["recipe"]).heal_steps == c["steps"] > 0
        dev = [h["dev"] for h in c["history"]]
        better = max if c["metric"] == "fidelity" else min
        assert better(dev) != dev[0] and "machine" in c
        assert C.Recipe.from_json(c["recipe"]).rank == recipe.rank
    assert healcurve.shipped("an-upload") is None
    res = {"metric": "fidelity", "history": [{"step": 0, "dev": 0.5}], "steps_run": 0}
    assert healcurve.from_result("m", C.Recipe(), res)["source"].startswith("a healing run")


def test_short_names():
    assert L.short("encoder.layer.3.attention.self.query") == "3.attention.self.query"
    assert math.isclose(L.CORNER, 48)


def test_the_healing_block_map_is_the_blocks_fewer_layers_keeps_and_what_healing_matches(tiny_bert, tiny_gpt):
    """Learn's healing table: kept block i learns the original block the layers step kept i-th (the model's own
    kept_blocks after compress, which healing indexes the teacher's hidden states by); a decoder has no such map."""
    b = copy.copy(tiny_bert)
    b.cache = {}
    n = tiny_bert.info["layers"]
    for k in range(1, n + 1):
        rows = L.block_map(b, k)
        kept = C.compress(b, C.Recipe(layers=k)).model.kept_blocks
        assert [r["kept block"] for r in rows] == list(range(k))
        assert [r["learns original block"] for r in rows] == kept
        scores = b.cache["block_influence"]
        assert [r["original block's influence"] for r in rows] == [round(scores[j], 4) for j in kept]
    with pytest.raises(C.CompressError, match="encoder's blocks"):
        L.block_map(tiny_gpt, 1)
    with pytest.raises(C.CompressError, match="encoder's blocks"):
        L.block_map(b, n + 1)
