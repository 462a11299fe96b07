"""Efficient attention and token pooling (compress/techniques/attention.py, pool.py): the limits where a variant is
full attention exactly, the blockwise patterns against their naive masks, causality, refusals, save / reload and
healing."""
import copy
import math
import types

import pytest
import torch

import compress as C
from conftest import as_bundled
from compress.models.adapters import ADAPTERS, forward
from compress.models.bundle import ModelBundle
from compress.techniques import attention, heal, kernel_attn, lsh_attn, pool, sparseattn

pytestmark = pytest.mark.usefixtures("one_thread")
VARIANTS = [v for v in attention.VARIANTS if v != "none"]


def _r(**kw):
    return types.SimpleNamespace(**{**C.Recipe().to_dict(), **kw})


@pytest.fixture(scope="module")
def bert16(minilm):
    """A random 2-layer BERT of 16 positions (so k = T = 16 is the whole table), MiniLM's tokenizer."""
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=minilm.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=16)
    info = {"architecture": "Bert", "model_type": "bert", "layers": 2, "heads": 4, "hidden": 32,
            "vocab_size": cfg.vocab_size, "max_positions": 16, "source": "test"}
    model = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():  # weights large enough that attention is far from uniform (variants then differ)
        for p in model.encoder.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return ModelBundle(model, "bert16", ADAPTERS["bert"], minilm.tokenizer,
                       "bert16-hash", info)


def _ids(b, n=3, t=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, min(1000, b.vocab_size), (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, t // 2:] = 0  # one padded sentence
    return ids, mask


def _run(b, model, ids, mask):
    with torch.no_grad():
        out = forward(model, b.adapter, ids, None if b.adapter.causal else mask).float()
    return out if b.adapter.causal else out * mask[..., None]  # padded positions are never read


def _variant(b, **kw):
    return attention.apply_attention(copy.deepcopy(b.model), b.adapter, _r(**kw), b.info)


@pytest.mark.parametrize("fixture", ["bert16", "tiny_gpt"])
@pytest.mark.parametrize("kw", [dict(attention="local", window=16), dict(attention="local", window=1000),
                                dict(attention="strided", stride=1),
                                dict(attention="local+strided", window=16, stride=1)], ids=str)
def test_a_pattern_covering_every_token_is_full_attention(fixture, kw, request):
    b = request.getfixturevalue(fixture)
    ids, mask = _ids(b)
    got, want = _run(b, _variant(b, **kw), ids, mask), _run(b, b.model, ids, mask)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(_run(b, _variant(b, **{**kw, "window": 2, "stride": 3}), ids, mask), want, atol=1e-3)


def test_lowrank_at_k_equal_positions_starts_as_the_identity_and_is_full_attention(bert16):
    ids, mask = _ids(bert16)
    m = _variant(bert16, attention="lowrank", attn_rank=16)
    assert torch.equal(m.encoder.layer[0].attention.self.attn_E.detach(), torch.eye(16))
    assert torch.allclose(_run(bert16, m, ids, mask), _run(bert16, bert16.model, ids, mask), atol=1e-5)
    short = _variant(bert16, attention="lowrank", attn_rank=4)  # 4 slots of 4 positions: pooled keys, not the same
    assert not torch.allclose(_run(bert16, short, ids, mask), _run(bert16, bert16.model, ids, mask), atol=1e-3)


def _naive(q, k, v, allow, scale):
    s = (q @ k.transpose(-1, -2)) * scale
    return torch.softmax(s.masked_fill(~allow, float("-inf")), -1) @ v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T, W, s", [(37, 5, 3), (8, 3, 8), (64, 16, 5)])
def test_blockwise_patterns_equal_their_masks_over_full_attention(causal, T, W, s):
    g = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, 3, T, 8, generator=g) for _ in range(3))
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    order = (j <= i) if causal else torch.ones(T, T, dtype=torch.bool)
    band = (i - j).abs() < W
    assert torch.allclose(sparseattn.local(q, k, v, None, 0.3, causal, W), _naive(q, k, v, band & order, 0.3),
                          atol=1e-5)
    dil = (i - j) % s == 0
    assert torch.allclose(sparseattn.strided(q, k, v, None, 0.3, causal, s), _naive(q, k, v, dil & order, 0.3),
                          atol=1e-5)


@pytest.mark.parametrize("features", ["elu", "favor"])
def test_causal_linear_attention_equals_the_naive_quadratic_sum(features):
    T, m = 150, 24  # more than one chunk (CHUNK = 64) and a partial last one
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, T, 8, generator=g) for _ in range(3))
    if features == "elu":
        qf, kf = kernel_attn.elu_features(q), kernel_attn.elu_features(k)
    else:
        w = kernel_attn.orthogonal_features(m, 8, seed=0)
        qf, kf = kernel_attn.favor_features(q, w, 0.35, True), kernel_attn.favor_features(k, w, 0.35, False)
    a = (qf @ kf.transpose(-1, -2)).tril()  # (1, 2, T, T) the kernel's weights on j <= i
    want = (a @ v) / a.sum(-1, keepdim=True)
    assert torch.allclose(kernel_attn.linear_mix(qf, kf, v, True), want, atol=1e-5)
    full = (qf @ kf.transpose(-1, -2))
    assert torch.allclose(kernel_attn.linear_mix(qf, kf, v, False), (full @ v) / full.sum(-1, keepdim=True), atol=1e-5)


@pytest.mark.parametrize("T, c, n", [(37, 40, 4), (16, 16, 8), (37, 5, 1)])
def test_lsh_attends_within_buckets_and_chunks_as_their_mask_says(T, c, n):
    g = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, 3, T, 8, generator=g) for _ in range(3))
    m = torch.nn.Module()
    lsh_attn.add_rotations(m, n, 8, seed=0)
    same = lsh_attn.bucket(q, m.attn_rotations)[..., :, None] == lsh_attn.bucket(k, m.attn_rotations)[..., None, :]
    if n > 1:  # one chunk holds every key: a query sees its bucket's keys (all of them if its bucket has none)
        assert 0 < same.float().mean() < 1
        allow = torch.where(same.any(-1, keepdim=True), same, True)
    else:  # one bucket: sorted by position, each chunk of c sees the chunks before and after it
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        allow = (i // c - j // c).abs() <= 1
    assert torch.allclose(lsh_attn.lsh(m, q, k, v, None, 0.3, c), _naive(q, k, v, allow, 0.3), atol=1e-5)


def test_lsh_with_one_bucket_and_one_chunk_is_full_attention(bert16):
    ids, mask = _ids(bert16)  # (one sentence padded: its padded keys are never read)
    want = _run(bert16, bert16.model, ids, mask)
    assert torch.allclose(_run(bert16, _variant(bert16, attention="lsh", buckets=1, window=16), ids, mask), want,
                          atol=1e-5)
    some = _run(bert16, _variant(bert16, attention="lsh", buckets=4, window=4), ids, mask)
    assert torch.isfinite(some).all() and not torch.allclose(some, want, atol=1e-3)


def test_favor_approaches_softmax_attention_as_features_grow():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 1, 32, 16, generator=g) * 0.5 for _ in range(3))
    want = _naive(q, k, v, torch.ones(32, 32, dtype=torch.bool), 0.25)

    def err(m):
        w = kernel_attn.orthogonal_features(m, 16, seed=3)
        qf, kf = kernel_attn.favor_features(q, w, 0.25, True), kernel_attn.favor_features(k, w, 0.25, False)
        return (kernel_attn.linear_mix(qf, kf, v, False) - want).abs().mean().item()
    assert err(1024) < err(8) / 3


@pytest.mark.parametrize("kw", [dict(attention=v) for v in VARIANTS if v not in attention.ENCODER_ONLY], ids=str)
def test_decoder_variants_never_see_a_future_token(tiny_gpt, kw):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()
    info = {"hidden": 32, "heads": 2, "max_positions": 64, "layers": 2}
    ids = torch.randint(5, 250, (2, 40), generator=torch.Generator().manual_seed(0))
    later = ids.clone()
    later[:, 25:] = (later[:, 25:] + 7) % 250
    for adapter, base in ((ADAPTERS["tinygpt"], tiny_gpt.model), (ADAPTERS["gpt2"], gpt2)):
        m = attention.apply_attention(copy.deepcopy(base), adapter, _r(**{"window": 5, "stride": 3, **kw}), info)
        with torch.no_grad():
            a, b = forward(m, adapter, ids), forward(m, adapter, later)
        assert torch.allclose(a[:, :25], b[:, :25], atol=1e-5) and not torch.allclose(a[:, 25:], b[:, 25:])


def test_pooling_by_one_is_the_identity_and_by_two_keeps_every_position(bert16):
    x = torch.randn(2, 7, 5)
    assert torch.equal(pool.pool_tokens(x, None, 1)[0], x)
    y, valid = pool.pool_tokens(x, torch.tensor([[1] * 7, [1] * 3 + [0] * 4]).bool(), 2)
    assert y.shape == (2, 4, 5) and valid.tolist() == [[True] * 4, [True, True, False, False]]
    assert torch.allclose(y[1, 1], x[1, 2])  # group (2, 3): only token 2 is real
    ids, mask = _ids(bert16)
    same = pool.apply_pool(copy.deepcopy(bert16.model), bert16.adapter, 1, 1)
    assert torch.equal(_run(bert16, same, ids, mask), _run(bert16, bert16.model, ids, mask))
    pooled = pool.apply_pool(copy.deepcopy(bert16.model), bert16.adapter, 2, 1)
    out = _run(bert16, pooled, ids, mask)
    assert out.shape == (3, 16, 32) and not torch.allclose(out, _run(bert16, bert16.model, ids, mask), atol=1e-3)
    alone = _run(bert16, pooled, ids[1:2, :8], mask[1:2, :8])  # the padded sentence without its padding
    assert torch.allclose(alone[0], out[1, :8], atol=1e-5)


@pytest.mark.parametrize("kw, words", [
    (dict(attention="local", window=0), "W must be 1 or more"),
    (dict(attention="strided", stride=0), "a stride of 0"),
    (dict(attention="lowrank", attn_rank=0), "k must be 1 or more"),
    (dict(attention="lowrank", attn_rank=17), "k from 1 to 16"),
    (dict(attention="kernel", features=0), "m must be 1 or more"),
    (dict(attention="kernel", features=17), "m from 1 to 16"),
    (dict(attention="lsh", buckets=3), "n must be 1 or even"),
    (dict(attention="lsh", buckets=18), "n from 1 to 16"),
    (dict(attention="local", fnet=True), "choose FNet or an attention variant"),
    (dict(attention="local+strided", heads=1), "keep 2 or more heads"),
    (dict(pool=2, pool_at=2), "pool after 1 to 1"),
    (dict(pool=2, pool_at=0), "pool after block 1 or later"),
    (dict(pool=2, static=True), "pooling has nothing to act on")])
def test_refusals_are_one_line_errors(bert16, kw, words):
    with pytest.raises(C.CompressError, match=words):
        C.compress(bert16, C.Recipe(**kw))


@pytest.mark.parametrize("kw, words", [(dict(attention="lowrank", attn_rank=4), "causal"), (dict(attention="lsh"), "causal"),
                                       (dict(pool=2, pool_at=1), "causal")])
def test_decoders_refuse_what_would_see_the_future(tiny_gpt, kw, words):
    with pytest.raises(C.CompressError, match=words):
        C.compress(tiny_gpt, C.Recipe(**kw))


@pytest.fixture
def bundled(bert16, tiny_gpt, monkeypatch):
    yield from as_bundled(monkeypatch, {"bert16": bert16, "tiny-gpt": tiny_gpt})


@pytest.mark.parametrize("model, kw", [("bert16", dict(attention=v, window=3, stride=2, attn_rank=6, features=8, buckets=4))
                                       for v in VARIANTS] + [("bert16", dict(pool=2, pool_at=1)),
                                                             ("tiny-gpt", dict(attention="kernel", features=8)),
                                                             ("tiny-gpt", dict(attention="local", window=3))], ids=str)
def test_zip_round_trip_replays_the_variant(bundled, tmp_path, model, kw):
    base = bundled[model]
    comp = C.compress(base, C.Recipe(**kw))
    for m in comp.model.modules():  # learned or drawn tensors must come from the file, not be drawn again
        for name in ("attn_E", "attn_features", "attn_rotations"):
            if hasattr(m, name):
                getattr(m, name).data.mul_(1.5)
    back = C.load_compressed(C.save_compressed(comp, tmp_path / "m.zip"))
    assert back.recipe == comp.recipe
    ids, mask = _ids(base)
    assert torch.allclose(_run(base, back.model, ids, mask), _run(base, comp.model, ids, mask), atol=1e-6)


def test_healing_trains_linformers_projections(bert16):
    student = _variant(bert16, attention="lowrank", attn_rank=4)
    names = [n for n, _ in heal.trainable(student, bert16.adapter)]
    assert any(n.endswith("attn_E") for n in names) and any(n.endswith("attn_F") for n in names)
    before = student.encoder.layer[0].attention.self.attn_E.detach().clone()
    texts = [f"the {w} sat on a mat number {i}" for i, w in enumerate(["cat", "dog", "bird", "fox"] * 10)]
    got = heal.heal(student, bert16, texts, steps=8, lr=3e-3, batch=8, eval_every=4)
    losses = [h["loss"] for h in got.history if h["loss"] is not None]
    assert losses and all(math.isfinite(x) for x in losses)
    assert got.best_step > 0 and got.dev_after > got.dev_before  # it helped on the dev split
    assert not torch.equal(student.encoder.layer[0].attention.self.attn_E.detach(), before)


def test_healing_runs_through_token_pooling(bert16):
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)  # 3 blocks: the middle one's hidden state is pooled (the last one's is repeated back)
    cfg = BertConfig(vocab_size=bert16.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=16)
    teacher = ModelBundle(BertModel(cfg, add_pooling_layer=False).eval(), "bert3", bert16.adapter, bert16.tokenizer,
                          "bert3-hash", {**bert16.info, "layers": 3})
    student = pool.apply_pool(copy.deepcopy(teacher.model), teacher.adapter, 2, 1)
    texts = [f"the {w} sat on a mat number {i}" for i, w in enumerate(["cat", "dog", "bird", "fox"] * 10)]
    got = heal.heal(student, teacher, texts, steps=4, lr=3e-3, batch=8, eval_every=2)
    losses = [h["loss"] for h in got.history if h["loss"] is not None]
    assert got.steps_run == 4 and losses and all(math.isfinite(x) for x in losses)
