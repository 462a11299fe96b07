"""Head pruning and FFN narrowing on every family: numerical checks (identity, silenced heads, exact param counts)."""
import copy

import pytest
import torch

import compress as C
from compress.models.adapters import ADAPTERS, conv1d_to_linear, forward
from compress.techniques.heads import (ffn_scores, head_dim, head_mask, head_scores, heads_per_layer, narrow_ffn,
                            prune_heads)
from compress.models.tinygpt import GPTConfig, TinyGPT
from builders import build_family, perturb

pytestmark = pytest.mark.usefixtures("one_thread")

FAMS = ["bert", "distilbert", "roberta", "gpt2", "tinygpt"]
C_, H, HD = 32, 4, 8  # every tiny model: hidden 32, 4 heads of 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{family: random tiny model in eval mode}; all have 2 blocks of 4 heads, hidden 32."""
    tmp = tmp_path_factory.mktemp("heads")
    out = {fam: build_family(fam, tmp / fam).eval() for fam in FAMS[:4]}
    conv1d_to_linear(out["gpt2"])
    torch.manual_seed(0)
    out["tinygpt"] = perturb(TinyGPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=16)), 0.05).eval()
    return out


def _batch(n=3, t=11, seed=1):
    ids = torch.randint(10, 256, (n, t), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # one right-padded row
    return ids, mask


@torch.no_grad()
def _out(model, fam):
    return forward(model, ADAPTERS[fam], *_batch())


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("fam", FAMS)
def test_keeping_everything_is_exact(fam, models):
    m, a = copy.deepcopy(models[fam]), ADAPTERS[fam]
    prune_heads(m, a, H)
    narrow_ffn(m, a, 1.0)
    assert torch.equal(_out(m, fam), _out(models[fam], fam))
    assert heads_per_layer(m, a) == [H, H] and _params(m) == _params(models[fam])


def _silence(block, a, h):
    """Zero the input columns of o that head h feeds: the head no longer contributes."""
    with torch.no_grad():
        block.get_submodule(a.o).weight[:, h * HD:(h + 1) * HD] = 0


@pytest.mark.parametrize("fam", FAMS)
def test_pruning_silenced_heads_changes_nothing(fam, models):
    m, a = copy.deepcopy(models[fam]), ADAPTERS[fam]
    for block, h in zip(a.block_list(m), (2, 0)):
        _silence(block, a, h)
    ref = _out(m, fam)
    assert [int(s.argmin()) for s in head_scores(m, a)] == [2, 0]  # a silent head scores exactly 0 (OV norm)
    prune_heads(m, a, H - 1)  # default weight scores pick the silent heads
    assert heads_per_layer(m, a) == [H - 1, H - 1]
    torch.testing.assert_close(_out(m, fam), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fam", FAMS)
def test_v_bias_of_a_removed_head_is_folded_into_o(fam, models):
    """A head with zero v weights still writes W_o,h b_v,h to every token; pruning it keeps that constant."""
    m, a = copy.deepcopy(models[fam]), ADAPTERS[fam]
    block = a.block_list(m)[1]
    v, rows = a.qkv(block)[2]
    with torch.no_grad():
        v.weight[rows][HD:2 * HD] = 0  # head 1
    assert v.bias[rows][HD:2 * HD].abs().sum() > 0
    ref = _out(m, fam)
    prune_heads(m, a, [H, H - 1], scores=[torch.ones(H), torch.tensor([1.0, 0.0, 1.0, 1.0])])
    torch.testing.assert_close(_out(m, fam), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fam", FAMS)
def test_shapes_and_exact_param_counts(fam, models):
    orig, a = models[fam], ADAPTERS[fam]
    m = copy.deepcopy(orig)
    d_ff = a.block_list(orig)[0].get_submodule(a.ffn_in).out_features
    prune_heads(m, a, [1, 3])
    narrow_ffn(m, a, 0.5)
    head_params = 3 * (HD * C_ + HD) + HD * C_     # q, k, v rows (+ bias) and o columns of one head
    ffn_removed = 2 * (d_ff - round(0.5 * d_ff))   # 2 blocks
    assert _params(m) == _params(orig) - 4 * head_params - ffn_removed * (2 * C_ + 1)
    assert heads_per_layer(m, a) == [1, 3] and head_dim(m, a) == HD
    for block, k in zip(a.block_list(m), (1, 3)):
        q = block.get_submodule(a.q)
        assert q.weight.shape == ((3 if a.fused_qkv else 1) * k * HD, C_)
        assert block.get_submodule(a.o).weight.shape == (C_, k * HD)
        assert block.get_submodule(a.ffn_in).weight.shape == (d_ff // 2, C_)
        assert block.get_submodule(a.ffn_out).weight.shape == (C_, d_ff // 2)
        attn = block.get_submodule(a.q.rpartition(".")[0])
        assert getattr(attn, {"bert": "num_attention_heads", "roberta": "num_attention_heads", "distilbert": "n_heads",
                              "gpt2": "num_heads", "tinygpt": "head_dim"}[fam]) == (HD if fam == "tinygpt" else k)
        if fam == "gpt2":
            assert attn.split_size == k * HD
    out = _out(m, fam)
    assert out.shape == _out(orig, fam).shape and torch.isfinite(out).all()
    prune_heads(m, a, [1, 2])  # pruning again reads the current head counts off the shapes
    assert heads_per_layer(m, a) == [1, 2]
    assert _params(m) == _params(orig) - 5 * head_params - ffn_removed * (2 * C_ + 1)
    assert torch.isfinite(_out(m, fam)).all()


@pytest.mark.parametrize("fam", FAMS)
def test_head_mask_matches_silencing(fam, models):
    m, a = models[fam], ADAPTERS[fam]
    with head_mask(m, a, [torch.ones(H), torch.ones(H)]):
        assert torch.equal(_out(m, fam), _out(copy.deepcopy(m), fam))
    with head_mask(m, a, [torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.ones(H)]):
        masked = _out(m, fam)
    silenced = copy.deepcopy(m)
    _silence(a.block_list(silenced)[0], a, 2)
    torch.testing.assert_close(masked, _out(silenced, fam), rtol=0, atol=1e-5)
    assert torch.equal(_out(m, fam), _out(copy.deepcopy(m), fam))  # hooks are gone


@pytest.mark.parametrize("fam", FAMS)
def test_gradient_scores(fam, models):
    m, a = copy.deepcopy(models[fam]), ADAPTERS[fam]
    _silence(a.block_list(m)[1], a, 3)
    batches = [_batch(4, 9, seed=s) for s in (2, 3)]
    g = head_scores(m, a, "gradient", batches)
    w = head_scores(m, a, "weight")
    assert len(g) == 2 and all(s.shape == (H,) and torch.isfinite(s).all() for s in g)
    assert all(abs(float(s.norm()) - 1) < 1e-5 for s in g)  # L2-normalized per layer (Michel et al.)
    assert float(g[1][3]) == 0  # a silenced head cannot move the loss
    assert not torch.allclose(g[0], w[0] / w[0].norm())
    assert all(p.grad is None for p in m.parameters()) and not m.training
    prune_heads(m, a, 2, scores=g)
    assert heads_per_layer(m, a) == [2, 2] and torch.isfinite(_out(m, fam)).all()


def test_ffn_narrowing_keeps_the_strongest_neurons(models):
    m, a = copy.deepcopy(models["bert"]), ADAPTERS["bert"]
    s = ffn_scores(m, a)
    assert [x.shape for x in s] == [(64,), (64,)]
    keep = s[0].topk(16).indices.sort().values
    w = a.block_list(m)[0].get_submodule(a.ffn_in).weight[keep].clone()
    narrow_ffn(m, a, 0.25)
    assert torch.equal(a.block_list(m)[0].get_submodule(a.ffn_in).weight, w)
    narrow_ffn(m, a, 0.01)  # at least one neuron stays
    assert a.block_list(m)[0].get_submodule(a.ffn_in).out_features == 1


@pytest.mark.parametrize("bad", [0, H + 1, -1, [2], [1, 2, 3], [2, 0], 2.5])
def test_bad_head_counts_raise(bad, models):
    with pytest.raises(C.CompressError):
        prune_heads(copy.deepcopy(models["bert"]), ADAPTERS["bert"], bad)


def test_other_errors(models):
    m, a = copy.deepcopy(models["bert"]), ADAPTERS["bert"]
    for bad in (0, 0.0, 1.5, -0.5, float("nan")):
        with pytest.raises(C.CompressError, match="fraction"):
            narrow_ffn(m, a, bad)
    with pytest.raises(C.CompressError, match="method"):
        head_scores(m, a, "magic")
    with pytest.raises(C.CompressError, match="batches"):
        head_scores(m, a, "gradient")
    with pytest.raises(C.CompressError, match="at least 2"):
        head_scores(m, a, "gradient", [_batch(1)])
    with pytest.raises(C.CompressError, match="score"):
        prune_heads(m, a, 2, scores=[torch.ones(H)])
    assert heads_per_layer(m, a) == [H, H]  # nothing was touched
