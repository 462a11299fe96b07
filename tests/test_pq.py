"""Product quantization of the word table (compress/techniques/pq.py): k-means codes, the stored table, its size, what
it keeps against rounded rows at the same bits, the refusals, healing around it and its zip."""
import pytest
import torch

import compress as C
from conftest import as_bundled
from compress.techniques import pq
from compress.techniques.lowbit import fake_round
from compress.techniques.pq import PQEmbedding
from compress.models.adapters import forward


@pytest.fixture
def bundled(tiny_bert, monkeypatch):
    yield from as_bundled(monkeypatch, {"tiny-bert": tiny_bert})


def _table(bundle):
    return bundle.model.get_submodule(bundle.adapter.word_embeddings).weight.detach()


def test_kmeans_codes_are_each_rows_nearest_centroid_and_repeat_exactly():
    x = torch.randn(600, 4, generator=torch.Generator().manual_seed(1))
    c, a = pq.kmeans(x)
    assert c.shape == (256, 4) and torch.equal(c, c.half().float())  # stored in fp16: rounded before the codes
    assert torch.equal(a, torch.cdist(x, c).argmin(1))
    c2, a2 = pq.kmeans(x)
    assert torch.equal(c, c2) and torch.equal(a, a2)  # seeded: a replay fits the same codes
    err = lambda cents, codes: float(((cents[codes] - x) ** 2).sum())  # noqa: E731
    first = pq.kmeans(x, iters=0)
    assert err(c, a) < 0.8 * err(*first)  # Lloyd's iterations lower the error from the drawn rows


def test_the_grouped_argmin_is_torchs_argmin_ties_included():
    """k-means' nearest code: the first of equal minima, as torch's argmin, on random and on tied distances."""
    torch.manual_seed(0)
    for d in (torch.randn(500, 256), torch.randint(0, 3, (500, 256)).float(), torch.zeros(7, 256),
              torch.randn(9, 100)):  # (100 columns: not in groups of 32, argmin itself)
        assert torch.equal(pq.first_min(d), d.argmin(-1))
    d = torch.ones(3, 256)
    d[0, 255], d[1, [40, 33]], d[2, [31, 32]] = 0, -1, 0.5  # the last column; two equal in a group; across groups
    assert pq.first_min(d).tolist() == [255, 33, 31]


def test_fewer_rows_than_codes_still_give_256_codes_and_exact_rows():
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(2))
    c, a = pq.kmeans(x)
    assert c.shape == (256, 8) and torch.equal(a, torch.arange(10))  # every row its own code; any byte names a code
    assert torch.allclose(c[a], x, atol=1e-2)


def test_table_stores_codes_and_codebooks_and_reads_their_rows(tiny_bert):
    c = C.compress(tiny_bert, C.Recipe(emb_pq=4))
    emb = c.model.get_submodule(tiny_bert.adapter.word_embeddings)
    w = _table(tiny_bert)
    v, width = w.shape
    assert isinstance(emb, PQEmbedding) and emb.codes.dtype == torch.uint8 and emb.codebook.dtype == torch.float16
    assert emb.codes.shape == (v, width // 4) and emb.codebook.shape == (width // 4, 256, 4)
    ids = torch.tensor([[0, 5, 100, v - 1]])
    assert torch.equal(pq.encode(w[ids[0]], emb.codebook), emb.codes[ids[0]].long())  # each piece's nearest code
    book = emb.codebook.float()
    want = torch.stack([torch.cat([book[s, int(emb.codes[i, s])] for s in range(width // 4)]) for i in ids[0]])
    assert torch.equal(emb(ids)[0], want)
    assert float((want - w[ids[0]]).norm() / w[ids[0]].norm()) < 0.5
    table_bytes = sum(t.numel() * t.element_size() for t in emb.state_dict().values())
    assert table_bytes == v * width // 4 + width // 4 * 256 * 4 * 2  # a byte a code, the fp16 codebook
    assert C.count_params(c.model) == C.count_params(tiny_bert.model)  # the same weights, stored otherwise
    assert C.numbers(c)["size_bytes"] < C.numbers(tiny_bert)["size_bytes"]


def test_at_the_same_bits_codes_keep_more_of_minilms_table_than_rounded_rows(minilm):
    """MiniLM's table (a sample of its rows, for time): 4 weights a code (2 bits a weight) against 2-bit rows, and
    8 and 12 weights a code (1 and 0.67 bits) against them too; fewer weights a code is closer."""
    w = _table(minilm)[torch.randperm(30522, generator=torch.Generator().manual_seed(0))[:2048]].float()
    rel = lambda r: float((r - w).norm() / w.norm())  # noqa: E731
    two_bit, pq4, pq8, pq12 = rel(fake_round(w, 2, 128)), *(rel(pq.reconstruct(w, d)) for d in (4, 8, 12))
    assert pq4 < 0.8 * two_bit and pq4 < pq8 < pq12 < 1


def test_the_most_frequent_rows_read_their_own_finer_codes_from_int8_codebooks(tiny_bert):
    """emb_pq_top: a pruned table's first rows (its most frequent) at 4 weights a code, the rest at 8, each tier
    clustered on its own rows; both tiers' codebooks int8 at one fp16 scale a slice, read as exactly the centroids
    k-means assigned the codes to; the table's bytes are its codes and codebooks."""
    c = C.compress(tiny_bert, C.Recipe(vocab=0.5, emb_pq=8, emb_pq_top=10))
    emb, kept = c.model.get_submodule(tiny_bert.adapter.word_embeddings), 15261
    top, width = round(0.1 * 30522), 64
    assert emb.top == top and emb.codes.shape == (kept - top, 8) and emb.top_codes.shape == (top, 16)
    assert emb.codebook.dtype == emb.top_codebook.dtype == torch.int8 and emb.scale.dtype == torch.float16
    w = C.compress(tiny_bert, C.Recipe(vocab=0.5)).model.get_submodule(tiny_bert.adapter.word_embeddings).weight
    for rows, d, sl in ((w[:top], 4, slice(0, top)), (w[top:], 8, slice(top, kept))):
        got = emb(torch.arange(kept)[sl][None])[0]
        want = torch.cat([c[a] for c, a in (pq.kmeans(rows[:, i:i + d].detach().contiguous(), int8=True)
                                             for i in range(0, width, d))], 1)
        assert torch.equal(got, want)  # each row: its own tier's codes, the centroids k-means read them from
    w = w.detach()
    assert float((got - w[top:]).norm() / w[top:].norm()) > float((emb(torch.arange(top)[None])[0] - w[:top]).norm()
                                                                    / w[:top].norm())  # the top rows are closer
    stored = sum(t.numel() * t.element_size() for t in emb.state_dict().values())
    assert stored == (kept - top) * 8 + top * 16 + 8 * 256 * 8 + 16 * 256 * 4 + 2 * width * 2
    assert C.count_params(c.model) == kept * width + C.count_params(tiny_bert.model) - 30522 * width


@pytest.fixture
def narrow(tiny_bert, monkeypatch):
    """A 48-wide BERT (12 divides its width, 64 does not) registered as a bundled original."""
    from transformers import BertConfig, BertModel
    from compress.models.bundle import ModelBundle
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tiny_bert.vocab_size, hidden_size=48, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=96, max_position_embeddings=128)
    b = ModelBundle(BertModel(cfg, add_pooling_layer=False).eval(), "tiny-bert-48", tiny_bert.adapter,
                    tiny_bert.tokenizer, "tiny-bert-48-hash", {**tiny_bert.info, "hidden": 48, "layers": 1})
    for bundles in as_bundled(monkeypatch, {"tiny-bert-48": b}):
        yield bundles["tiny-bert-48"]


def test_twelve_weights_a_code_below_a_finer_tier_saves_and_reloads(narrow, tiny_bert, tmp_path):
    """12 weights a code (0.67 bits a weight) for the rows past the most frequent, which keep 4: a 48-wide BERT
    (12 divides it, 64 does not) stores 4 codes a row and 12 a top row, and its zip reloads to the same outputs."""
    comp = C.compress(narrow, C.Recipe(vocab=0.5, emb_pq=12, emb_pq_top=10))
    emb, top = comp.model.get_submodule(narrow.adapter.word_embeddings), round(0.1 * 30522)
    assert emb.codes.shape == (15261 - top, 48 // 12) and emb.top_codes.shape == (top, 48 // 4)
    assert "12 a code" in pq.label(12) and "0.667 bits" in pq.label(12)
    assert "pieces of 12 weights do not divide" in C.refusal(tiny_bert, C.Recipe(emb_pq=12))
    ids = narrow.tokenizer(["a coarser code for the rarer rows"], return_tensors="pt")["input_ids"]
    back = C.load_compressed(C.save_compressed(comp, tmp_path / "m.zip"))
    with torch.no_grad():
        assert torch.equal(forward(back.model, narrow.adapter, ids), forward(comp.model, narrow.adapter, ids))


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_a_two_tier_table_saves_exports_and_reloads(bundled, tiny_bert, tmp_path, runtime):
    """The int8 codebooks stay int8 in the ONNX export (ONNX Runtime's int8 pass leaves their Gathers alone) and
    the zip reloads to the same outputs."""
    import onnx
    comp = C.compress(tiny_bert, C.Recipe(vocab=0.5, emb_pq=8, emb_pq_top=5, quant="int8", runtime=runtime))
    assert comp.applied["runtime_applied"] == runtime, comp.applied.get("runtime_reason")
    ids = tiny_bert.tokenizer(["the most frequent rows at two bits", "zebra xylophone"], return_tensors="pt",
                              padding=True)["input_ids"]
    eager = C.compress(tiny_bert, C.Recipe(vocab=0.5, emb_pq=8, emb_pq_top=5, quant="int8"))
    with torch.no_grad():
        a, e = forward(comp.model, tiny_bert.adapter, ids), forward(eager.model, tiny_bert.adapter, ids)
    assert float(torch.nn.functional.cosine_similarity(a.flatten(), e.flatten(), dim=0)) > 0.99
    if runtime == "onnxruntime":
        books = [list(t.dims) for t in onnx.load_model_from_string(comp.model.onnx).graph.initializer
                 if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2 and t.dims[0] % 256 == 0]
        assert sorted(books) == [[8 * 256, 8], [16 * 256, 4]]  # the two codebooks, once each, in 8 bits
    back = C.load_compressed(C.save_compressed(comp, tmp_path / "m.zip"))
    with torch.no_grad():
        assert torch.equal(forward(back.model, tiny_bert.adapter, ids), a)


@pytest.mark.parametrize("recipe, match", [
    (dict(emb_pq=8, emb_bits=2), "one way"), (dict(emb_pq=8, emb_rank=0.5), "one way"),
    (dict(emb_pq=8, static=True), "static table"), (dict(emb_pq=8, emb_pq_top=20, vocab=0.2), "keep more of the")])
def test_combinations_are_refused_in_one_line(recipe, match):
    with pytest.raises(C.CompressError, match=match):
        C.Recipe(**recipe)


def test_a_width_the_pieces_do_not_divide_is_refused(tiny_bert):
    assert "64 wide: pieces of 6 weights do not divide them" in C.refusal(tiny_bert, C.Recipe(emb_pq=6))
    with pytest.raises(C.CompressError, match="do not divide"):
        C.compress(tiny_bert, C.Recipe(emb_pq=6))


def test_a_tied_table_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel
    from compress.models.adapters import ADAPTERS, conv1d_to_linear
    m = conv1d_to_linear(GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2)))
    with pytest.raises(C.CompressError, match="no output layer shares"):  # codes would change the LM head too
        C.pq_embeddings(m, ADAPTERS["gpt2"], 8)


def test_healing_trains_the_blocks_around_the_codes(tiny_bert):
    from compress.techniques.heal import trainable
    c = C.compress(tiny_bert, C.Recipe(layers=1, emb_pq=8, heal_steps=3, heal_lr=1e-2))
    emb = c.model.get_submodule(tiny_bert.adapter.word_embeddings)
    codes, book, _ = pq.fit(_table(tiny_bert), 8)
    assert torch.equal(emb.codes, codes) and torch.equal(emb.codebook, book)  # the table is frozen
    losses = [h["loss"] for h in c.applied["heal"]["history"] if h["loss"] is not None]
    assert losses and all(x == x and x < float("inf") for x in losses)
    names = [n for n, _ in trainable(c.model, tiny_bert.adapter)]
    assert names and all(n.startswith(tiny_bert.adapter.blocks) for n in names)  # the blocks learn, not the table


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_zip_round_trip_reads_the_saved_codes(bundled, tiny_bert, tmp_path, monkeypatch, runtime):
    comp = C.compress(tiny_bert, C.Recipe(emb_pq=8, quant="int8", heal_steps=3, runtime=runtime))
    assert comp.applied["runtime_applied"] == runtime, comp.applied.get("runtime_reason")
    path = C.save_compressed(comp, tmp_path / "m.zip")
    if runtime == "eager":  # the replay builds an empty table: the file's codes fill it (no clustering on load)
        monkeypatch.setattr(pq, "fit", lambda *a: pytest.fail("clustered on load"))
    back = C.load_compressed(path)
    ids = tiny_bert.tokenizer(["a table of shared codes"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = forward(comp.model, tiny_bert.adapter, ids), forward(back.model, tiny_bert.adapter, ids)
    assert torch.equal(a, b)


def test_any_byte_of_an_uploaded_zips_codes_names_a_code(bundled, tiny_bert, tmp_path):
    """Codes are bytes and every slice has 256 codes: a zip whose codes were all set to 255 loads and reads each
    slice's last code (a NaN codebook is refused: test_hostile_zips)."""
    import io
    import zipfile
    from safetensors.torch import load as st_load, save as st_save
    path = C.save_compressed(C.compress(tiny_bert, C.Recipe(emb_pq=8)), tmp_path / "m.zip")
    files = {i.filename: zipfile.ZipFile(path).read(i) for i in zipfile.ZipFile(path).infolist()}
    raw = files["weights.safetensors"]
    meta = __import__("json").loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    t = st_load(raw)
    key = next(k for k in t if k.endswith("word_embeddings.codes"))
    t[key] = torch.full_like(t[key], 255)
    files["weights.safetensors"] = st_save(t, metadata=meta)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    (tmp_path / "codes.zip").write_bytes(out.getvalue())
    emb = C.load_compressed(tmp_path / "codes.zip").model.get_submodule(tiny_bert.adapter.word_embeddings)
    assert torch.equal(emb(torch.tensor([[7]]))[0, 0], emb.codebook[:, 255].float().flatten())


def test_the_onnx_export_keeps_the_codebooks_in_fp16_and_unrounded(tiny_bert):
    """The codebooks are read in fp16 and cast after the lookup, so the export holds them in fp16 (not a folded float
    copy) and ONNX Runtime's int8 pass leaves them alone: ONNX Runtime gives the eager model's outputs."""
    import onnx
    from compress.outputs.export import OrtModel
    c = C.compress(tiny_bert, C.Recipe(emb_pq=8, quant="int8", runtime="onnxruntime"))
    assert isinstance(c.model, OrtModel)
    g = onnx.load_model_from_string(c.model.onnx).graph
    half = [t for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert [list(t.dims) for t in half] == [[8 * 256, 8]]  # the codebooks, once, in 16 bits
    assert not any(list(t.dims) in ([8 * 256, 8], [8, 256, 8]) for t in g.initializer if t not in half)
    eager = C.compress(tiny_bert, C.Recipe(emb_pq=8, quant="int8"))
    ids, mask = torch.tensor([[101, 3, 50, 900, 102]]), torch.ones(1, 5, dtype=torch.long)
    with torch.no_grad():
        a, b = forward(c.model, tiny_bert.adapter, ids, mask), forward(eager.model, tiny_bert.adapter, ids, mask)
    assert float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)) > 0.99  # (int8 kernels differ)


def test_a_model_onnx_that_is_not_onnx_is_refused_before_the_replay_clusters(bundled, tiny_bert, tmp_path,
                                                                              monkeypatch):
    import io
    import zipfile
    path = C.save_compressed(C.compress(tiny_bert, C.Recipe(emb_pq=8, runtime="onnxruntime")), tmp_path / "m.zip")
    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as z:
        for i in src.infolist():
            z.writestr(i.filename, b"junk" if i.filename == "model.onnx" else src.read(i))
    (tmp_path / "junk.zip").write_bytes(out.getvalue())
    monkeypatch.setattr(pq, "fit", lambda *a: pytest.fail("clustered before model.onnx was read"))
    with pytest.raises(C.CompressError, match="not a readable ONNX model"):
        C.load_compressed(tmp_path / "junk.zip")


def test_library_misuse_and_tables_beyond_fp16_are_one_line():
    table = torch.nn.Embedding(300, 16)
    for make, match in [(lambda: PQEmbedding(10, 64, 0), "pieces of"), (lambda: PQEmbedding(10, 64, 7), "pieces of"),
                        (lambda: PQEmbedding.from_embedding(table, 8.5), "pieces of"),
                        (lambda: PQEmbedding.from_embedding(torch.nn.Linear(4, 4), 8), "nn.Embedding"),
                        (lambda: C.pq_embeddings("a model", None, 8), "nn.Module")]:
        with pytest.raises(C.CompressError, match=match):
            make()
    with torch.no_grad():
        table.weight[3, 2] = 1e5  # fp16's largest is 65,504: the codebook would hold inf
    with pytest.raises(C.CompressError, match="beyond fp16's range"):
        PQEmbedding.from_embedding(table, 8)


def test_a_table_clustered_before_is_not_clustered_again_and_its_copy_is_the_caller_s(tiny_bert, monkeypatch):
    """An Apply builds its recipe healed and unhealed: the second clustering of the same table is the first's."""
    table, runs = _table(tiny_bert).clone(), []
    pq._FITS.clear()  # (not a new LRU: each registers a named cache, which README's table must name)
    fit = pq._fit
    monkeypatch.setattr(pq, "_fit", lambda w, d, int8: runs.append(d) or fit(w, d, int8))
    codes, book, _ = pq.fit(table, 8)
    codes[:] = 0  # the caller's copy: the cache keeps its own
    again, book2, _ = pq.fit(table.clone(), 8)
    assert runs == [8] and torch.equal(book, book2) and torch.equal(again, fit(table, 8, False)[0]) and again.any()
    pq.fit(table, 4)
    table[5, 0] += 1e-3  # another table (one weight moved), another clustering
    pq.fit(table, 8)
    assert runs == [8, 4, 8]


def test_cancel_ends_the_clustering_at_its_next_checkpoint(tiny_bert):
    from test_cancel import _cancel_at
    pq._FITS.clear()  # (clustered by an earlier test: not again)
    job, after = _cancel_at(lambda j: C.compress(tiny_bert, C.Recipe(emb_pq=8)), 3, where="kmeans")
    assert job.state == "cancelled" and after == 1
